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

    @Test func yardstickIsTheMedianOfItsSamples() {
        #expect(StepBenchmark.median([3, 1, 2]) == 2)
        #expect(StepBenchmark.median([4, 1, 3, 2]) == 2.5)
        var r = StepBenchmark()
        r.ranks = 1; r.stepMs = 1000; r.sgemmSamples = [150, 180, 120]; r.sgemmGflops = 150
        #expect(r.report.contains("(1024³ on every rank at once, same run, median of 3 between the steps, 120-180)"), "\(r.report)")
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

extension StepBenchmarkTests {
    @Suite("bench step's sgemm shapes, in a process of its own", .serialized, .tags(.cli))
    struct CLI {
        /// With one thread every sgemm call runs on the main thread, which the profile records:
        /// the listed shapes times their calls give exactly the FLOPs the step counted, and their
        /// milliseconds add up to the sgemm section's. Under LoRA the adapter's products are
        /// listed as LowRank's (marked "lowrank"), under full fine-tuning none is.
        @Test("the shapes account for every sgemm FLOP and millisecond of the step", arguments: ["full", "lora"])
        func shapesAccountForTheStep(mode: String) throws {
            var env = cleanEnvironment()
            env["LORA_DIST_CALIBRATION"] = TestPaths.tempDir("shapes") + "/cal.json"
            let (status, out, err) = try runProcess(TestPaths.binary, ["bench", "step", "--model", "tiny", "--steps", "1", "--mode", mode,
                                                                       "--targets", "all-linear", "--batch", "2", "--seq", "128",
                                                                       "--threads", "1", "--shapes", "1000", "--json"], env: env)
            try #require(status == 0, "\(err)")
            let lines = out.split(separator: "\n").map(String.init)
            let counted = try #require(lines.first { $0.hasPrefix("sgemm FLOPs per step:") }.flatMap { Double($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) })
            let section = try #require(lines.first { $0.hasPrefix("  sgemm ") }.flatMap { Double($0.split(separator: " ", omittingEmptySubsequences: true)[1]) })
            // rows under "ms share calls GFLOP/s of yardstick shape": ms, share %, calls, GFLOP/s, pct %, m × n × k, op
            // and, for LowRank's, the kernel: the fused pass counts two products' FLOPs
            let rows = lines.compactMap { line -> (ms: Double, calls: Double, flops: Double, kernel: String)? in
                let f = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
                guard f.count == 13 || f.count == 14, f[8] == "×", f[10] == "×", let ms = Double(f[0]), let calls = Double(f[3]),
                      let m = Double(f[7]), let n = Double(f[9]), let k = Double(f[11]) else { return nil }
                let kernel = f.count == 14 ? f[13] : "sgemm"
                return (ms, calls, (kernel == "lowrank-mid+dB" ? 4 : 2) * m * n * k * calls, kernel)
            }
            try #require(rows.count >= 5, "\(out)")
            #expect(!out.contains("other shapes"), "all shapes listed: \(out)")
            #expect(rows.reduce(0) { $0 + $1.flops } == counted, "\(out)")
            let ms = rows.reduce(0) { $0 + $1.ms }
            #expect(abs(ms - section) <= 0.05 * Double(rows.count) + 0.05, "shapes \(ms) ms, sgemm section \(section) ms")
            let kernels = Set(rows.map(\.kernel))
            #expect(kernels.isSubset(of: ["sgemm", "lowrank", "lowrank-mid+dB"]), "\(kernels)")
            if mode == "lora" {
                #expect(kernels.contains("lowrank") && kernels.contains("lowrank-mid+dB"), "\(out)")
            } else {
                #expect(kernels == ["sgemm"], "\(out)")
            }
            let json = try #require(lines.last.flatMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
            let listed = try #require(json["sgemm_shapes"] as? [[String: Any]])
            #expect(listed.count == rows.count)
            let jsonFlops = listed.reduce(0.0) { $0 + (($1["calls"] as? Double) ?? 0) * Double(($1["flops"] as? Int) ?? 0) }
            #expect(jsonFlops == counted, "JSON's shapes: \(jsonFlops) FLOPs, counted \(counted)")
            // the yardstick sampled before the one timed step and after it (and, as the shapes
            // above show, kept out of the step's profile); its figure is their median
            let samples = try #require(json["sgemm_gflops_samples"] as? [Double])
            #expect(samples.count == 2 && samples.allSatisfy { $0 > 0 }, "\(samples)")
            // (to 1e-12: the JSON text rounds each number apart, so their mean may move by an ulp)
            let yardstick = try #require(json["sgemm_gflops"] as? Double)
            #expect(abs(yardstick - (samples[0] + samples[1]) / 2) <= 1e-12 * yardstick, "\(yardstick), \(samples)")
        }
    }
}
