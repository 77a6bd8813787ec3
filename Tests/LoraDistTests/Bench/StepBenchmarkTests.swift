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

    @Test func baseIdentityCountsPast32Bits() {
        // llama-7b's frozen values: 6,738,415,616
        let s = BaseIdentity.describe(crc: 0xDEAD_BEEF, tensors: 291, values: 6_738_415_616)
        #expect(s == "crc32c:deadbeef over 291 frozen tensors (6738415616 values)")
    }
}
