import Foundation
import Testing
@testable import LoraDist

/// `lora-dist plan`'s model: its FLOP count is what the trainer actually sends to
/// sgemm; its byte count is the exchange's; its answers move the right way.
@Suite(.serialized) struct PlanTests {
    /// The planner's closed form against the FLOPs counted in a real step (`bench step`
    /// runs in its own process, so no other test's sgemm calls are counted).
    @Test("the FLOP model equals the FLOPs a step sends to sgemm",
          arguments: [("full", "all-linear", 128), ("lora", "q_proj,v_proj", 128), ("lora", "all-linear", 64), ("full", "all-linear", 200)])
    func flops(mode: String, targets: String, seq: Int) throws {
        let cal = TestPaths.tempDir("plan") + "/cal.json"
        var env = cleanEnvironment()
        env["LORA_DIST_CALIBRATION"] = cal
        let (status, out, err) = try runProcess(TestPaths.binary, ["bench", "step", "--model", "tiny", "--steps", "1", "--mode", mode,
                                                                   "--targets", targets, "--rank", "4", "--batch", "2", "--seq", "\(seq)"], env: env)
        try #require(status == 0, "\(err)")
        let line = try #require(out.split(separator: "\n").first { $0.hasPrefix("sgemm FLOPs per step:") })
        let counted = try #require(Double(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)))
        var p = Planner(config: ModelConfig.builtIn["tiny"]!, lora: try LoRAConfig(rank: 4, alpha: 8, targets: [targets]))
        p.batch = 2
        p.seqLen = seq
        let predicted = p.flops(lora: mode == "lora")
        #expect(abs(predicted - counted) <= 1e-9 * counted, "predicted \(predicted), counted \(counted)")
        // and bench saved its rate for plan
        let saved = Calibration.load(path: cal)
        #expect((saved.compute[mode]?.gflopsPerCore ?? 0) > 0)
    }

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
}
