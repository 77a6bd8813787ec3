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
///
/// The (sequence, head) pairs are independent, so up to `lanes` of them run at once, each on
/// a worker thread with single-threaded sgemm (BLAS.oneThreadPerWorker): at batch 1 the
/// softmax and gradient loops no longer run on one core while the others wait. Under GQA the
/// heads of a group add into the same dK, dV; each head's share goes to its own slice of the
/// scratch and they are summed in head order afterwards, so the bits do not depend on how
/// many lanes ran.
public enum Attention {
    static let block = 64

    public struct Shape {
        public var batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int
        public var window: Int?
        /// (sequence, head) pairs processed at once, each with its own block of scratch.
        public var lanes = 1
        public init(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, window: Int? = nil, lanes: Int = 1) {
            self.batch = batch; self.seqLen = seqLen; self.heads = heads
            self.kvHeads = kvHeads; self.headDim = headDim; self.window = window; self.lanes = max(1, lanes)
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
        /// Heads sharing one key/value head.
        var group: Int { heads / kvHeads }
        /// Floats of one lane's block of scores and their gradient.
        var laneCount: Int { 2 * Attention.block * seqLen }
        /// Under GQA, each (sequence, head)'s dK and dV [T, D] before they are summed per group.
        var headGradsCount: Int { group > 1 ? 2 * batch * heads * seqLen * headDim : 0 }
        /// Floats of the scratch forward and backward need: a block of scores and its gradient
        /// per lane, and (GQA) each head's dK, dV.
        public var scratchCount: Int { lanes * laneCount + headGradsCount }
        /// Floats of the saved log-sum-exp.
        public var lseCount: Int { batch * heads * seqLen }
    }

    /// body(pair, laneScratch) for every (sequence, head) pair b·H + h, on up to `s.lanes`
    /// workers with one BLAS thread each; pairs are split into contiguous runs, one per lane.
    private static func eachPair(_ s: Shape, scratch: FPtr, _ body: (Int, FPtr) -> Void) {
        let pairs = s.batch * s.heads, lanes = min(s.lanes, Parallel.workers, pairs)
        if lanes <= 1 {
            for pair in 0..<pairs { body(pair, scratch) }
            return
        }
        BLAS.oneThreadPerWorker {
            DispatchQueue.concurrentPerform(iterations: lanes) { lane in
                let lo = pairs * lane / lanes, hi = pairs * (lane + 1) / lanes
                for pair in lo..<hi { body(pair, scratch + lane * s.laneCount) }
            }
        }
    }

    /// out = softmax(scale · Q Kᵀ, causal) V;  lse[b, h, i] = log Σⱼ exp(scale · qᵢ·kⱼ) over the visible keys.
    public static func forward(out: FPtr, lse: FPtr, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, scratch: FPtr, _ s: Shape) {
        Profile.measure(.attention) {
            let T = s.seqLen, D = s.headDim, group = s.group
            eachPair(s, scratch: scratch) { pair, p in
                let b = pair / s.heads, h = pair % s.heads
                let qh = q + b * T * s.ldq + h * D
                let kg = k + b * T * s.ldk + (h / group) * D
                let vg = v + b * T * s.ldv + (h / group) * D
                let oh = out + b * T * s.qStride + h * D
                let lh = lse + pair * T
                var i0 = 0
                while i0 < T {
                    let i1 = min(i0 + block, T), rows = i1 - i0
                    // p[0..<rows, 0..<i1] = scale · Q Kᵀ, then the causal softmax of each row
                    sgemm(transB: true, m: rows, n: i1, k: D, alpha: s.scale, a: qh + i0 * s.ldq,
                          lda: s.ldq, b: kg, ldb: s.ldk, c: p, ldc: i1)
                    for i in i0..<i1 {
                        lh[i] = softmaxCausalRow(p + (i - i0) * i1, first: s.firstKey(i), visible: i + 1, width: i1)
                    }
                    // out[i0..<i1] = P V
                    sgemm(m: rows, n: D, k: i1, a: p, lda: i1, b: vg, ldb: s.ldv,
                          c: oh + i0 * s.qStride, ldc: s.qStride)
                    i0 = i1
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
        let mx = rowMax(seen, count)
        let sum = expShifted(seen, seen, count, shift: mx)
        scaleRow(seen, count, by: 1 / sum)
        for j in visible..<width { row[j] = 0 }
        return mx + Foundation.log(sum)
    }

    /// p[j] = exp(p[j] − shift) (the score rebuilt into a probability), dp[j] = p[j] · (dp[j] − dot)
    /// for j in 0..<count. Explicit vectors: p and dp are two rows of one scratch, which LLVM
    /// cannot prove apart, so it left this loop scalar.
    @inline(__always)
    static func probabilityAndScoreGradient(p: FPtr, dp: FPtr, count: Int, shift: Float, dot: Float) {
        var j = 0
        while j + 8 <= count {
            let pj = fastExp(load8(p, j) - shift)
            store8(pj, p, j)
            store8(pj * (load8(dp, j) - dot), dp, j)
            j += 8
        }
        while j < count {
            let pj = fastExp(p[j] - shift)
            p[j] = pj
            dp[j] = pj * (dp[j] - dot)
            j += 1
        }
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
            let T = s.seqLen, D = s.headDim, group = s.group
            // Under GQA each head's dK, dV [T, D] go to its slice of the scratch, after the lanes'.
            let headGrads = scratch + s.lanes * s.laneCount, headDV = headGrads + s.headGradsCount / 2
            if group == 1 {
                for r in 0..<(s.batch * T) {
                    (dk + r * s.ldk).update(repeating: 0, count: s.kvStride)
                    (dv + r * s.ldv).update(repeating: 0, count: s.kvStride)
                }
            }
            eachPair(s, scratch: scratch) { pair, p in
                let b = pair / s.heads, h = pair % s.heads
                let dp = p + block * T
                let off = b * T * s.qStride + h * D                 // out, dout
                let qOff = b * T * s.ldq + h * D                    // q, dq
                let kOff = b * T * s.ldk + (h / group) * D, vOff = b * T * s.ldv + (h / group) * D
                // where this head's dK, dV add up: its group's columns, or (GQA) its own slice
                let (dkh, ldk, dvh, ldv) = group == 1
                    ? (dk + kOff, s.ldk, dv + vOff, s.ldv)
                    : (headGrads + pair * T * D, D, headDV + pair * T * D, D)
                if group > 1 {
                    dkh.update(repeating: 0, count: T * D)
                    dvh.update(repeating: 0, count: T * D)
                }
                let lh = lse + pair * T
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
                        probabilityAndScoreGradient(p: pr + first, dp: dr + first, count: i + 1 - first, shift: shift, dot: dot)
                        for j in (i + 1)..<i1 { pr[j] = 0; dr[j] = 0 }
                    }
                    // dV[0..<i1] += Pᵀ dO
                    sgemm(transA: true, m: i1, n: D, k: rows, a: p, lda: i1,
                          b: dout + off + i0 * s.qStride, ldb: s.qStride, beta: 1, c: dvh, ldc: ldv)
                    // dQ = scale · dS K ;  dK += scale · dSᵀ Q
                    sgemm(m: rows, n: D, k: i1, alpha: s.scale, a: dp, lda: i1, b: k + kOff, ldb: s.ldk,
                          c: dq + qOff + i0 * s.ldq, ldc: s.ldq)
                    sgemm(transA: true, m: i1, n: D, k: rows, alpha: s.scale, a: dp, lda: i1,
                          b: q + qOff + i0 * s.ldq, ldb: s.ldq, beta: 1, c: dkh, ldc: ldk)
                    i0 = i1
                }
            }
            // GQA: dK, dV of each group = its heads' shares, added in head order.
            if group > 1 {
                Parallel.chunks(s.batch * T, grain: 16) { rows in
                    for r in rows {
                        let b = r / T, t = r % T
                        for g in 0..<s.kvHeads {
                            let dkr = dk + r * s.ldk + g * D, dvr = dv + r * s.ldv + g * D
                            for i in 0..<group {
                                let pair = b * s.heads + g * group + i
                                let hk = headGrads + (pair * T + t) * D, hv = headDV + (pair * T + t) * D
                                if i == 0 {
                                    for d in 0..<D { dkr[d] = hk[d]; dvr[d] = hv[d] }
                                } else {
                                    for d in 0..<D { dkr[d] += hk[d]; dvr[d] += hv[d] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
