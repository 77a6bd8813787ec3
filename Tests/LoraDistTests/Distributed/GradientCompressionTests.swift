import Foundation
import Testing
@testable import LoraDist

/// --grad-compression's pieces in one process: 16-bit rounding, and PowerSGD against torch's
/// own powerSGD_hook (Tests/Fixtures/powersgd, made by tools/make_powersgd_fixtures.py).
@Suite struct GradientCompressionTests {
    @Test func bf16RoundsToNearestEven() {
        let f = HalfFormat.bf16
        #expect(f.rounded(1) == 1)
        #expect(f.rounded(1 + 0x1p-8) == 1)                   // a tie: to the even neighbour, 1
        #expect(f.rounded(1 + 3 * 0x1p-8) == 1 + 0x1p-6)      // a tie: to the even neighbour above
        #expect(f.rounded(1 + 0x1p-8 + 0x1p-20) == 1 + 0x1p-7) // above the tie: up
        #expect(f.rounded(-3.1415927) == -3.140625)
        #expect(f.rounded(.infinity) == .infinity)
        #expect(f.rounded(.nan).isNaN)
        #expect(f.rounded(Float.greatestFiniteMagnitude) == .infinity)  // rounds up past bf16's largest
        #expect(HalfFormat.bf16Bits(1e-40) == UInt16(truncatingIfNeeded: (1e-40 as Float).bitPattern >> 16))  // subnormals kept
    }

    @Test func fp16RoundsToNearestEven() {
        let f = HalfFormat.fp16
        #expect(f.rounded(1 + 0x1p-11) == 1)                  // a tie: to even
        #expect(f.rounded(1 + 3 * 0x1p-11) == 1 + 0x1p-9)
        #expect(f.rounded(65504) == 65504)
        #expect(f.rounded(65520) == .infinity)                 // past fp16's range
        #expect(f.rounded(0x1p-24) == 0x1p-24)                 // the smallest subnormal
        #expect(f.rounded(0x1p-26) == 0)
    }

    /// The bit-arithmetic fp16 conversions give Swift's Float16 conversions' results: every
    /// half decoded; every half, the midpoints between neighbours (the ties) and one float ulp
    /// either side of them encoded; and a million random floats.
    @Test func fp16BitsMatchFloat16() {
        func same(_ x: Float) -> Bool {
            let ours = HalfFormat.fp16Bits(x), ref = Float16(x)
            return ref.isNaN ? Float16(bitPattern: ours).isNaN : ours == ref.bitPattern
        }
        var bad: [String] = []
        for bits in 0...UInt16.max {
            let h = Float16(bitPattern: bits), ours = HalfFormat.fp16Float(bits)
            if h.isNaN ? !ours.isNaN : ours.bitPattern != Float(h).bitPattern { bad.append("decode \(bits)") }
            guard h.isFinite, bits != 0x7BFF, bits != 0xFBFF else { continue }
            let x = Float(h), next = Float(Float16(bitPattern: bits + 1))
            if !next.isFinite { continue }
            let mid = (x + next) / 2                           // exact: a half has 11 significant bits
            for v in [x, mid, mid.nextUp, mid.nextDown] where !same(v) { bad.append("encode \(v)") }
        }
        var rng = SplitMix64(seed: 7)
        for _ in 0..<1_000_000 {
            let v = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            if !same(v) { bad.append("encode \(v)") }
        }
        let edges: [Float] = [65504, 65519.99, 65520, 1e9, .infinity, -.infinity, .nan, 0x1p-25, Float(0x1p-25).nextUp, -0.0]
        for v in edges where !same(v) {
            bad.append("encode \(v)")
        }
        let differences = bad.count, first = bad.prefix(5)
        #expect(differences == 0, "first: \(first)")
    }

    /// The fixture's tensors, in the fixture script's order.
    static let shapes: [(String, [Int])] = [("a", [32, 48]), ("b", [64, 16]), ("c", [8, 40]), ("d", [32]), ("e", [16, 3, 8])]

    /// Two PowerSGD rounds of torch's hook, with its first random Q, against ours: P, Q, the
    /// decompressed gradient and the error feedback of each round.
    @Test(arguments: [2, 4]) func powerSGDMatchesTorch(rank: Int) throws {
        let fx = try SafeTensors(path: TestPaths.fixtures + "/powersgd/powersgd.safetensors")
        var layout: [(offset: Int, shape: [Int])] = [], at = 0
        for (_, s) in Self.shapes { layout.append((at, s)); at += s.reduce(1, *) }
        let psgd = PowerSGD(shapes: layout, count: at, rank: rank, worldSize: 1, seed: 1)
        // Which tensors go compressed is torch's choice too: exactly those with a P in the fixture.
        for (i, (name, _)) in Self.shapes.enumerated() {
            #expect((psgd.matrices[i].rank > 0) == fx.names.contains("r\(rank).round1.\(name).P"), "\(name)")
        }
        #expect(psgd.matrices.filter { $0.rank > 0 }.count == (rank == 2 ? 4 : 3))
        // torch's first Q, before orthogonalisation (the hook orthogonalises it first, as ours does a warm Q).
        for (i, (name, _)) in Self.shapes.enumerated() where psgd.matrices[i].rank > 0 {
            let q0 = try fx.floats("r\(rank).q0.\(name)")
            q0.withUnsafeBufferPointer { (psgd.q.ptr + psgd.matrices[i].q).update(from: $0.baseAddress!, count: q0.count) }
        }
        psgd.hasQ = true
        let grads = FloatBuffer(at)
        for round in 1...2 {
            for (i, (name, _)) in Self.shapes.enumerated() {
                let g = try fx.floats("r\(rank).grad\(round).\(name)")
                g.withUnsafeBufferPointer { (grads.ptr + layout[i].offset).update(from: $0.baseAddress!, count: g.count) }
            }
            psgd.run(grads: grads.ptr) { _, _ in }  // one rank: the allreduces change nothing
            func check(_ what: String, _ ours: UnsafePointer<Float>, _ key: String) throws {
                let ref = try fx.floats(key)
                let err = (0..<ref.count).map { abs(ours[$0] - ref[$0]) }.max() ?? 0
                recordFixtureError("powersgd r\(rank) \(what)", err)
                #expect(err <= 1e-5, "round \(round) \(key): max |ours - torch| = \(err)")
            }
            for (i, (name, _)) in Self.shapes.enumerated() {
                let m = psgd.matrices[i], key = "r\(rank).round\(round).\(name)"
                if m.rank > 0 {
                    try check("P", psgd.p.ptr + m.p, key + ".P")
                    try check("Q", psgd.q.ptr + m.q, key + ".Q")
                }
                try check("gradient", grads.ptr + m.offset, key + ".out")
                try check("error", psgd.error.ptr + m.offset, key + ".err")
            }
        }
    }

    /// A zero gradient (LoRA's A before B moves) gives zero factors, where torch's Gram-Schmidt
    /// divides by a zero norm: no NaN reaches the weights.
    @Test func zeroGradientStaysFinite() {
        let psgd = PowerSGD(shapes: [(0, [40, 30])], count: 1200, rank: 2, worldSize: 2, seed: 3)
        let g = FloatBuffer(1200)
        psgd.run(grads: g.ptr) { _, _ in }
        #expect(g.array.allSatisfy { $0 == 0 })
        #expect(psgd.error.array.allSatisfy { $0 == 0 })
    }
}
