import Foundation

/// The Llama MLP's gate: act = silu(gate) ⊙ up, silu(g) = g · σ(g).
/// fastExp keeps the loops free of calls so they vectorise; the elements split over the rank's cores.
/// act [rows, dim]; gate and up (and their gradients) may have rows `ld` apart: column blocks
/// of the fused gate, up output.
public enum SwiGLU {
    public static func forward(act: FPtr, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        forward(act: act, gate: gate, up: up, rows: 1, dim: count, ld: count)
    }

    public static func forward(act: FPtr, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, rows: Int, dim: Int, ld: Int) {
        Profile.measure(.elementwise) {
            segments(rows: rows, dim: dim, ld: ld) { a, o, n in
                let act = act + a, gate = gate + o, up = up + o
                for i in 0..<n {
                    let g = gate[i]
                    act[i] = g / (1 + fastExp(-g)) * up[i]
                }
            }
        }
    }

    public static func backward(dgate: FPtr, dup: FPtr, dact: UnsafePointer<Float>,
                                gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        backward(dgate: dgate, dup: dup, dact: dact, gate: gate, up: up, rows: 1, dim: count, ld: count)
    }

    /// dgate = dact ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))),  dup = dact ⊙ silu(g)
    public static func backward(dgate: FPtr, dup: FPtr, dact: UnsafePointer<Float>,
                                gate: UnsafePointer<Float>, up: UnsafePointer<Float>, rows: Int, dim: Int, ld: Int) {
        Profile.measure(.elementwise) {
            segments(rows: rows, dim: dim, ld: ld) { a, o, n in
                let dact = dact + a, gate = gate + o, up = up + o, dgate = dgate + o, dup = dup + o
                for i in 0..<n {
                    let g = gate[i]
                    let s = 1 / (1 + fastExp(-g))
                    let d = dact[i]
                    dgate[i] = d * up[i] * s * (1 + g * (1 - s))
                    dup[i] = d * g * s
                }
            }
        }
    }

    /// The rows·dim elements split over the rank's cores as one range, each part walked in
    /// contiguous runs: body(offset in act, offset in gate/up, count).
    @inline(__always)
    static func segments(rows: Int, dim: Int, ld: Int, _ body: (Int, Int, Int) -> Void) {
        Parallel.chunks(rows * dim, grain: 4096) { part in
            var e = part.lowerBound
            while e < part.upperBound {
                let r = e / dim, c = e % dim, n = min(dim - c, part.upperBound - e)
                body(e, r * ld + c, n)
                e += n
            }
        }
    }
}
