import Foundation
import Testing
@testable import LoraDist

/// Every kernel's backward against central finite differences.
///
/// For a kernel y = f(x), the test takes L = Σ r ⊙ y with fixed random r, so ∂L/∂y = r,
/// and compares the analytic ∂L/∂x with (L(x + h) − L(x − h)) / 2h, h = 1e-2 (L is
/// summed in double). Tolerance: ‖analytic − numeric‖ / ‖numeric‖ < 5e-3; the
/// truncation error of a central difference is O(h²) ≈ 1e-4 here and fp32 rounding
/// adds about 1e-5, so a wrong backward (off by a term or a sign) fails by far.
@Suite struct KernelGradientTests {
    static let h: Float = 1e-2
    static let tolerance = 5e-3

    static func random(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { _ in scale * g.normal() }
    }

    /// Numeric gradient of `loss` with respect to every element of `x`.
    static func numeric(_ x: inout [Float], _ loss: ([Float]) -> Double) -> [Double] {
        (0..<x.count).map { i in
            let keep = x[i]
            x[i] = keep + h; let up = loss(x)
            x[i] = keep - h; let down = loss(x)
            x[i] = keep
            return (up - down) / Double(2 * h)
        }
    }

    static func dot(_ a: [Float], _ b: UnsafePointer<Float>) -> Double {
        var s = 0.0
        for i in 0..<a.count { s += Double(a[i]) * Double(b[i]) }
        return s
    }

    static func check(_ analytic: [Float], _ numeric: [Double], _ what: String) {
        let err = normRelativeError(analytic.map(Double.init), numeric)
        #expect(err < tolerance, "\(what): relative error \(err)")
    }

    @Test func embedding() {
        let n = 6, dim = 5, vocab = 4
        let ids: [Int32] = [0, 3, 1, 3, 3, 2]
        var table = Self.random(vocab * dim, seed: 1)
        let r = Self.random(n * dim, seed: 2)
        let loss = { (t: [Float]) -> Double in
            let out = FloatBuffer(n * dim)
            Embedding.forward(out: out.ptr, ids: ids, table: t, n: n, dim: dim)
            return Self.dot(r, out.ptr)
        }
        let dTable = FloatBuffer(vocab * dim)
        Embedding.backward(dTable: dTable.ptr, ids: ids, dout: r, n: n, dim: dim)
        Self.check(dTable.array, Self.numeric(&table, loss), "embedding table")
    }

    @Test func rmsnorm() {
        let n = 4, dim = 7
        var x = Self.random(n * dim, seed: 3), w = Self.random(dim, seed: 4, scale: 0.5).map { $0 + 1 }
        let r = Self.random(n * dim, seed: 5)
        func loss(_ x: [Float], _ w: [Float]) -> Double {
            let out = FloatBuffer(n * dim), rstd = FloatBuffer(n)
            RMSNorm.forward(out: out.ptr, rstd: rstd.ptr, x: x, w: w, n: n, dim: dim, eps: 1e-6)
            return Self.dot(r, out.ptr)
        }
        let out = FloatBuffer(n * dim), rstd = FloatBuffer(n), dx = FloatBuffer(n * dim), dw = FloatBuffer(dim)
        RMSNorm.forward(out: out.ptr, rstd: rstd.ptr, x: x, w: w, n: n, dim: dim, eps: 1e-6)
        RMSNorm.backward(dx: dx.ptr, dw: dw.ptr, dout: r, x: x, w: w, rstd: rstd.ptr, n: n, dim: dim)
        let wc = w, xc = x
        Self.check(dx.array, Self.numeric(&x) { loss($0, wc) }, "rmsnorm x")
        Self.check(dw.array, Self.numeric(&w) { loss(xc, $0) }, "rmsnorm weight")
    }

    @Test func linear() {
        let n = 5, inDim = 6, outDim = 4
        var x = Self.random(n * inDim, seed: 6), w = Self.random(outDim * inDim, seed: 7)
        let r = Self.random(n * outDim, seed: 8)
        func loss(_ x: [Float], _ w: [Float]) -> Double {
            let y = FloatBuffer(n * outDim)
            Matmul.forward(y: y.ptr, x: x, w: w, n: n, inDim: inDim, outDim: outDim)
            return Self.dot(r, y.ptr)
        }
        let dx = FloatBuffer(n * inDim), dw = FloatBuffer(outDim * inDim)
        Matmul.backward(dx: dx.ptr, dw: dw.ptr, dy: r, x: x, w: w, n: n, inDim: inDim, outDim: outDim)
        let wc = w, xc = x
        Self.check(dx.array, Self.numeric(&x) { loss($0, wc) }, "linear x")
        Self.check(dw.array, Self.numeric(&w) { loss(xc, $0) }, "linear weight")
    }

    @Test func rope() {
        let rows = 6, T = 3, heads = 2, D = 8
        let rope = RoPE(headDim: D, maxPositions: T, theta: 10000)
        var x = Self.random(rows * heads * D, seed: 9)
        let r = Self.random(rows * heads * D, seed: 10)
        let loss = { (x: [Float]) -> Double in
            var y = x
            y.withUnsafeMutableBufferPointer { rope.forward($0.baseAddress!, rows: rows, seqLen: T, heads: heads) }
            return Self.dot(r, y)
        }
        var dx = r
        dx.withUnsafeMutableBufferPointer { rope.backward($0.baseAddress!, rows: rows, seqLen: T, heads: heads) }
        Self.check(dx, Self.numeric(&x, loss), "rope")
    }

    /// Groups of 2 and 3 query heads (stacked into one product) and of 1 (not stacked); T under
    /// one block, not a multiple of it, and over several blocks split into several parts (the
    /// backward's partial dK, dV) or one (dK, dV added in place); with and without a window.
    @Test("attention, grouped-query, with more rows than one block, with and without a sliding window",
          arguments: [(5, 1, 4, 2, nil, 1), (70, 2, 4, 2, nil, 2), (70, 1, 4, 2, 20, 2),
                      (40, 1, 3, 1, nil, 1), (130, 2, 6, 2, nil, 3), (200, 1, 3, 1, nil, 4),
                      (150, 1, 6, 2, 40, 3), (70, 1, 12, 12, nil, 1), (130, 1, 36, 12, 50, 1)]
                     as [(Int, Int, Int, Int, Int?, Int)])
    func attention(T: Int, batch: Int, heads: Int, kvHeads: Int, window: Int?, parts: Int) {
        let s = Attention.Shape(batch: batch, seqLen: T, heads: heads, kvHeads: kvHeads, headDim: 4, window: window)
        #expect(s.parts == parts, "the case meant to cover \(parts) part(s) covers \(s.parts)")
        let nq = batch * T * s.heads * s.headDim, nkv = batch * T * s.kvHeads * s.headDim
        var q = Self.random(nq, seed: 11), k = Self.random(nkv, seed: 12), v = Self.random(nkv, seed: 13)
        let r = Self.random(nq, seed: 14)
        let scratch = FloatBuffer(s.scratchCount)
        func loss(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
            let out = FloatBuffer(nq), lse = FloatBuffer(s.lseCount)
            Attention.forward(out: out.ptr, lse: lse.ptr, q: q, k: k, v: v, scratch: scratch.ptr, s)
            return Self.dot(r, out.ptr)
        }
        let out = FloatBuffer(nq), lse = FloatBuffer(s.lseCount)
        Attention.forward(out: out.ptr, lse: lse.ptr, q: q, k: k, v: v, scratch: scratch.ptr, s)
        let dq = FloatBuffer(nq), dk = FloatBuffer(nkv), dv = FloatBuffer(nkv)
        Attention.backward(dq: dq.ptr, dk: dk.ptr, dv: dv.ptr, dout: r, out: out.ptr, lse: lse.ptr, q: q, k: k, v: v,
                           scratch: scratch.ptr, s)
        let (qc, kc, vc) = (q, k, v)
        // Finite differences on a sample of elements keep the T = 70 case quick.
        func sampled(_ x: inout [Float], _ analytic: [Float], _ f: ([Float]) -> Double, _ what: String) {
            let idx = Array(stride(from: 0, to: x.count, by: max(1, x.count / 60)))
            var a: [Float] = [], num: [Double] = []
            for i in idx {
                let keep = x[i]
                x[i] = keep + Self.h; let up = f(x)
                x[i] = keep - Self.h; let down = f(x)
                x[i] = keep
                a.append(analytic[i]); num.append((up - down) / Double(2 * Self.h))
            }
            Self.check(a, num, what)
        }
        sampled(&q, dq.array, { loss($0, kc, vc) }, "attention q")
        sampled(&k, dk.array, { loss(qc, $0, vc) }, "attention k")
        sampled(&v, dv.array, { loss(qc, kc, $0) }, "attention v")
        // causality: a query's output never depends on a later key or value
        var kLater = kc, vLater = vc
        let last = (T - 1) * s.kvHeads * s.headDim  // the last position's keys and values, batch 0
        for j in 0..<(s.kvHeads * s.headDim) { kLater[last + j] += 1; vLater[last + j] += 1 }
        let o1 = FloatBuffer(nq), o2 = FloatBuffer(nq), l1 = FloatBuffer(s.lseCount)
        Attention.forward(out: o1.ptr, lse: l1.ptr, q: qc, k: kc, v: vc, scratch: scratch.ptr, s)
        Attention.forward(out: o2.ptr, lse: l1.ptr, q: qc, k: kLater, v: vLater, scratch: scratch.ptr, s)
        for i in 0..<((T - 1) * s.heads * s.headDim) { #expect(o1[i] == o2[i]) }
    }

    /// The forward against attention written out in Double, query by query, over exactly the
    /// keys i − window + 1 ... i: the blocks skip the keys before their first query's window
    /// (Attention.Shape.blockKeys), and a wrong skip would show here, not in the finite
    /// differences above (which check the backward against the forward as it is).
    @Test("attention's forward against a plain softmax over each query's window",
          arguments: [(150, 1, 6, 2, nil), (150, 2, 6, 2, 10), (200, 1, 3, 1, 64), (200, 1, 4, 2, 65),
                      (130, 1, 6, 2, 100), (100, 1, 3, 3, 500)] as [(Int, Int, Int, Int, Int?)])
    func attentionForwardAgainstPlainSoftmax(T: Int, batch: Int, heads: Int, kvHeads: Int, window: Int?) {
        let D = 4, s = Attention.Shape(batch: batch, seqLen: T, heads: heads, kvHeads: kvHeads, headDim: D, window: window)
        let nq = batch * T * heads * D, nkv = batch * T * kvHeads * D
        let q = Self.random(nq, seed: 31), k = Self.random(nkv, seed: 32), v = Self.random(nkv, seed: 33)
        let out = FloatBuffer(nq), lse = FloatBuffer(s.lseCount), scratch = FloatBuffer(s.scratchCount)
        Attention.forward(out: out.ptr, lse: lse.ptr, q: q, k: k, v: v, scratch: scratch.ptr, s)
        var worst = 0.0
        for b in 0..<batch {
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                for i in 0..<T {
                    let keys = max(0, i - (window ?? Int.max / 2) + 1)...i
                    let qi = (b * T + i) * heads * D + h * D
                    let scores = keys.map { j -> Double in
                        let kj = (b * T + j) * kvHeads * D + g * D
                        return (0..<D).reduce(0.0) { $0 + Double(q[qi + $1]) * Double(k[kj + $1]) } / Double(D).squareRoot()
                    }
                    let mx = scores.max()!, sum = scores.reduce(0.0) { $0 + exp($1 - mx) }
                    #expect(abs(Double(lse[(b * heads + h) * T + i]) - (mx + log(sum))) < 1e-5)
                    for d in 0..<D {
                        var o = 0.0
                        for (n, j) in keys.enumerated() { o += exp(scores[n] - mx) / sum * Double(v[(b * T + j) * kvHeads * D + g * D + d]) }
                        worst = max(worst, abs(Double(out[qi + d]) - o))
                    }
                }
            }
        }
        #expect(worst < 1e-5, "largest difference \(worst)")
    }

    /// T = 1: each query sees only its own key, with probability 1, so out is v, dV is the
    /// group's dO summed over its heads, and dQ, dK vanish (up to rounding: finite differences
    /// against an exact 0 would measure only noise).
    @Test("attention at T = 1, stacked group of 3, batch 2")
    func attentionOfOnePosition() {
        let s = Attention.Shape(batch: 2, seqLen: 1, heads: 6, kvHeads: 2, headDim: 4)
        let nq = 2 * 6 * 4, nkv = 2 * 2 * 4
        let q = Self.random(nq, seed: 21), k = Self.random(nkv, seed: 22), v = Self.random(nkv, seed: 23)
        let r = Self.random(nq, seed: 24)
        let scratch = FloatBuffer(s.scratchCount)
        let out = FloatBuffer(nq), lse = FloatBuffer(s.lseCount)
        Attention.forward(out: out.ptr, lse: lse.ptr, q: q, k: k, v: v, scratch: scratch.ptr, s)
        let dq = FloatBuffer(nq), dk = FloatBuffer(nkv), dv = FloatBuffer(nkv)
        Attention.backward(dq: dq.ptr, dk: dk.ptr, dv: dv.ptr, dout: r, out: out.ptr, lse: lse.ptr, q: q, k: k, v: v,
                           scratch: scratch.ptr, s)
        for b in 0..<2 {
            for h in 0..<6 {
                for d in 0..<4 {
                    let kvAt = b * 8 + h / 3 * 4 + d
                    #expect(abs(out[b * 24 + h * 4 + d] - v[kvAt]) <= 1e-6)
                    #expect(abs(dq[b * 24 + h * 4 + d]) <= 1e-5)
                }
            }
            for g in 0..<2 {
                for d in 0..<4 {
                    let at = b * 8 + g * 4 + d
                    let sum = (0..<3).reduce(Float(0)) { $0 + r[b * 24 + (g * 3 + $1) * 4 + d] }
                    #expect(abs(dv[at] - sum) <= 1e-5)
                    #expect(abs(dk[at]) <= 1e-5)
                }
            }
        }
    }

    @Test func swiglu() {
        let n = 12
        var gate = Self.random(n, seed: 15, scale: 2), up = Self.random(n, seed: 16)
        let r = Self.random(n, seed: 17)
        func loss(_ g: [Float], _ u: [Float]) -> Double {
            let act = FloatBuffer(n)
            SwiGLU.forward(act: act.ptr, gate: g, up: u, count: n)
            return Self.dot(r, act.ptr)
        }
        let dg = FloatBuffer(n), du = FloatBuffer(n)
        SwiGLU.backward(dgate: dg.ptr, dup: du.ptr, dact: r, gate: gate, up: up, count: n)
        let gc = gate, uc = up
        Self.check(dg.array, Self.numeric(&gate) { loss($0, uc) }, "swiglu gate")
        Self.check(du.array, Self.numeric(&up) { loss(gc, $0) }, "swiglu up")
    }

    @Test func residual() {
        let n = 8
        var a = Self.random(n, seed: 18)
        let b = Self.random(n, seed: 19), r = Self.random(n, seed: 20)
        let loss = { (a: [Float]) -> Double in
            let out = FloatBuffer(n)
            Residual.forward(out: out.ptr, a: a, b: b, count: n)
            return Self.dot(r, out.ptr)
        }
        let da = FloatBuffer(n)
        Residual.backward(da: da.ptr, dout: r, count: n)
        Self.check(da.array, Self.numeric(&a, loss), "residual")
    }

    @Test func crossEntropy() {
        let n = 5, vocab = 7
        var logits = Self.random(n * vocab, seed: 21, scale: 2)
        let targets: [Int32] = [3, 0, -1, 6, 2]  // one ignored row
        let scale: Float = 0.25
        let loss = { (l: [Float]) -> Double in
            Double(scale) * CrossEntropy.forward(logits: l, targets: targets, n: n, vocab: vocab).sum
        }
        let d = FloatBuffer(n * vocab)
        CrossEntropy.backward(dlogits: d.ptr, logits: logits, targets: targets, n: n, vocab: vocab, scale: scale)
        Self.check(d.array, Self.numeric(&logits, loss), "cross-entropy")
        #expect(CrossEntropy.forward(logits: logits, targets: targets, n: n, vocab: vocab).count == 4)
    }

    @Test("LoRA linear: x, A and B, with and without dropout", arguments: [Float(0), Float(0.3)])
    func loraLinear(dropout: Float) throws {
        let n = 4, inDim = 6, outDim = 5
        let lora = try LoRAConfig(rank: 2, alpha: 3, dropout: dropout, targets: ["q_proj"])
        let specs = [ParamSpec(name: "l.weight", shape: [outDim, inDim], trainable: true, decay: true),
                     ParamSpec(name: "l.lora_A.weight", shape: [2, inDim], trainable: true, decay: true),
                     ParamSpec(name: "l.lora_B.weight", shape: [outDim, 2], trainable: true, decay: true)]
        let store = ParameterStore(specs: specs)
        for p in store.params { for (i, v) in Self.random(p.count, seed: fnv1a(p.name)).enumerated() { p.value[i] = v } }
        let lin = Linear(name: "l", inDim: inDim, outDim: outDim, store: store, lora: lora, index: 1, maxRows: n)
        let x = Self.random(n * inDim, seed: 22)
        let r = Self.random(n * outDim, seed: 23)
        let seeds: [UInt64] = [7, 8]  // two sequences of two rows: the same masks every call
        func loss(_ x: [Float]) -> Double {
            let y = FloatBuffer(n * outDim)
            lin.forward(y: y.ptr, x: x, n: n, seqLen: 2, dropoutSeeds: seeds)
            return Self.dot(r, y.ptr)
        }
        _ = loss(x)
        let dx = FloatBuffer(n * inDim)
        lin.backward(dx: dx.ptr, dy: r, x: x, n: n, accumulateDx: false)
        var xv = x
        Self.check(dx.array, Self.numeric(&xv, loss), "lora x")
        _ = loss(x)  // the saved activations belong to x again
        for p in store.params {
            let analytic = Array(UnsafeBufferPointer(start: p.grad!, count: p.count))
            let num: [Double] = (0..<p.count).map { i in
                let keep = p.value[i]
                p.value[i] = keep + Self.h; let up = loss(x)
                p.value[i] = keep - Self.h; let down = loss(x)
                p.value[i] = keep
                return (up - down) / Double(2 * Self.h)
            }
            Self.check(analytic, num, "lora \(p.name)")
        }
    }
}
