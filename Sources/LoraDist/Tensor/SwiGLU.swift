import Foundation

/// The Llama MLP's gate: act = silu(gate) ⊙ up, silu(g) = g · σ(g).
/// fastExp keeps the loops free of calls so they vectorise; the elements split over the rank's cores.
public enum SwiGLU {
    public static func forward(act: FPtr, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        Profile.measure(.elementwise) {
            Parallel.chunks(count, grain: 4096) { r in
                for i in r {
                    let g = gate[i]
                    act[i] = g / (1 + fastExp(-g)) * up[i]
                }
            }
        }
    }

    /// dgate = dact ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))),  dup = dact ⊙ silu(g)
    public static func backward(dgate: FPtr, dup: FPtr, dact: UnsafePointer<Float>,
                                gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        Profile.measure(.elementwise) {
            Parallel.chunks(count, grain: 4096) { r in
                for i in r {
                    let g = gate[i]
                    let s = 1 / (1 + fastExp(-g))
                    let d = dact[i]
                    dgate[i] = d * up[i] * s * (1 + g * (1 - s))
                    dup[i] = d * g * s
                }
            }
        }
    }
}
