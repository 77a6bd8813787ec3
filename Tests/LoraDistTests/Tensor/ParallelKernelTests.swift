import Foundation
import Testing
@testable import LoraDist

/// The element-wise kernels split their work over the rank's cores; the split must not
/// change a single bit (resume and multi-rank equivalence rely on it), and fastExp must
/// stay within a few ulp of libm.
@Suite(.serialized) struct ParallelKernelTests {
    @Test func fastExpMatchesLibm() {
        var worst: Float = 0
        var x: Float = -87
        while x < 88 {
            let ref = Foundation.exp(x)
            worst = max(worst, abs(fastExp(x) - ref) / ref)
            x += 0.0137
        }
        #expect(worst < 4e-7, "max relative error \(worst)")
        #expect(fastExp(-1000) >= 0 && fastExp(-1000) < 1e-37)
        #expect(fastExp(0) == 1)
    }

    @Test("fastExp on 8 lanes: each lane's bits equal the scalar function's, clamps and NaN included")
    func fastExpLanesMatchScalar() {
        var xs: [Float] = [-1000, -87.4, -87.3, 0, 88.3, 88.4, 1000, .nan, -.infinity, .infinity]
        var x: Float = -90
        while x < 90 { xs.append(x); x += 0.00731 }
        while xs.count % 8 != 0 { xs.append(1.5) }
        for i in stride(from: 0, to: xs.count, by: 8) {
            let lanes = fastExp(SIMD8<Float>(xs[i..<(i + 8)]))
            for k in 0..<8 {
                let scalar = fastExp(xs[i + k])
                #expect(lanes[k].bitPattern == scalar.bitPattern || (lanes[k].isNaN && scalar.isNaN), "x = \(xs[i + k])")
            }
        }
    }

    @Test("rowMax, expShifted and sumExpShifted against plain loops, every tail length")
    func rowReductions() {
        var g = SplitMix64(seed: 21)
        for n in 0..<41 {
            var row = (0..<n).map { _ in 3 * g.normal() }
            if n > 5 { row[n / 2] = .nan }  // passed over, as `x > m` passes over it
            var mx = -Float.infinity
            for v in row where v > mx { mx = v }
            #expect(row.withUnsafeBufferPointer { rowMax($0.baseAddress!, n) } == mx, "n = \(n)")
            if n > 5 { row[n / 2] = 0 }
            let out = FloatBuffer(max(n, 1))
            let sum = row.withUnsafeBufferPointer { expShifted($0.baseAddress!, out.ptr, n, shift: 1) }
            let sum2 = row.withUnsafeBufferPointer { sumExpShifted($0.baseAddress!, n, shift: 1) }
            #expect(sum == sum2)
            var reference = 0.0
            for j in 0..<n {
                #expect(out[j] == fastExp(row[j] - 1))
                reference += Double(fastExp(row[j] - 1))
            }
            #expect(abs(Double(sum) - reference) <= 1e-5 * max(1, reference), "n = \(n)")
        }
    }

    @Test("one worker or three: the same bits")
    func splitDoesNotChangeResults() {
        let n = 137, dim = 70, count = n * dim  // enough rows and elements for every kernel to split
        var g = SplitMix64(seed: 5)
        let x = FloatBuffer((0..<count).map { _ in g.normal() }), dy = FloatBuffer((0..<count).map { _ in g.normal() })
        let w = FloatBuffer((0..<dim).map { _ in 1 + 0.1 * g.normal() })
        let targets = (0..<n).map { Int32($0 % dim) }
        func run() -> [[Float]] {
            let out = FloatBuffer(count), rstd = FloatBuffer(n), dx = FloatBuffer(count), dw = FloatBuffer(dim)
            RMSNorm.forward(out: out.ptr, rstd: rstd.ptr, x: x.ptr, w: w.ptr, n: n, dim: dim, eps: 1e-5)
            RMSNorm.backward(dx: dx.ptr, dw: dw.ptr, dout: dy.ptr, x: x.ptr, w: w.ptr, rstd: rstd.ptr, n: n, dim: dim)
            let act = FloatBuffer(count), dg = FloatBuffer(count), du = FloatBuffer(count)
            SwiGLU.forward(act: act.ptr, gate: x.ptr, up: dy.ptr, count: count)
            SwiGLU.backward(dgate: dg.ptr, dup: du.ptr, dact: out.ptr, gate: x.ptr, up: dy.ptr, count: count)
            let dl = FloatBuffer(count)
            CrossEntropy.backward(dlogits: dl.ptr, logits: x.ptr, targets: targets, n: n, vocab: dim, scale: 0.1)
            let r = FloatBuffer(x.array)
            RoPE(headDim: 10, maxPositions: 8, theta: 10000).forward(r.ptr, rows: n, seqLen: 8, heads: 7)
            let ce = CrossEntropy.forward(logits: x.ptr, targets: targets, n: n, vocab: dim)
            return [out.array, rstd.array, dx.array, dw.array, act.array, dg.array, du.array, dl.array, r.array,
                    [Float(GradClip.sumSquares(x.ptr, count: count))], [Float(ce.sum), Float(ce.count), Float(ce.correct)]]
        }
        let saved = Parallel.workers
        Parallel.workers = 1
        let one = run()
        Parallel.workers = 3
        let three = run()
        Parallel.workers = saved
        for (i, (a, b)) in zip(one, three).enumerated() { #expect(a == b, "output \(i) differs") }
    }
    /// The work units (sequence, group, part) go to whichever lane is free, and the backward's
    /// parts but the last each add into their own dK, dV: one lane, two or three must give the
    /// same bits. Stacked groups of 3 heads (SmolLM2's) and 2, or none; several parts (one of
    /// them several blocks long) or one; batch 2 with several parts; a window shorter than a
    /// block and one longer; T not a multiple of the block, under one block, and 1. Shapes
    /// kept small: a debug build runs the score loops slowly.
    @Test("attention on one lane, two or three (single-threaded sgemm inside): the same bits",
          arguments: [(2, 70, 3, 1, nil, 2), (1, 130, 6, 6, nil, 2), (2, 70, 4, 2, 40, 2), (1, 130, 3, 1, 70, 3),
                      (1, 50, 9, 3, nil, 1), (1, 1, 3, 1, nil, 1)] as [(Int, Int, Int, Int, Int?, Int)])
    func attentionLanesDoNotChangeResults(batch: Int, T: Int, heads: Int, kvHeads: Int, window: Int?, parts: Int) {
        let D = 16
        let one = Attention.Shape(batch: batch, seqLen: T, heads: heads, kvHeads: kvHeads, headDim: D, window: window)
        #expect(one.parts == parts, "the case meant to cover \(parts) part(s) covers \(one.parts)")
        if kvHeads == 6 {
            let split = one.split()
            #expect((0..<parts).contains { split.start[$0 + 1] - split.start[$0] > 1 }, "no part of several blocks")
        }
        let nq = batch * T * heads * D, nkv = batch * T * kvHeads * D
        var g = SplitMix64(seed: 9)
        func random(_ n: Int) -> FloatBuffer { FloatBuffer((0..<n).map { _ in g.normal() }) }
        let q = random(nq), k = random(nkv), v = random(nkv), dout = random(nq)
        let guardFloats = 64, sentinel: Float = -12345.5  // after the scratch: must stay untouched
        func run(_ s: Attention.Shape) -> [[Float]] {
            let out = FloatBuffer(nq), lse = FloatBuffer(s.lseCount)
            let scratch = FloatBuffer([Float](repeating: sentinel, count: s.scratchCount + guardFloats))
            let dq = FloatBuffer(nq), dk = FloatBuffer(nkv), dv = FloatBuffer(nkv)
            Attention.forward(out: out.ptr, lse: lse.ptr, q: q.ptr, k: k.ptr, v: v.ptr, scratch: scratch.ptr, s)
            Attention.backward(dq: dq.ptr, dk: dk.ptr, dv: dv.ptr, dout: dout.ptr, out: out.ptr, lse: lse.ptr,
                               q: q.ptr, k: k.ptr, v: v.ptr, scratch: scratch.ptr, s)
            for i in 0..<guardFloats { #expect(scratch[s.scratchCount + i] == sentinel, "lanes \(s.lanes) wrote past the scratch") }
            return [out.array, lse.array, dq.array, dk.array, dv.array]
        }
        let saved = BLAS.threads
        BLAS.setThreads(1)
        let serial = run(one)
        for lanes in [2, 3] {
            var s = one
            s.lanes = lanes
            BLAS.setThreads(lanes)
            let parallel = run(s)
            for (i, (a, b)) in zip(serial, parallel).enumerated() { #expect(a == b, "lanes \(lanes): output \(i) differs") }
        }
        BLAS.setThreads(saved)
    }

    /// Each (sequence, group)'s query blocks split into parts of about equal cost: every block in
    /// exactly one part, no part empty, each part's cost within one block's of an even share.
    @Test("attention's parts: every block once, of about equal cost, fixed by the shape alone",
          arguments: [(2048, 3), (512, 3), (150, 1), (2000, 8), (64, 3), (65, 3), (4096, 32)])
    func attentionSplitIsBalanced(T: Int, kvHeads: Int) {
        var s = Attention.Shape(batch: 1, seqLen: T, heads: 3 * kvHeads, kvHeads: kvHeads, headDim: 64)
        let split = s.split()
        let P = s.parts, n = s.blocks
        #expect(split.start.count == P + 1 && split.start.first == 0 && split.start.last == n)
        for p in 0..<P { #expect(split.start[p] < split.start[p + 1], "part \(p) is empty") }
        let total = (0..<n).reduce(0) { $0 + s.blockCost($1) }
        let biggest = (0..<n).map(s.blockCost).max()!
        for p in 0..<P {
            let cost = (split.start[p]..<split.start[p + 1]).reduce(0) { $0 + s.blockCost($1) }
            #expect(split.cost[p] == cost)
            #expect(abs(cost * P - total) <= biggest * P, "part \(p): \(cost) of \(total) over \(P) parts")
            #expect(split.keyEnd[p] == min(split.start[p + 1] * Attention.block, T))
        }
        #expect(split.order.map { split.cost[$0] } == split.cost.sorted(by: >))
        s.lanes = 7
        s.batch = 5
        #expect(s.split().start == split.start)
    }
}
