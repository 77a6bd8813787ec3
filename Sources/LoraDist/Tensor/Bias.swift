import Foundation

/// A projection's bias: y[n, C] += b[C]. Qwen2's q, k, v; Llama's when attention_bias / mlp_bias.
/// Rows of y `ld` apart (default C): a column block of a fused projection's output.
public enum Bias {
    public static func forward(y: FPtr, b: UnsafePointer<Float>, n: Int, dim: Int, ld: Int? = nil) {
        let ld = ld ?? dim
        Profile.measure(.elementwise) {
            Parallel.chunks(n, grain: 16) { rows in
                for i in rows {
                    let yi = y + i * ld
                    for c in 0..<dim { yi[c] += b[c] }
                }
            }
        }
    }

    /// db[C] += Σₙ dy[n, C]; a sum over rows, so it splits over columns.
    public static func backward(db: FPtr, dy: UnsafePointer<Float>, n: Int, dim: Int, ld: Int? = nil) {
        let ld = ld ?? dim
        Profile.measure(.elementwise) {
            Parallel.chunks(dim, grain: 64) { cols in
                for i in 0..<n {
                    let gi = dy + i * ld
                    for c in cols { db[c] += gi[c] }
                }
            }
        }
    }
}
