import Foundation

/// RMSNorm as in Llama: y = w ⊙ x / sqrt(mean(x²) + eps). Rows split over the rank's cores.
/// x (and dx) may hold its rows `rowsPerLine` at a time in lines `ld` apart: Qwen3's per-head
/// norms read q and k where they are, in their columns of the fused q, k, v output.
public enum RMSNorm {
    /// Where row i of x starts.
    @inline(__always) static func row(_ i: Int, dim: Int, rowsPerLine: Int, ld: Int?) -> Int {
        guard let ld else { return i * dim }
        return (i / rowsPerLine) * ld + (i % rowsPerLine) * dim
    }

    /// out[n, C], rstd[n] (saved for backward) from x[n, C], w[C]
    public static func forward(out: FPtr, rstd: FPtr, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                               n: Int, dim: Int, eps: Float, rowsPerLine: Int = 1, ld: Int? = nil) {
        Profile.measure(.elementwise) {
            Parallel.chunks(n, grain: 16) { rows in
                for i in rows {
                    let xi = x + row(i, dim: dim, rowsPerLine: rowsPerLine, ld: ld), oi = out + i * dim
                    var ss: Float = 0
                    for c in 0..<dim { ss += xi[c] * xi[c] }
                    let r = 1 / (ss / Float(dim) + eps).squareRoot()
                    rstd[i] = r
                    for c in 0..<dim { oi[c] = xi[c] * r * w[c] }
                }
            }
        }
    }

    /// dx[n, C] += ∂L/∂x;  dw[C] += Σₙ dout ⊙ x · rstd (when w trains)
    /// With g = w ⊙ dout: dx = rstd · g − x · rstd³ · (g · x) / C.
    /// dx splits over rows; dw, a sum over rows, splits over columns.
    public static func backward(dx: FPtr, dw: FPtr?, dout: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                w: UnsafePointer<Float>, rstd: UnsafePointer<Float>, n: Int, dim: Int,
                                rowsPerLine: Int = 1, ld: Int? = nil) {
        Profile.measure(.elementwise) {
            Parallel.chunks(n, grain: 16) { rows in
                for i in rows {
                    let at = row(i, dim: dim, rowsPerLine: rowsPerLine, ld: ld)
                    let xi = x + at, gi = dout + i * dim, dxi = dx + at
                    let r = rstd[i]
                    var dot: Float = 0
                    for c in 0..<dim { dot += w[c] * gi[c] * xi[c] }
                    let k = r * r * r * dot / Float(dim)
                    for c in 0..<dim { dxi[c] += r * w[c] * gi[c] - k * xi[c] }
                }
            }
            if let dw {
                Parallel.chunks(dim, grain: 64) { cols in
                    for i in 0..<n {
                        let xi = x + row(i, dim: dim, rowsPerLine: rowsPerLine, ld: ld), gi = dout + i * dim, r = rstd[i]
                        for c in cols { dw[c] += gi[c] * xi[c] * r }
                    }
                }
            }
        }
    }
}
