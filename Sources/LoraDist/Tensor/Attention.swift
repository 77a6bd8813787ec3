import Foundation

/// Causal scaled-dot-product attention with grouped-query heads, optionally within a
/// sliding window (Mistral: query i sees keys i − window + 1 ... i).
///
/// Layouts (row r = b·T + t):  q, out [B·T, H·D];  k, v [B·T, KV·D];  lse [B, H, T].
/// Query head h reads key/value head h / G, G = H / KV (the group): the G query heads of
/// group g are the G·D contiguous columns g·G·D ..< (g + 1)·G·D of a row of q.
///
/// Queries are processed in blocks of `block` positions, each against only the keys it can
/// see (the upper triangle of the score matrix is never computed, nor, under a sliding
/// window, the keys before the window of the block's first query: `blockKeys`). The group's G heads run
/// as one stacked block of G·block rows, row-major: stacked row (t − i0)·G + i is query t of
/// the group's head i, so filling the stack (and emptying it into out, dq) is one copy of
/// G·D contiguous floats per position, and the rows of one position, which see the same
/// keys, sit together. Q·Kᵀ, P·V, dO·Vᵀ, dS·K are single products of G·block rows instead of
/// G of block rows (K or N = D is a shape sgemm runs slowly with few rows), and
/// dK += dSᵀ·Q, dV += Pᵀ·dO add the group's heads inside the product. With G = 1 the
/// "stack" is q, dout themselves (their row stride as lda): nothing is copied.
///
/// No T × T matrix is kept: scores live in a G·block × T scratch per lane, the forward saves
/// each row's log-sum-exp, and the backward rebuilds the block's probabilities from it (one
/// more Q·Kᵀ product for T² · H floats less memory per layer).
///
/// Work units are (sequence, group, part): each (sequence, group)'s query blocks are split
/// into `parts` contiguous runs of about equal cost (block i costs its rows × the keys it
/// multiplies), a number fixed by the shape (not by the lanes). Units go to up to `lanes`
/// worker threads with single-threaded sgemm (BLAS.oneThreadPerWorker), most expensive
/// first, each lane taking the next unit when it is done, so lanes balance at batch 1 too.
/// In the backward the last part (whose keys are all T) adds into dk, dv directly; every
/// other part's dK, dV (keys up to its last block's end) go to its own partial buffer, which
/// the lane finishing the (sequence, group)'s last unit adds onto dk, dv in part order: the
/// bits depend neither on how many lanes ran nor on which lane ran what. One lane runs a
/// (sequence, group)'s parts back to back and sums them at once, so the (sequence, group)s
/// take turns in one set of partials, which stays in cache.
public enum Attention {
    static let block = 64
    /// Work units wanted per sequence: `parts` is about this over the key/value heads, so
    /// that a single sequence still gives the lanes a dozen units to balance.
    static let unitsPerSequence = 12

    public struct Shape {
        public var batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int
        public var window: Int?
        /// Work units processed at once, each with its own lane of scratch.
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
        /// Query blocks per sequence.
        var blocks: Int { (seqLen + Attention.block - 1) / Attention.block }
        /// Parts each (sequence, group)'s query blocks are split into (Split).
        var parts: Int { Swift.min(blocks, Swift.max(1, (Attention.unitsPerSequence + kvHeads - 1) / kvHeads)) }
        /// Rows of one stacked block: the group's heads at `block` positions.
        var stackRows: Int { group * Attention.block }
        /// Floats of one lane: a stacked block of scores and their gradient [2, G·block, T],
        /// and under GQA the stacked q (or dO), dO and output (or dQ) [3, G·block, D].
        var laneCount: Int { 2 * stackRows * seqLen + (group > 1 ? 3 * stackRows * headDim : 0) }
        /// (Sequence, group)s whose partial dK, dV are kept at once: one on one lane (eachUnit).
        var partialSets: Int { lanes == 1 ? 1 : batch * kvHeads }
        /// Floats of the backward's partial dK, dV: per set [2, Σ key ends of the parts but the
        /// last, D] (none with one part).
        var partialsFloats: Double { 2 * Double(partialSets) * Double(split().partialRows) * Double(headDim) }
        /// Floats of the scratch forward and backward need: each lane's, then the partials.
        /// In Double for LlamaModel.workingFloats (sizes past Int are measured, not trapped on).
        public var scratchFloats: Double { Double(lanes) * Double(laneCount) + partialsFloats }
        public var scratchCount: Int { Int(scratchFloats) }
        /// Floats of the scratch the forward alone needs: the lanes' (no backward partials).
        public var forwardScratchCount: Int { lanes * laneCount }
        /// Floats of the saved log-sum-exp.
        public var lseCount: Int { batch * heads * seqLen }

        /// The keys query block i multiplies: from the first its first query sees (0 without a
        /// window) to its end. Keys before a sliding window are skipped, not multiplied and zeroed.
        func blockKeys(_ i: Int) -> Range<Int> {
            let i0 = i * Attention.block
            return firstKey(i0)..<Swift.min(i0 + Attention.block, seqLen)
        }

        /// Query block i's cost: its rows × the keys it multiplies.
        func blockCost(_ i: Int) -> Int {
            let i0 = i * Attention.block
            return (Swift.min(i0 + Attention.block, seqLen) - i0) * blockKeys(i).count
        }

        /// The split of every (sequence, group)'s query blocks into `parts` runs of about equal cost.
        func split() -> Split {
            let n = blocks, P = parts
            var cum = [0]                                 // cum[m]: cost of blocks 0..<m
            for i in 0..<n { cum.append(cum[i] + blockCost(i)) }
            let total = cum[n]
            // part p ends at the block boundary nearest to p/P of the total cost, every part non-empty
            var start = [0]
            for p in 1..<P {
                var m = start[p - 1] + 1
                while m < n - (P - p) && cum[m] * P < total * p { m += 1 }
                if m > start[p - 1] + 1 && total * p - cum[m - 1] * P < cum[m] * P - total * p { m -= 1 }
                start.append(m)
            }
            start.append(n)
            let keyEnd = (0..<P).map { Swift.min(start[$0 + 1] * Attention.block, seqLen) }
            var keyOffset: [Int] = []
            var partialRows = 0
            for e in keyEnd.dropLast() { keyOffset.append(partialRows); partialRows += e }
            let cost = (0..<P).map { cum[start[$0 + 1]] - cum[start[$0]] }
            let order = (0..<P).sorted { cost[$0] != cost[$1] ? cost[$0] > cost[$1] : $0 < $1 }
            return Split(start: start, keyEnd: keyEnd, keyOffset: keyOffset, partialRows: partialRows,
                         cost: cost, order: order)
        }
    }

    /// Part p of a (sequence, group) is query blocks start[p] ..< start[p + 1]; its dK, dV
    /// cover keys 0 ..< keyEnd[p] (the last part's: all T), for every part but the last rows
    /// keyOffset[p] ... of the (sequence, group)'s partials, partialRows in all.
    struct Split {
        let start: [Int], keyEnd: [Int], keyOffset: [Int], partialRows: Int
        /// Each part's cost (Σ blockCost), and the parts from the most expensive.
        let cost: [Int], order: [Int]
    }

    /// Hands out units 0, 1, 2, ... to whichever lane asks next, and counts each (sequence,
    /// group)'s units done.
    private final class Ticket: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0
        private var left: [Int]
        init(groups: Int, parts: Int) { left = Array(repeating: parts, count: groups) }
        func take() -> Int { lock.lock(); defer { lock.unlock() }; next += 1; return next - 1 }
        /// One unit of (sequence, group) `i` done; true for the last of them. The lock also
        /// orders the other lanes' writes to its partials before the caller's reads.
        func done(_ i: Int) -> Bool { lock.lock(); defer { lock.unlock() }; left[i] -= 1; return left[i] == 0 }
    }

    /// body(b, g, part, laneScratch) for every work unit, then finished(b, g, laneScratch) once
    /// all of (b, g)'s parts are done, on the lane that did the last. On up to `s.lanes` workers
    /// with one BLAS thread each, most expensive part first, a lane taking the next unit when
    /// it is done; one lane runs each (b, g)'s parts back to back instead (same units, same bits).
    private static func eachUnit(_ s: Shape, _ split: Split, scratch: FPtr, _ body: (Int, Int, Int, FPtr) -> Void,
                                 finished: (Int, Int, FPtr) -> Void = { _, _, _ in }) {
        let perPart = s.batch * s.kvHeads, units = perPart * split.order.count
        let lanes = min(s.lanes, Parallel.workers, units)
        if lanes <= 1 {
            for u in 0..<perPart {
                for part in split.order { body(u / s.kvHeads, u % s.kvHeads, part, scratch) }
                finished(u / s.kvHeads, u % s.kvHeads, scratch)
            }
            return
        }
        let ticket = Ticket(groups: perPart, parts: split.order.count)
        BLAS.oneThreadPerWorker {
            DispatchQueue.concurrentPerform(iterations: lanes) { lane in
                let p = scratch + lane * s.laneCount
                while true {
                    let u = ticket.take()
                    if u >= units { break }
                    let bg = u % perPart, b = bg / s.kvHeads, g = bg % s.kvHeads
                    body(b, g, split.order[u / perPart], p)
                    if ticket.done(bg) { finished(b, g, p) }
                }
            }
        }
    }

    /// rows × width floats from rows `ld` apart into a packed block, or back.
    @inline(__always)
    private static func pack(_ dst: FPtr, _ src: UnsafePointer<Float>, ld: Int, rows: Int, width: Int) {
        for r in 0..<rows { (dst + r * width).update(from: src + r * ld, count: width) }
    }
    @inline(__always)
    static func unpack(_ dst: FPtr, ld: Int, _ src: UnsafePointer<Float>, rows: Int, width: Int) {
        for r in 0..<rows { (dst + r * ld).update(from: src + r * width, count: width) }
    }

    /// The stacked block of `rows` positions of a group's heads, from `src` (its first
    /// position, group's first column; rows `ld` apart): src itself when G = 1, else packed into `buf`.
    @inline(__always)
    static func stacked(_ src: UnsafePointer<Float>, ld: Int, rows: Int, _ s: Shape, into buf: FPtr)
        -> (UnsafePointer<Float>, Int) {
        if s.group == 1 { return (src, ld) }
        pack(buf, src, ld: ld, rows: rows, width: s.group * s.headDim)
        return (UnsafePointer(buf), s.headDim)
    }

    /// out = softmax(scale · Q Kᵀ, causal) V;  lse[b, h, i] = log Σⱼ exp(scale · qᵢ·kⱼ) over the visible keys.
    public static func forward(out: FPtr, lse: FPtr, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, scratch: FPtr, _ s: Shape) {
        Profile.measure(.attention) {
            let T = s.seqLen, D = s.headDim, G = s.group, GD = G * D, M = s.stackRows
            let split = s.split()
            eachUnit(s, split, scratch: scratch) { b, g, part, p in
                // lane: p [G·block, T] scores; qs, os [G·block, D] (GQA)
                let qs = p + 2 * M * T, os = qs + 2 * M * D
                let qg = q + b * T * s.ldq + g * GD, og = out + b * T * s.qStride + g * GD
                let kg = k + b * T * s.ldk + g * D, vg = v + b * T * s.ldv + g * D
                let lg = lse + (b * s.heads + g * G) * T          // head g·G + i at lg + i·T
                for blk in split.start[part]..<split.start[part + 1] {
                    let i0 = blk * block, i1 = min(i0 + block, T), rows = (i1 - i0) * G
                    let keys = s.blockKeys(blk), k0 = keys.lowerBound, w = keys.count   // column j: key k0 + j
                    let (qa, lda) = stacked(qg + i0 * s.ldq, ld: s.ldq, rows: i1 - i0, s, into: qs)
                    // p[0..<rows, 0..<w] = scale · Q Kᵀ, then the causal softmax of each row
                    sgemm(transB: true, m: rows, n: w, k: D, alpha: s.scale, a: qa, lda: lda, b: kg + k0 * s.ldk, ldb: s.ldk, c: p, ldc: w)
                    for r in 0..<rows {
                        let t = i0 + r / G
                        lg[r % G * T + t] = softmaxCausalRow(p + r * w, first: s.firstKey(t) - k0, visible: t + 1 - k0, width: w)
                    }
                    // out[i0..<i1] = P V (GQA: into os, then its rows into out's)
                    let (oa, ldo) = G == 1 ? (og + i0 * s.qStride, s.qStride) : (os, D)
                    sgemm(m: rows, n: D, k: w, a: p, lda: w, b: vg + k0 * s.ldv, ldb: s.ldv, c: oa, ldc: ldo)
                    if G > 1 { unpack(og + i0 * s.qStride, ld: s.qStride, os, rows: i1 - i0, width: GD) }
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

    /// dst[d] += src[d] for d in 0..<count (rows of different buffers; vectors spelled out
    /// like below, as LLVM cannot prove them apart).
    @inline(__always)
    static func addRow(_ dst: FPtr, _ src: UnsafePointer<Float>, _ count: Int) {
        var d = 0
        while d + 8 <= count { store8(load8(dst, d) + load8(src, d), dst, d); d += 8 }
        while d < count { dst[d] += src[d]; d += 1 }
    }

    /// p[j] = exp(p[j] − shift) (the score rebuilt into a probability), dp[j] = p[j] · (dp[j] − dot)
    /// for j in 0..<count. Explicit vectors: p and dp are two rows of one scratch, which LLVM
    /// cannot prove apart, so it left this loop scalar. Not inlined: inlined into `backward`
    /// (the Swift 6 toolchain here), LLVM split its 8-lane vectors into two 4-lane halves and
    /// reloaded every constant in the loop, about twice the instructions (perf annotate).
    @inline(never)
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
    /// Per stacked query block, P is rebuilt from the scores and lse, then
    ///   dP = dO Vᵀ,  dS = P ⊙ (dP − rowsum(dO ⊙ O)),  dQ = scale · dS K,
    ///   dK += scale · dSᵀ Q,  dV += Pᵀ dO
    /// (rowsum(dP ⊙ P) = rowsum(dO ⊙ O), one dot product of D instead of one of T). The
    /// stacked rows make dK, dV the sum over the group's heads.
    public static func backward(dq: FPtr, dk: FPtr, dv: FPtr, dout: UnsafePointer<Float>,
                                out: UnsafePointer<Float>, lse: UnsafePointer<Float>, q: UnsafePointer<Float>,
                                k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                scratch: FPtr, _ s: Shape) {
        Profile.measure(.attention) {
            let T = s.seqLen, D = s.headDim, G = s.group, GD = G * D, M = s.stackRows, KV = s.kvHeads
            let split = s.split(), last = split.keyEnd.count - 1
            // Per (sequence, group), or one set on one lane: [dK partials | dV partials], each
            // [partialRows, D], after the lanes'.
            let partials = scratch + s.lanes * s.laneCount, perSet = 2 * split.partialRows * D
            func partial(_ b: Int, _ g: Int, _ part: Int) -> (dk: FPtr, dv: FPtr) {
                let set = s.partialSets == 1 ? 0 : b * KV + g
                let base = partials + set * perSet + split.keyOffset[part] * D
                return (base, base + split.partialRows * D)
            }
            eachUnit(s, split, scratch: scratch) { b, g, part, p in
                // lane: p, dp [G·block, T] probabilities and score gradients; qs, gs, os [G·block, D] (GQA)
                let dp = p + M * T, qs = dp + M * T, gs = qs + M * D, os = gs + M * D
                let qOff = b * T * s.ldq + g * GD                       // q, dq
                let oOff = b * T * s.qStride + g * GD                   // out, dout
                let kg = k + b * T * s.ldk + g * D, vg = v + b * T * s.ldv + g * D
                let lg = lse + (b * s.heads + g * G) * T
                // where this unit's dK, dV add up: the group's columns (last part), or its partials
                let keys = split.keyEnd[part]
                let (dkg, ldk, dvg, ldv): (FPtr, Int, FPtr, Int)
                if part == last {
                    (dkg, ldk, dvg, ldv) = (dk + b * T * s.ldk + g * D, s.ldk, dv + b * T * s.ldv + g * D, s.ldv)
                    for t in 0..<keys {
                        (dkg + t * ldk).update(repeating: 0, count: D)
                        (dvg + t * ldv).update(repeating: 0, count: D)
                    }
                } else {
                    let h = partial(b, g, part)
                    (dkg, ldk, dvg, ldv) = (h.dk, D, h.dv, D)
                    dkg.update(repeating: 0, count: keys * D)
                    dvg.update(repeating: 0, count: keys * D)
                }
                for blk in split.start[part]..<split.start[part + 1] {
                    let i0 = blk * block, i1 = min(i0 + block, T), rows = (i1 - i0) * G
                    let (qa, lda) = stacked(q + qOff + i0 * s.ldq, ld: s.ldq, rows: i1 - i0, s, into: qs)
                    let (ga, ldg) = stacked(dout + oOff + i0 * s.qStride, ld: s.qStride, rows: i1 - i0, s, into: gs)
                    let bk = s.blockKeys(blk), k0 = bk.lowerBound, w = bk.count   // column j: key k0 + j
                    let kb = kg + k0 * s.ldk, vb = vg + k0 * s.ldv
                    // P rebuilt: exp(scale · q·k − lse) over the visible keys, 0 elsewhere
                    sgemm(transB: true, m: rows, n: w, k: D, alpha: s.scale, a: qa, lda: lda, b: kb, ldb: s.ldk, c: p, ldc: w)
                    // dP = dO Vᵀ over the visible keys
                    sgemm(transB: true, m: rows, n: w, k: D, a: ga, lda: ldg, b: vb, ldb: s.ldv, c: dp, ldc: w)
                    for r in 0..<rows {
                        let t = i0 + r / G, i = r % G
                        let pr = p + r * w, dr = dp + r * w
                        let first = s.firstKey(t) - k0, shift = lg[i * T + t]
                        var dot: Float = 0
                        let at = oOff + t * s.qStride + i * D
                        let oi = out + at, gi = dout + at
                        for d in 0..<D { dot += oi[d] * gi[d] }
                        for j in 0..<first { pr[j] = 0; dr[j] = 0 }
                        probabilityAndScoreGradient(p: pr + first, dp: dr + first, count: t + 1 - k0 - first, shift: shift, dot: dot)
                        for j in (t + 1 - k0)..<w { pr[j] = 0; dr[j] = 0 }
                    }
                    // dV[k0..<i1] += Pᵀ dO
                    sgemm(transA: true, m: w, n: D, k: rows, a: p, lda: w, b: ga, ldb: ldg, beta: 1, c: dvg + k0 * ldv, ldc: ldv)
                    // dQ = scale · dS K (GQA: into os, then its rows into dq's)
                    if G == 1 {
                        sgemm(m: rows, n: D, k: w, alpha: s.scale, a: dp, lda: w, b: kb, ldb: s.ldk,
                              c: dq + qOff + i0 * s.ldq, ldc: s.ldq)
                    } else {
                        sgemm(m: rows, n: D, k: w, alpha: s.scale, a: dp, lda: w, b: kb, ldb: s.ldk, c: os, ldc: D)
                        unpack(dq + qOff + i0 * s.ldq, ld: s.ldq, os, rows: i1 - i0, width: GD)
                    }
                    // dK[k0..<i1] += scale · dSᵀ Q
                    sgemm(transA: true, m: w, n: D, k: rows, alpha: s.scale, a: dp, lda: w, b: qa, ldb: lda,
                          beta: 1, c: dkg + k0 * ldk, ldc: ldk)
                }
            } finished: { b, g, _ in
                // dK, dV of key t: the last part's, plus those of the other parts reaching t, in part order
                guard last > 0 else { return }
                var first = 0
                for t in 0..<split.keyEnd[last - 1] {
                    while split.keyEnd[first] <= t { first += 1 }
                    let dkr = dk + (b * T + t) * s.ldk + g * D, dvr = dv + (b * T + t) * s.ldv + g * D
                    for part in first..<last {
                        let h = partial(b, g, part)
                        addRow(dkr, h.dk + t * D, D)
                        addRow(dvr, h.dv + t * D, D)
                    }
                }
            }
        }
    }
}
