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
            return [out.array, rstd.array, dx.array, dw.array, act.array, dg.array, du.array, dl.array, r.array,
                    [Float(GradClip.sumSquares(x.ptr, count: count))]]
        }
        let saved = Parallel.workers
        Parallel.workers = 1
        let one = run()
        Parallel.workers = 3
        let three = run()
        Parallel.workers = saved
        for (i, (a, b)) in zip(one, three).enumerated() { #expect(a == b, "output \(i) differs") }
    }
}
