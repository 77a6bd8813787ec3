import Foundation

/// Causal scaled-dot-product attention with grouped-query heads, optionally within a
/// sliding window (Mistral: query i sees keys i − window + 1 ... i).
///
/// Layouts (row r = b·T + t):  q, out [B·T, H·D];  k, v [B·T, KV·D];  probs [B, H, T, T].
/// Query head h reads key/value head h / (H / KV). Rows are processed in blocks so
/// a block of queries multiplies only the keys it can see: the upper triangle of
/// the score matrix is never computed.
public enum Attention {
    static let block = 64

    public struct Shape {
        public var batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int
        public var window: Int?
        public init(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, window: Int? = nil) {
            self.batch = batch; self.seqLen = seqLen; self.heads = heads
            self.kvHeads = kvHeads; self.headDim = headDim; self.window = window
        }
        /// The first key query i sees.
        @inline(__always) func firstKey(_ i: Int) -> Int { window.map { Swift.max(0, i - $0 + 1) } ?? 0 }
        var qStride: Int { heads * headDim }
        var kvStride: Int { kvHeads * headDim }
        var scale: Float { 1 / Float(headDim).squareRoot() }
    }

    public static func forward(out: FPtr, probs: FPtr, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, _ s: Shape) {
        Profile.measure(.attention) {
            let T = s.seqLen, D = s.headDim, group = s.heads / s.kvHeads
            for b in 0..<s.batch {
                for h in 0..<s.heads {
                    let qh = q + b * T * s.qStride + h * D
                    let kg = k + b * T * s.kvStride + (h / group) * D
                    let vg = v + b * T * s.kvStride + (h / group) * D
                    let oh = out + b * T * s.qStride + h * D
                    let p = probs + (b * s.heads + h) * T * T
                    var i0 = 0
                    while i0 < T {
                        let i1 = min(i0 + block, T), rows = i1 - i0
                        // scores[i0..<i1, 0..<i1] = scale · Q Kᵀ
                        sgemm(transB: true, m: rows, n: i1, k: D, alpha: s.scale, a: qh + i0 * s.qStride,
                              lda: s.qStride, b: kg, ldb: s.kvStride, c: p + i0 * T, ldc: T)
                        for i in i0..<i1 { softmaxCausalRow(p + i * T, first: s.firstKey(i), visible: i + 1, width: i1) }
                        // out[i0..<i1] = P V
                        sgemm(m: rows, n: D, k: i1, a: p + i0 * T, lda: T, b: vg, ldb: s.kvStride,
                              c: oh + i0 * s.qStride, ldc: s.qStride)
                        i0 = i1
                    }
                }
            }
        }
    }

    @inline(__always)
    static func softmaxCausalRow(_ row: FPtr, first: Int = 0, visible: Int, width: Int) {
        // Keys outside [first, visible) get probability 0, and so (dS = P ⊙ ...) no gradient.
        for j in 0..<first { row[j] = 0 }
        let seen = row + first, count = visible - first
        var mx = -Float.infinity
        for j in 0..<count { mx = max(mx, seen[j]) }
        let inv = 1 / expShifted(seen, seen, count, shift: mx)
        for j in 0..<count { seen[j] *= inv }
        for j in visible..<width { row[j] = 0 }
    }

    /// dq = ∂L/∂q (overwritten); dk, dv (overwritten). scratch holds T·T floats.
    ///   dP = dO Vᵀ,  dS = P ⊙ (dP − rowsum(dP ⊙ P)),  dQ = scale · dS K,
    ///   dK += scale · dSᵀ Q,  dV += Pᵀ dO
    public static func backward(dq: FPtr, dk: FPtr, dv: FPtr, dout: UnsafePointer<Float>,
                                probs: UnsafePointer<Float>, q: UnsafePointer<Float>,
                                k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                scratch: FPtr, _ s: Shape) {
        Profile.measure(.attention) {
            let T = s.seqLen, D = s.headDim, group = s.heads / s.kvHeads
            dk.update(repeating: 0, count: s.batch * T * s.kvStride)
            dv.update(repeating: 0, count: s.batch * T * s.kvStride)
            for b in 0..<s.batch {
                for h in 0..<s.heads {
                    let off = b * T * s.qStride + h * D
                    let kvOff = b * T * s.kvStride + (h / group) * D
                    let p = probs + (b * s.heads + h) * T * T
                    var i0 = 0
                    while i0 < T {
                        let i1 = min(i0 + block, T), rows = i1 - i0
                        let dp = scratch + i0 * T
                        // dP = dO Vᵀ over the visible keys
                        sgemm(transB: true, m: rows, n: i1, k: D, a: dout + off + i0 * s.qStride, lda: s.qStride,
                              b: v + kvOff, ldb: s.kvStride, c: dp, ldc: T)
                        // dV[0..<i1] += Pᵀ dO
                        sgemm(transA: true, m: i1, n: D, k: rows, a: p + i0 * T, lda: T,
                              b: dout + off + i0 * s.qStride, ldb: s.qStride, beta: 1, c: dv + kvOff, ldc: s.kvStride)
                        for i in i0..<i1 {
                            let pr = p + i * T, dr = dp + (i - i0) * T
                            var dot: Float = 0
                            for j in 0...i { dot += pr[j] * dr[j] }
                            for j in 0...i { dr[j] = pr[j] * (dr[j] - dot) }
                            for j in (i + 1)..<i1 { dr[j] = 0 }
                        }
                        // dQ = scale · dS K ;  dK += scale · dSᵀ Q
                        sgemm(m: rows, n: D, k: i1, alpha: s.scale, a: dp, lda: T, b: k + kvOff, ldb: s.kvStride,
                              c: dq + off + i0 * s.qStride, ldc: s.qStride)
                        sgemm(transA: true, m: i1, n: D, k: rows, alpha: s.scale, a: dp, lda: T,
                              b: q + off + i0 * s.qStride, ldb: s.qStride, beta: 1, c: dk + kvOff, ldc: s.kvStride)
                        i0 = i1
                    }
                }
            }
        }
    }
}
