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
    /// leaves it). `gradScale` folds gradient clipping into the update. Returns whether
    /// every updated value is finite: the divergence check, made in the same pass.
    @discardableResult
    public func step(values: FPtr, grads: UnsafePointer<Float>, lr: Float, gradScale: Float = 1) -> Bool {
        Profile.measure(.optimizer) {
            t += 1
            let b1 = config.beta1, b2 = config.beta2, eps = config.eps
            let bc1 = 1 - Foundation.pow(b1, Float(t)), bc2 = 1 - Foundation.pow(b2, Float(t))
            let hyper = Hyper(b1: b1, b2: b2, eps: eps, stepSize: lr / bc1, invSqrtBc2: 1 / bc2.squareRoot(), gradScale: gradScale)
            if config.weightDecay > 0 {
                let f = 1 - lr * config.weightDecay
                for span in decaySpans { for i in span { values[i] *= f } }
            }
            let mp = m.ptr, vp = v.ptr, w = values + range.lowerBound
            // Each element on its own: split over the rank's cores, same result either way.
            // One flag per part: parts hold at least `grain` elements, so their first elements
            // divided by it are distinct slots.
            let grain = 1 << 16
            var finite = [Bool](repeating: true, count: range.count / grain + 1)
            finite.withUnsafeMutableBufferPointer { ok in
                Parallel.chunks(range.count, grain: grain) { part in
                    ok[part.lowerBound / grain] = Self.update(w, mp, vp, grads, part, hyper)
                }
            }
            return !finite.contains(false)
        }
    }

    struct Hyper { let b1, b2, eps, stepSize, invSqrtBc2, gradScale: Float }

    /// The update of elements `part`, 8 at a time: torch's formula, each operation in the same
    /// order as the scalar tail's, so every element gets the same bits either way (sqrt and
    /// division are correctly rounded in vectors too). The scalar loop did not vectorise (the
    /// pointers may alias) and its division per element made it compute-bound. The square root
    /// still runs lane by lane: Swift's sqrt keeps C's errno check on Linux, which LLVM does not
    /// turn into a vector instruction. Not inlined: 8-lane code inlined into a closure has
    /// compiled as 4-lane halves (docs/performance.md).
    @inline(never)
    static func update(_ w: FPtr, _ mp: FPtr, _ vp: FPtr, _ grads: UnsafePointer<Float>, _ part: Range<Int>, _ h: Hyper) -> Bool {
        // x − x is 0 for a finite x and NaN otherwise: one NaN lane anywhere marks the part.
        var poison = SIMD8<Float>(repeating: 0)
        var j = part.lowerBound
        while j + 8 <= part.upperBound {
            let g = load8(grads, j) * h.gradScale
            let mi = h.b1 * load8(mp, j) + (1 - h.b1) * g
            let vi = h.b2 * load8(vp, j) + (1 - h.b2) * g * g
            store8(mi, mp, j)
            store8(vi, vp, j)
            let wi = load8(w, j) - h.stepSize * mi / (vi.squareRoot() * h.invSqrtBc2 + h.eps)
            store8(wi, w, j)
            poison += wi - wi
            j += 8
        }
        var finite = !poison.sum().isNaN
        while j < part.upperBound {
            let g = grads[j] * h.gradScale
            let mi = h.b1 * mp[j] + (1 - h.b1) * g
            let vi = h.b2 * vp[j] + (1 - h.b2) * g * g
            mp[j] = mi
            vp[j] = vi
            w[j] -= h.stepSize * mi / (vi.squareRoot() * h.invSqrtBc2 + h.eps)
            finite = finite && w[j].isFinite
            j += 1
        }
        return finite
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
            for b in range { parts[b] = Double(blockSquares(g + b * 4096, count: min(4096, count - b * 4096))) }
        }
        var s: Double = 0
        for b in 0..<blocks { s += parts[b] }
        return s
    }

    /// Σ g² of one block in 8 running sums (lane k adds elements k, k + 8, ...: a fixed order),
    /// added pairwise at the end. One running sum was a chain of dependent adds, an element
    /// per add's latency, over every trainable weight of the rank each step.
    @inline(never)
    static func blockSquares(_ g: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var j = 0
        while j + 8 <= count {
            let v = load8(g, j)
            acc += v * v
            j += 8
        }
        var s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
        while j < count { s += g[j] * g[j]; j += 1 }
        return s
    }

    /// The factor that brings a gradient of norm `norm` to at most `maxNorm`.
    public static func scale(norm: Double, maxNorm: Float) -> Float {
        guard maxNorm > 0, norm > Double(maxNorm) else { return 1 }
        return Float(Double(maxNorm) / (norm + 1e-6))
    }
}
