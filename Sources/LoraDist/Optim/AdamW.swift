import Foundation

/// AdamW (decoupled weight decay, as torch.optim.AdamW) over a contiguous range
/// of the trainable arena: the range this rank owns.
public struct AdamWConfig: Codable, Equatable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var eps: Float = 1e-8
    public var weightDecay: Float = 0.0
    public var clipNorm: Float = 1.0      // global gradient norm; 0 turns clipping off
    public init() {}
}

public final class AdamW {
    public let config: AdamWConfig
    public let range: Range<Int>
    public let m: FloatBuffer
    public let v: FloatBuffer
    public private(set) var t: Int = 0
    /// Per element: 1 where weight decay applies (not on norms). Spans, not a mask, to stay small.
    let decaySpans: [Range<Int>]

    public init(config: AdamWConfig, store: ParameterStore, range: Range<Int>? = nil) {
        self.config = config
        let r = range ?? 0..<store.trainableCount
        self.range = r
        m = FloatBuffer(r.count)
        v = FloatBuffer(r.count)
        decaySpans = store.trainable.filter(\.spec.decay).compactMap {
            let span = ($0.offset..<($0.offset + $0.count)).clamped(to: r)
            return span.isEmpty ? nil : span
        }
    }

    /// One update of values[range] at learning rate lr; `grads` points at the
    /// gradient of range.lowerBound (the owned shard's gradient, as the exchange
    /// leaves it). `gradScale` folds gradient clipping into the update.
    public func step(values: FPtr, grads: UnsafePointer<Float>, lr: Float, gradScale: Float = 1) {
        Profile.measure(.optimizer) {
            t += 1
            let b1 = config.beta1, b2 = config.beta2, eps = config.eps
            let bc1 = 1 - Foundation.pow(b1, Float(t)), bc2 = 1 - Foundation.pow(b2, Float(t))
            let stepSize = lr / bc1, invSqrtBc2 = 1 / bc2.squareRoot()
            if config.weightDecay > 0 {
                let f = 1 - lr * config.weightDecay
                for span in decaySpans { for i in span { values[i] *= f } }
            }
            let lo = range.lowerBound
            let mp = m.ptr, vp = v.ptr
            // Each element on its own: split over the rank's cores, same result either way.
            Parallel.chunks(range.count, grain: 1 << 16) { part in
                for j in part {
                    let g = grads[j] * gradScale
                    let mi = b1 * mp[j] + (1 - b1) * g
                    let vi = b2 * vp[j] + (1 - b2) * g * g
                    mp[j] = mi
                    vp[j] = vi
                    values[lo + j] -= stepSize * mi / (vi.squareRoot() * invSqrtBc2 + eps)
                }
            }
        }
    }

    /// Restores the step counter (checkpoint resume).
    public func setStep(_ step: Int) { t = step }
}

/// Linear warmup from 0 to lr, then cosine decay to minLR at the last step.
public struct LRSchedule: Codable, Equatable {
    public var lr: Float
    public var warmup: Int
    public var total: Int
    public var minLR: Float

    public init(lr: Float, warmup: Int, total: Int, minLR: Float) {
        self.lr = lr; self.warmup = warmup; self.total = total; self.minLR = minLR
    }

    /// Learning rate of optimizer step `step` (1-based).
    public func at(_ step: Int) -> Float {
        if step <= warmup { return lr * Float(step) / Float(max(warmup, 1)) }
        let span = max(total - warmup, 1)
        let progress = min(Float(step - warmup) / Float(span), 1)
        return minLR + 0.5 * (lr - minLR) * (1 + Foundation.cos(Float.pi * progress))
    }
}

public enum GradClip {
    /// Σ g² over a range, in double so large models don't lose precision.
    /// Blocks of 4096 are summed in fp32 on any core, then added in block order: the
    /// same value whatever the number of workers.
    public static func sumSquares(_ g: UnsafePointer<Float>, count: Int) -> Double {
        let blocks = (count + 4095) / 4096
        guard blocks > 0 else { return 0 }
        let parts = UnsafeMutablePointer<Double>.allocate(capacity: blocks)
        defer { parts.deallocate() }
        Parallel.chunks(blocks, grain: 64) { range in
            for b in range {
                var part: Float = 0
                for j in (b * 4096)..<min(b * 4096 + 4096, count) { part += g[j] * g[j] }
                parts[b] = Double(part)
            }
        }
        var s: Double = 0
        for b in 0..<blocks { s += parts[b] }
        return s
    }

    /// The factor that brings a gradient of norm `norm` to at most `maxNorm`.
    public static func scale(norm: Double, maxNorm: Float) -> Float {
        guard maxNorm > 0, norm > Double(maxNorm) else { return 1 }
        return Float(Double(maxNorm) / (norm + 1e-6))
    }
}
