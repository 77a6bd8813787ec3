import Foundation

/// Rotary position embedding in Hugging Face's rotate-half layout: within each
/// head of size D, element d pairs with d + D/2 and both turn by pos · f[d], with
/// f[d] = θ^(−2d/D) unless a rope scaling changes it (RopeScaling.inverseFrequencies).
public final class RoPE {
    public let headDim: Int
    public let maxPositions: Int
    let cos: FloatBuffer   // [maxPositions, D/2]
    let sin: FloatBuffer

    public convenience init(headDim: Int, maxPositions: Int, theta: Double) {
        self.init(headDim: headDim, maxPositions: maxPositions,
                  inverseFrequencies: RopeScaling.inverseFrequencies(headDim: headDim, theta: theta, scaling: nil))
    }

    public init(headDim: Int, maxPositions: Int, inverseFrequencies invFreq: [Float]) {
        precondition(invFreq.count == headDim / 2)
        self.headDim = headDim
        self.maxPositions = maxPositions
        let half = headDim / 2
        cos = FloatBuffer(maxPositions * half)
        sin = FloatBuffer(maxPositions * half)
        for p in 0..<maxPositions {
            for d in 0..<half {
                // Hugging Face computes the angle in fp32; match it.
                let angle = Float(p) * invFreq[d]
                cos[p * half + d] = Foundation.cos(angle)
                sin[p * half + d] = Foundation.sin(angle)
            }
        }
    }

    /// Rotates x[B·T, heads·D] in place (rows `ld` apart, default heads·D); row r has position r mod T.
    public func forward(_ x: FPtr, rows: Int, seqLen: Int, heads: Int, ld: Int? = nil) {
        Profile.measure(.elementwise) {
            apply(x, rows: rows, seqLen: seqLen, heads: heads, ld: ld ?? heads * headDim, sign: 1)
        }
    }

    /// The rotation is orthogonal, so the backward turns the gradient back by −angle.
    public func backward(_ dx: FPtr, rows: Int, seqLen: Int, heads: Int, ld: Int? = nil) {
        Profile.measure(.elementwise) {
            apply(dx, rows: rows, seqLen: seqLen, heads: heads, ld: ld ?? heads * headDim, sign: -1)
        }
    }

    /// Rotates x[rows, heads·D] in place; row r has position first + r (decoding with a cache).
    public func forward(_ x: FPtr, rows: Int, firstPosition first: Int, heads: Int) {
        precondition(first + rows <= maxPositions)
        Profile.measure(.elementwise) {
            apply(x, rows: rows, seqLen: Int.max, heads: heads, ld: heads * headDim, sign: 1, first: first)
        }
    }

    private func apply(_ x: FPtr, rows: Int, seqLen: Int, heads: Int, ld: Int, sign: Float, first: Int = 0) {
        let half = headDim / 2
        Parallel.chunks(rows, grain: 16) { part in
            for r in part {
                let pos = first + r % seqLen
                let c = cos.ptr + pos * half, s = sin.ptr + pos * half
                for h in 0..<heads {
                    let v = x + r * ld + h * headDim
                    for d in 0..<half {
                        let x1 = v[d], x2 = v[d + half], sn = sign * s[d]
                        v[d] = x1 * c[d] - x2 * sn
                        v[d + half] = x2 * c[d] + x1 * sn
                    }
                }
            }
        }
    }
}
