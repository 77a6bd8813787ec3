import Foundation
import Testing
@testable import LoraDist

/// `lora-dist plan`'s model: its FLOP count is what the trainer actually sends to
/// sgemm; its byte count is the exchange's; its answers move the right way.
@Suite(.serialized) struct PlanTests {
    @Test("plan: bytes as the exchange counts them, LoRA cheaper, more nodes → less compute per step")
    func estimates() throws {
        var p = Planner(config: ModelConfig.builtIn["llama-7b"]!, lora: try LoRAConfig(rank: 8, alpha: 16, targets: ["all-linear"]))
        p.calibration.compute["full"] = .init(gflopsPerCore: 20, model: "test", threads: 1, measured: "")
        p.calibration.compute["lora"] = .init(gflopsPerCore: 20, model: "test", threads: 1, measured: "")
        p.ranksPerNode = 8; p.coresPerNode = 32; p.batch = 64; p.seqLen = 512
        p.nodes = 8
        let lora = try p.estimate(lora: true), full = try p.estimate(lora: false)
        let b = GradientExchange.bytesPerStep(strategy: .hierarchical, elements: full.trainable, worldSize: 64, localSize: 8, nodes: 8)
        #expect(full.exchangeBytes == b.intra + b.inter)
        #expect(lora.exchangeBytes < full.exchangeBytes / 100)
        #expect(lora.exchangeSeconds < full.exchangeSeconds)
        #expect(lora.computeSeconds < full.computeSeconds)
        #expect(lora.memoryPerNode < full.memoryPerNode)
        #expect(full.memoryPerNode > 4 * Double(full.total))  // one copy of the weights per node, plus more
        p.nodes = 16
        #expect(try p.estimate(lora: false).computeSeconds < full.computeSeconds)
        if let bound = full.exchangeBoundAt, let loraBound = lora.exchangeBoundAt { #expect(loraBound > bound) }
        #expect(full.exchangeBoundAt != nil)
    }

    /// The case: llama-7b, 32 ranks on a 64-core node, 64 × 2048 tokens. As given it needs
    /// terabytes; on a 256 GiB node the plan proposes the largest micro-batch that fits, with
    /// recompute only when no micro-batch fits without it.
    @Test("plan proposes the largest micro-batch (and recompute) that fits the node")
    func largestFit() throws {
        var p = Planner(config: ModelConfig.builtIn["llama-7b"]!, lora: try LoRAConfig(rank: 8, alpha: 16, targets: ["all-linear"]))
        p.calibration.compute["lora"] = .init(gflopsPerCore: 20, model: "test", threads: 1, measured: "")
        p.calibration.compute["full"] = .init(gflopsPerCore: 20, model: "test", threads: 1, measured: "")
        p.ranksPerNode = 32; p.coresPerNode = 64; p.batch = 64; p.seqLen = 2048
        let room = 256.0 * 1_073_741_824
        p.nodeMemory = room
        let e = try p.estimate(lora: true)
        #expect(e.memoryPerNode > 1e12 && e.microBatch == 2)
        let fit = try #require(e.fit)
        #expect(fit.memoryPerNode <= room)
        #expect(try p.memoryPerNode(lora: true, micro: 1, recompute: false) > room)  // so recompute is needed
        #expect(fit.recompute && fit.microBatch >= 1 && fit.microBatch <= 2)
        if fit.microBatch < 2 { #expect(try p.memoryPerNode(lora: true, micro: fit.microBatch + 1, recompute: true) > room) }
        // the plan with the proposal fits, and its step does more FLOPs (the recomputed forwards)
        p.microBatch = fit.microBatch; p.recompute = fit.recompute
        let planned = try p.estimate(lora: true)
        #expect(planned.memoryPerNode == fit.memoryPerNode && planned.flopsPerStep > e.flopsPerStep)
        // a node too small for anything
        p.nodeMemory = 1e9
        #expect(try p.estimate(lora: true).fit == nil)
        // a large node: the whole share fits without recompute
        p.nodeMemory = 1e15
        #expect(try p.estimate(lora: true).fit == Planner.Fit(microBatch: 2, recompute: false,
                                                              memoryPerNode: try p.memoryPerNode(lora: true, micro: 2, recompute: false)))
    }
}

/// `bench step` in a process of its own.
extension PlanTests {
    @Suite("plan against the binary", .serialized, .tags(.cli))
    struct CLI {
        /// The planner's closed form against the FLOPs counted in a real step (`bench step`
        /// runs in its own process, so no other test's sgemm calls are counted).
        @Test("the FLOP model equals the FLOPs a step sends to sgemm",
              arguments: [("full", "all-linear", 128, false), ("lora", "q_proj,v_proj", 128, false), ("lora", "all-linear", 64, false),
                          ("full", "all-linear", 200, false), ("full", "all-linear", 100, true), ("lora", "all-linear", 64, true)])
        func flops(mode: String, targets: String, seq: Int, recompute: Bool) throws {
            let cal = TestPaths.tempDir("plan") + "/cal.json"
            var env = cleanEnvironment()
            env["LORA_DIST_CALIBRATION"] = cal
            let (status, out, err) = try runProcess(TestPaths.binary, ["bench", "step", "--model", "tiny", "--steps", "1", "--mode", mode,
                                                                       "--targets", targets, "--rank", "4", "--batch", "2", "--seq", "\(seq)"]
                                                  + (recompute ? ["--recompute"] : []), env: env)
            try #require(status == 0, "\(err)")
            let line = try #require(out.split(separator: "\n").first { $0.hasPrefix("sgemm FLOPs per step:") })
            let counted = try #require(Double(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)))
            var p = Planner(config: ModelConfig.builtIn["tiny"]!, lora: try LoRAConfig(rank: 4, alpha: 8, targets: [targets]))
            p.batch = 2
            p.seqLen = seq
            p.recompute = recompute
            let predicted = p.flops(lora: mode == "lora")
            #expect(abs(predicted - counted) <= 1e-9 * counted, "predicted \(predicted), counted \(counted)")
            // and bench saved its rate for plan
            let saved = Calibration.load(path: cal)
            #expect((saved.compute[mode]?.gflopsPerCore ?? 0) > 0)
        }

        @Test("plan on a machine with no calibration measures one in seconds, says so, keeps it; an error prints nothing else")
        func calibratesItself() throws {
            let dir = TestPaths.tempDir("plan-fresh")
            var env = cleanEnvironment()
            env["LORA_DIST_CALIBRATION"] = dir + "/calibration.json"
            let t0 = Date()
            let (status, out, err) = try runProcess(TestPaths.binary, ["plan", "--model", "bench", "--nodes", "4"], env: env)
            let seconds = Date().timeIntervalSince(t0)
            try #require(status == 0, "\(err)")
            let lines = out.split(separator: "\n").map(String.init)
            #expect(lines.first?.hasPrefix("no calibration at \(dir)/calibration.json: calibrated itself in") == true, "\(out)")
            #expect(lines.filter { $0.contains("calibrated itself") }.count == 1)
            #expect(lines.contains { $0.hasPrefix("compute: full ") && $0.contains("plan's quick calibration") }, "\(out)")
            #expect(lines.filter { $0.hasPrefix("    4  ") }.count == 2, "\(out)")   // a LoRA and a full row
            #expect(seconds < 60, "plan took \(seconds) s")
            let saved = Calibration.load(path: dir + "/calibration.json")
            #expect((saved.compute["full"]?.gflopsPerCore ?? 0) > 0 && (saved.compute["lora"]?.gflopsPerCore ?? 0) > 0)
            // the second time it uses what it saved
            let (status2, out2, _) = try runProcess(TestPaths.binary, ["plan", "--model", "bench", "--nodes", "4"], env: env)
            #expect(status2 == 0 && !out2.contains("calibrated itself"), "\(out2)")
            // errors: one line on stderr, nothing on stdout (the table's header used to come first)
            try "{ not json".write(toFile: dir + "/broken.json", atomically: true, encoding: .utf8)
            var broken = env
            broken["LORA_DIST_CALIBRATION"] = dir + "/broken.json"
            for (args, e) in [(["plan", "--model", "bench", "--node-counts", "4,x"], env), (["plan", "--model", "no-such-model"], env),
                              (["plan", "--model", "bench"], broken)] {
                let (s, o, er) = try runProcess(TestPaths.binary, args, env: e)
                #expect(s == 1 && o.isEmpty, "\(args): stdout \(o)")
                #expect(er.split(separator: "\n").count == 1 && er.hasPrefix("lora-dist: error: "), "\(args): \(er)")
            }
        }
    }
}
