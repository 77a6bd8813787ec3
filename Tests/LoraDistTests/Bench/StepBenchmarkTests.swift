import Foundation
import Testing
@testable import LoraDist

/// Counts past 2^32 print whole: SmolLM2 at 4 × 512 sends about 1.16e12 FLOPs to sgemm per step,
/// which a 32-bit conversion printed as "-155189248".
@Suite struct StepBenchmarkTests {
    @Test func reportPrintsCountsPast32Bits() {
        var r = StepBenchmark()
        r.ranks = 1; r.threads = 2; r.replicas = 2
        r.tokensPerStep = 5_000_000_000
        r.flopsPerStep = 1_163_764_154_368
        r.allocatedBytes = 6_000_000_000
        r.stepMs = 1000; r.sgemmGflops = 100
        let text = r.report
        #expect(text.contains("sgemm FLOPs per step: 1163764154368"), "\(text)")
        #expect(text.contains("5000000000 tokens/step"), "\(text)")
        #expect(text.contains("allocated 6000000000 bytes"), "\(text)")
        #expect(text.contains("1163.76 GFLOP/step"), "\(text)")
        #expect(text.range(of: "-[0-9]", options: .regularExpression) == nil, "a negative count: \(text)")
    }

    /// The profile times sgemm by shape on the main thread (where the breakdown is recorded);
    /// the shapes' seconds add up to the sgemm section's.
    @Test @MainActor func sgemmTimedByShape() {
        let a = FloatBuffer(64 * 32), b = FloatBuffer(32 * 16), c = FloatBuffer(64 * 32)
        Profile.reset()
        Profile.enabled = true
        for _ in 0..<3 { sgemm(m: 64, n: 16, k: 32, a: a.ptr, lda: 32, b: b.ptr, ldb: 16, c: c.ptr, ldc: 16) }
        sgemm(transA: true, m: 32, n: 16, k: 64, a: a.ptr, lda: 32, b: c.ptr, ldb: 16, c: b.ptr, ldc: 16)
        Profile.enabled = false
        let nn = Profile.GemmShape(transA: false, transB: false, m: 64, n: 16, k: 32)
        let tn = Profile.GemmShape(transA: true, transB: false, m: 32, n: 16, k: 64)
        let gemms = Profile.gemms, total = Profile.seconds(.sgemm)
        Profile.reset()
        #expect(gemms.count == 2 && gemms[nn]?.calls == 3 && gemms[tn]?.calls == 1, "\(gemms)")
        let byShape = gemms.values.reduce(0) { $0 + $1.seconds }
        #expect(byShape > 0 && byShape >= total, "by shape \(byShape) s, section \(total) s")
        #expect(nn.description == "64 × 16 × 32 NN" && tn.description == "32 × 16 × 64 TN")
    }

    @Test func reportListsShapesAndSumsTheRest() {
        var r = StepBenchmark()
        r.ranks = 1; r.threads = 2; r.replicas = 2; r.stepMs = 1000; r.sgemmGflops = 100
        let shape = { (m: Int, n: Int, k: Int) in Profile.GemmShape(transA: false, transB: true, m: m, n: n, k: k) }
        // 2·1024·1024·1024 FLOPs in 43 ms: 50 GFLOP/s, 100 % of one thread's half of the yardstick
        r.gemmShapes = [(shape(1024, 1024, 1024), 1, 42.95), (shape(64, 8, 64), 10, 2), (shape(8, 8, 8), 4, 1)]
        r.shownShapes = 1
        let text = r.report
        #expect(text.contains("yardstick 50.0 GFLOP/s per call"), "\(text)")
        #expect(text.contains("1024 × 1024 × 1024 NT"), "\(text)")
        #expect(text.range(of: "50\\.0 +100 %", options: .regularExpression) != nil, "\(text)")
        #expect(text.contains("2 other shapes") && !text.contains("64 × 8 × 64"), "\(text)")
        #expect(text.contains("     3.0    6.5 %      14"), "\(text)")
    }

    @Test func baseIdentityCountsPast32Bits() {
        // llama-7b's frozen values: 6,738,415,616
        let s = BaseIdentity.describe(crc: 0xDEAD_BEEF, tensors: 291, values: 6_738_415_616)
        #expect(s == "crc32c:deadbeef over 291 frozen tensors (6738415616 values)")
    }
}
