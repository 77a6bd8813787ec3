import Foundation

/// Causal scaled-dot-product attention with grouped-query heads, optionally within a
/// sliding window (Mistral: query i sees keys i − window + 1 ... i).
///
/// Layouts (row r = b·T + t):  q, out [B·T, H·D];  k, v [B·T, KV·D];  lse [B, H, T].
/// Query head h reads key/value head h / (H / KV). Queries are processed in blocks of
/// `block` rows, each against only the keys it can see (the upper triangle of the score
/// matrix is never computed), in a scratch of block × T scores. No T × T matrix is kept:
/// the forward saves each row's log-sum-exp, and the backward recomputes the block's
/// probabilities from it (one more Q·Kᵀ product for T² · H floats less memory per layer).
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
        /// Rows of out and dout: H·D apart.
        var qStride: Int { heads * headDim }
        var kvStride: Int { kvHeads * headDim }
        /// Rows of q and dq, k and dk, v and dv: H·D, KV·D apart unless set (column blocks of
        /// the fused q, k, v output, whose rows are wider).
        public var qLD: Int?, kLD: Int?, vLD: Int?
        var ldq: Int { qLD ?? qStride }
        var ldk: Int { kLD ?? kvStride }
        var ldv: Int { vLD ?? kvStride }
        var scale: Float { 1 / Float(headDim).squareRoot() }
        /// Floats of the scratch forward and backward need: one block of scores, and its gradient.
        public var scratchCount: Int { 2 * Attention.block * seqLen }
        /// Floats of the saved log-sum-exp.
        public var lseCount: Int { batch * heads * seqLen }
    }

    /// out = softmax(scale · Q Kᵀ, causal) V;  lse[b, h, i] = log Σⱼ exp(scale · qᵢ·kⱼ) over the visible keys.
    public static func forward(out: FPtr, lse: FPtr, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, scratch: FPtr, _ s: Shape) {
        Profile.measure(.attention) {
            let T = s.seqLen, D = s.headDim, group = s.heads / s.kvHeads
            for b in 0..<s.batch {
                for h in 0..<s.heads {
                    let qh = q + b * T * s.ldq + h * D
                    let kg = k + b * T * s.ldk + (h / group) * D
                    let vg = v + b * T * s.ldv + (h / group) * D
                    let oh = out + b * T * s.qStride + h * D
                    let lh = lse + (b * s.heads + h) * T
                    var i0 = 0
                    while i0 < T {
                        let i1 = min(i0 + block, T), rows = i1 - i0
                        // p[0..<rows, 0..<i1] = scale · Q Kᵀ, then the causal softmax of each row
                        sgemm(transB: true, m: rows, n: i1, k: D, alpha: s.scale, a: qh + i0 * s.ldq,
                              lda: s.ldq, b: kg, ldb: s.ldk, c: scratch, ldc: i1)
                        for i in i0..<i1 {
                            lh[i] = softmaxCausalRow(scratch + (i - i0) * i1, first: s.firstKey(i), visible: i + 1, width: i1)
                        }
                        // out[i0..<i1] = P V
                        sgemm(m: rows, n: D, k: i1, a: scratch, lda: i1, b: vg, ldb: s.ldv,
                              c: oh + i0 * s.qStride, ldc: s.qStride)
                        i0 = i1
                    }
                }
            }
        }
    }

    /// Softmax of row[first..<visible] in place, zero elsewhere up to `width`; returns the
    /// row's log-sum-exp (what the backward needs to rebuild the probabilities).
    @inline(__always) @discardableResult
    static func softmaxCausalRow(_ row: FPtr, first: Int = 0, visible: Int, width: Int) -> Float {
        // Keys outside [first, visible) get probability 0, and so (dS = P ⊙ ...) no gradient.
        for j in 0..<first { row[j] = 0 }
        let seen = row + first, count = visible - first
        var mx = -Float.infinity
        for j in 0..<count { mx = max(mx, seen[j]) }
        let sum = expShifted(seen, seen, count, shift: mx)
        let inv = 1 / sum
        for j in 0..<count { seen[j] *= inv }
        for j in visible..<width { row[j] = 0 }
        return mx + Foundation.log(sum)
    }

    /// dq = ∂L/∂q (overwritten); dk, dv (overwritten). `out` and `lse` are the forward's.
    /// Per query block, P is rebuilt from the scores and lse, then
    ///   dP = dO Vᵀ,  dS = P ⊙ (dP − rowsum(dO ⊙ O)),  dQ = scale · dS K,
    ///   dK += scale · dSᵀ Q,  dV += Pᵀ dO
    /// (rowsum(dP ⊙ P) = rowsum(dO ⊙ O), one dot product of D instead of one of T).
    public static func backward(dq: FPtr, dk: FPtr, dv: FPtr, dout: UnsafePointer<Float>,
                                out: UnsafePointer<Float>, lse: UnsafePointer<Float>, q: UnsafePointer<Float>,
                                k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                scratch: FPtr, _ s: Shape) {
        Profile.measure(.attention) {
            let T = s.seqLen, D = s.headDim, group = s.heads / s.kvHeads
            for r in 0..<(s.batch * T) {
                (dk + r * s.ldk).update(repeating: 0, count: s.kvStride)
                (dv + r * s.ldv).update(repeating: 0, count: s.kvStride)
            }
            let p = scratch, dp = scratch + block * T
            for b in 0..<s.batch {
                for h in 0..<s.heads {
                    let off = b * T * s.qStride + h * D                 // out, dout
                    let qOff = b * T * s.ldq + h * D                    // q, dq
                    let kOff = b * T * s.ldk + (h / group) * D, vOff = b * T * s.ldv + (h / group) * D
                    let lh = lse + (b * s.heads + h) * T
                    var i0 = 0
                    while i0 < T {
                        let i1 = min(i0 + block, T), rows = i1 - i0
                        // P rebuilt: exp(scale · q·k − lse) over the visible keys, 0 elsewhere
                        sgemm(transB: true, m: rows, n: i1, k: D, alpha: s.scale, a: q + qOff + i0 * s.ldq,
                              lda: s.ldq, b: k + kOff, ldb: s.ldk, c: p, ldc: i1)
                        // dP = dO Vᵀ over the visible keys
                        sgemm(transB: true, m: rows, n: i1, k: D, a: dout + off + i0 * s.qStride, lda: s.qStride,
                              b: v + vOff, ldb: s.ldv, c: dp, ldc: i1)
                        for i in i0..<i1 {
                            let pr = p + (i - i0) * i1, dr = dp + (i - i0) * i1
                            let first = s.firstKey(i), shift = lh[i]
                            var dot: Float = 0
                            let oi = out + off + i * s.qStride, gi = dout + off + i * s.qStride
                            for d in 0..<D { dot += oi[d] * gi[d] }
                            for j in 0..<first { pr[j] = 0; dr[j] = 0 }
                            for j in first...i {
                                let pj = fastExp(pr[j] - shift)
                                pr[j] = pj
                                dr[j] = pj * (dr[j] - dot)
                            }
                            for j in (i + 1)..<i1 { pr[j] = 0; dr[j] = 0 }
                        }
                        // dV[0..<i1] += Pᵀ dO
                        sgemm(transA: true, m: i1, n: D, k: rows, a: p, lda: i1,
                              b: dout + off + i0 * s.qStride, ldb: s.qStride, beta: 1, c: dv + vOff, ldc: s.ldv)
                        // dQ = scale · dS K ;  dK += scale · dSᵀ Q
                        sgemm(m: rows, n: D, k: i1, alpha: s.scale, a: dp, lda: i1, b: k + kOff, ldb: s.ldk,
                              c: dq + qOff + i0 * s.ldq, ldc: s.ldq)
                        sgemm(transA: true, m: i1, n: D, k: rows, alpha: s.scale, a: dp, lda: i1,
                              b: q + qOff + i0 * s.ldq, ldb: s.ldq, beta: 1, c: dk + kOff, ldc: s.ldk)
                        i0 = i1
                    }
                }
            }
        }
    }
}
