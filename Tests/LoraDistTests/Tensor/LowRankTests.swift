import Foundation
import Testing
@testable import LoraDist

/// LowRank's kernels against OpenBLAS's sgemm: every product the adapters run (LoRA.swift,
/// LinearGroup.swift), ranks 1 to 32, dimensions not multiples of 8, one row and an odd number,
/// rows wider than the matrix (a group's column blocks), α ≠ 1, overwrite and accumulate; the
/// padding between rows of the output left alone; one worker or several giving the same bits;
/// the fused s·dy·B + dB pass giving the bits of its two products run apart.
@Suite struct LowRankTests {
    static let ranks = [1, 3, 8, 16, 24, 32]
    static let sentinel: Float = -777.25

    /// One product C[m × n] (=, +=) α·op(A)·op(B), its operands random, rows `pad` floats wider
    /// than they need to be (C's padding set to the sentinel).
    struct Case: CustomStringConvertible {
        var transA = false, transB = false
        var m: Int, n: Int, k: Int
        var alpha: Float = 1, beta: Float = 0
        var pad = 0
        var description: String { "\(m) × \(n) × \(k) \(transA ? "T" : "N")\(transB ? "T" : "N") α \(alpha) β \(beta) pad \(pad)" }

        var aRows: Int { transA ? k : m }
        var bRows: Int { transB ? n : k }
        var lda: Int { (transA ? m : k) + pad }
        var ldb: Int { (transB ? k : n) + pad }
        var ldc: Int { n + pad }

        /// Random operands (seeded by the shape) and C's starting values.
        func operands() -> (a: [Float], b: [Float], c: [Float]) {
            var g = SplitMix64(seed: UInt64(m * 1_000_003 + n * 1009 + k * 7 + pad) ^ (transA ? 1 << 40 : 0) ^ (transB ? 1 << 41 : 0))
            let a = (0..<(aRows * lda)).map { _ in g.normal() }
            let b = (0..<(bRows * ldb)).map { _ in g.normal() }
            let c = (0..<(m * ldc)).map { i in i % ldc < n ? g.normal() : LowRankTests.sentinel }
            return (a, b, c)
        }

        func lowRank(_ o: (a: [Float], b: [Float], c: [Float]), workers: Int) -> [Float] {
            var c = o.c
            c.withUnsafeMutableBufferPointer { cp in
                LowRank.kernel(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: o.a, lda: lda,
                               b: o.b, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc, workers: workers)
            }
            return c
        }

        func reference(_ o: (a: [Float], b: [Float], c: [Float])) -> [Float] {
            var c = o.c
            c.withUnsafeMutableBufferPointer { cp in
                sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: o.a, lda: lda,
                      b: o.b, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc)
            }
            return c
        }

        /// Σ_k |α·a·b| + |β·c| per element: both float results lie within about k ulps of it.
        func magnitude(_ o: (a: [Float], b: [Float], c: [Float])) -> [Double] {
            var out = [Double](repeating: 0, count: m * ldc)
            for i in 0..<m {
                for j in 0..<n {
                    var s = Double(beta) * Double(abs(o.c[i * ldc + j]))
                    for l in 0..<k {
                        let av = transA ? o.a[l * lda + i] : o.a[i * lda + l]
                        let bv = transB ? o.b[j * ldb + l] : o.b[l * ldb + j]
                        s += Double(abs(alpha * av * bv))
                    }
                    out[i * ldc + j] = s
                }
            }
            return out
        }

        /// LowRank against sgemm, elementwise within 2(k + 2) float epsilons of the magnitude
        /// (each result is within (k + 1)ε of the exact sum); the padding untouched.
        func check() {
            let o = operands()
            let got = lowRank(o, workers: 1), want = reference(o), mag = magnitude(o)
            var worst = 0.0, bad = 0
            for i in 0..<(m * ldc) {
                if i % ldc >= n {
                    if got[i] != LowRankTests.sentinel { bad += 1 }
                    continue
                }
                let err = abs(Double(got[i]) - Double(want[i])), bound = 2 * Double(k + 2) * Double(Float.ulpOfOne) * mag[i]
                worst = max(worst, err / max(bound, 1e-30))
                if !(err <= bound) { bad += 1 }
            }
            #expect(bad == 0, "\(self): \(bad) elements off (worst \(worst) of the bound), or padding written")
        }
    }

    /// The adapter's products for rank r (or a group's stacked r), a model dimension `wide` and
    /// `rows` tokens, with the strides, α and β the call sites use (and the other β too).
    static func adapterCases(r: Int, wide: Int, rows: Int, pad: Int) -> [Case] {
        [Case(transB: true, m: rows, n: r, k: wide, pad: pad),                       // xa = x·Aᵀ
         Case(m: rows, n: r, k: wide, alpha: 0.7, pad: pad),                          // mid = s·dy·B
         Case(transB: true, m: rows, n: wide, k: r, alpha: 1.9, beta: 1, pad: pad),   // y += s·xa·Bᵀ
         Case(transB: true, m: rows, n: wide, k: r, alpha: 1.9, beta: 0, pad: pad),
         Case(m: rows, n: wide, k: r, beta: 1, pad: pad),                              // dx += mid·A
         Case(m: rows, n: wide, k: r, beta: 0, pad: pad),                              // tmp = mid·A (dropout)
         Case(transA: true, m: r, n: wide, k: rows, beta: 1, pad: pad),                // dA += midᵀ·x
         Case(transA: true, m: wide, n: r, k: rows, alpha: 0.7, beta: 1, pad: pad)]   // dB += s·dyᵀ·xa
    }

    /// wide 45 and 300: under and over a chunk of output columns; 1100: several k-blocks of the
    /// packed panel even at rank 8.
    @Test("each adapter product against sgemm", arguments: ranks)
    func adapterProducts(r: Int) {
        for (wide, rows, pad) in [(45, 1, 0), (45, 37, 3), (300, 37, 5), (1100, 9, 0), (1100, 1, 2)] {
            for c in Self.adapterCases(r: r, wide: wide, rows: rows, pad: pad) { c.check() }
        }
    }

    @Test("every op(A) op(B), the small dimension m, n or k", arguments: [(false, false), (false, true), (true, false), (true, true)])
    func transposes(transA: Bool, transB: Bool) {
        for r in [3, 16, 32] {
            for (small, big) in [(0, 61), (1, 61), (2, 61)] {
                let dims = (0..<3).map { $0 == small ? r : big + 7 * $0 }
                Case(transA: transA, transB: transB, m: dims[0], n: dims[1], k: dims[2], alpha: 1.3, beta: 1, pad: 2).check()
                Case(transA: transA, transB: transB, m: dims[0], n: dims[1], k: dims[2], pad: 0).check()
            }
        }
    }

    @Test("one worker, two or three: the same bits, rows split or columns")
    func workersDoNotChangeBits() {
        // big enough that each product splits: rows (xa, y, dB) or column vectors (dA)
        for r in [3, 8, 24] {
            for c in Self.adapterCases(r: r, wide: 1200, rows: 150, pad: 1) {
                #expect(LowRank.parts(m: c.m, n: c.n, k: c.k, workers: 2) == 2, "\(c) does not split")
                let o = c.operands()
                let one = c.lowRank(o, workers: 1)
                for w in [2, 3] {
                    #expect(c.lowRank(o, workers: w).map(\.bitPattern) == one.map(\.bitPattern), "\(c), \(w) workers")
                }
            }
        }
    }

    /// mid = s·dy·B and dB += s·dyᵀ·xa: the fused pass (one worker) against the two products
    /// through LowRank.gemm (the bits) and sgemm (the tolerance), mid's rows strided as in a group.
    @Test("fused s·dy·B and dB: the bits of the two products apart", arguments: ranks)
    func fusedMidAndGradient(r: Int) {
        let s: Float = 0.7
        for (n, N, ldm, ldxa) in [(1, 45, r, r), (37, 300, r + 5, r + 3), (150, 1100, 3 * r, 2 * r)] {
            var g = SplitMix64(seed: UInt64(r * 100 + n))
            let dy = (0..<(n * (N + 2))).map { _ in g.normal() }, ldy = N + 2
            let b = (0..<(N * r)).map { _ in g.normal() }
            let xa = (0..<(n * ldxa)).map { _ in g.normal() }
            let g0 = (0..<(N * r)).map { _ in g.normal() }
            let mid0 = [Float](repeating: Self.sentinel, count: n * ldm)
            func fused(workers: Int) -> (mid: [Float], g: [Float]) {
                var mid = mid0, grad = g0
                mid.withUnsafeMutableBufferPointer { mp in
                    grad.withUnsafeMutableBufferPointer { gp in
                        LowRank.midAndGradient(mid: mp.baseAddress!, ldm: ldm, g: gp.baseAddress!, dy: dy, ldy: ldy, b: b,
                                               xa: xa, ldxa: ldxa, n: n, N: N, r: r, alpha: s, workers: workers)
                    }
                }
                return (mid, grad)
            }
            func apart(_ product: (FPtr, FPtr) -> Void) -> (mid: [Float], g: [Float]) {
                var mid = mid0, grad = g0
                mid.withUnsafeMutableBufferPointer { mp in
                    grad.withUnsafeMutableBufferPointer { gp in product(mp.baseAddress!, gp.baseAddress!) }
                }
                return (mid, grad)
            }
            let one = fused(workers: 1)
            let separate = apart { mid, grad in
                LowRank.gemm(m: n, n: r, k: N, alpha: s, a: dy, lda: ldy, b: b, ldb: r, c: mid, ldc: ldm, workers: 1)
                LowRank.gemm(transA: true, m: N, n: r, k: n, alpha: s, a: dy, lda: ldy, b: xa, ldb: ldxa, beta: 1,
                             c: grad, ldc: r, workers: 1)
            }
            #expect(one.mid.map(\.bitPattern) == separate.mid.map(\.bitPattern), "mid, n \(n), N \(N)")
            #expect(one.g.map(\.bitPattern) == separate.g.map(\.bitPattern), "dB, n \(n), N \(N)")
            let two = fused(workers: 2)
            #expect(two.mid.map(\.bitPattern) == one.mid.map(\.bitPattern) && two.g.map(\.bitPattern) == one.g.map(\.bitPattern),
                    "two workers, n \(n), N \(N)")
            let reference = apart { mid, grad in
                sgemm(m: n, n: r, k: N, alpha: s, a: dy, lda: ldy, b: b, ldb: r, c: mid, ldc: ldm)
                sgemm(transA: true, m: N, n: r, k: n, alpha: s, a: dy, lda: ldy, b: xa, ldb: ldxa, beta: 1, c: grad, ldc: r)
            }
            // within 2(k + 2)ε of Σ|terms| (Case.check's bound), the padding of mid untouched
            for i in 0..<n {
                for j in 0..<ldm {
                    let v = one.mid[i * ldm + j]
                    if j >= r { #expect(v == Self.sentinel); continue }
                    let mag = (0..<N).reduce(0.0) { $0 + Double(abs(s * dy[i * ldy + $1] * b[$1 * r + j])) }
                    #expect(abs(Double(v) - Double(reference.mid[i * ldm + j])) <= 2 * Double(N + 2) * Double(Float.ulpOfOne) * mag,
                            "mid[\(i), \(j)], n \(n), N \(N)")
                }
            }
            for c in 0..<N {
                for j in 0..<r {
                    let mag = (0..<n).reduce(Double(abs(g0[c * r + j]))) { $0 + Double(abs(s * dy[$1 * ldy + c] * xa[$1 * ldxa + j])) }
                    #expect(abs(Double(one.g[c * r + j]) - Double(reference.g[c * r + j])) <= 2 * Double(n + 2) * Double(Float.ulpOfOne) * mag,
                            "dB[\(c), \(j)], n \(n), N \(N)")
                }
            }
        }
    }

    /// gemm runs on the kernels only the adapter products with a narrow output (x·Aᵀ, s·dy·B,
    /// dB); the wide outputs (s·xa·Bᵀ, mid·A) and dA, and anything wider than maxWidth, give
    /// sgemm's own bits.
    @Test("gemm: the kernels for narrow outputs, sgemm's own bits for the rest")
    func routing() {
        for r in [8, 24, LowRank.maxWidth] {
            let cases = Self.adapterCases(r: r, wide: 300, rows: 37, pad: 1)
            #expect(cases.map { LowRank.takes(m: $0.m, n: $0.n, k: $0.k) } == [true, true, false, false, false, false, false, true])
        }
        let w = LowRank.maxWidth + 1
        for c in [Case(m: w, n: w + 2, k: w + 5, alpha: 0.5, beta: 1), Case(transB: true, m: 37, n: 300, k: 8, beta: 1),
                  Case(transA: true, m: 8, n: 300, k: 37, beta: 1)] {
            #expect(!LowRank.takes(m: c.m, n: c.n, k: c.k))
            let o = c.operands()
            var got = o.c
            got.withUnsafeMutableBufferPointer { cp in
                LowRank.gemm(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k, alpha: c.alpha, a: o.a, lda: c.lda,
                             b: o.b, ldb: c.ldb, beta: c.beta, c: cp.baseAddress!, ldc: c.ldc)
            }
            #expect(got.map(\.bitPattern) == c.reference(o).map(\.bitPattern), "\(c)")
        }
    }
}
