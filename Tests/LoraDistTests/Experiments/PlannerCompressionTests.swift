import Foundation
import Testing
@testable import LoraDist

/// `plan --compressed`: the model of full fine-tuning with compressed gradients sends what the
/// exchange sends.
@Suite struct PlannerCompressionTests {
    func planner(_ exchange: ExchangeStrategy) throws -> Planner {
        var p = Planner(config: ModelConfig.builtIn["small"]!, lora: try LoRAConfig(rank: 8, alpha: 16, targets: ["all-linear"]))
        p.calibration.compute["full"] = .init(gflopsPerCore: 20, model: "test", threads: 1, measured: "")
        p.calibration.compute["lora"] = .init(gflopsPerCore: 20, model: "test", threads: 1, measured: "")
        p.ranksPerNode = 4; p.coresPerNode = 8; p.nodes = 4; p.bandwidthGbit = 1; p.exchange = exchange
        return p
    }

    static func method(_ m: GradCompression, rank: Int = 4) -> CompressionOptions {
        var c = CompressionOptions()
        c.method = m
        c.powerSGDRank = rank
        return c
    }

    @Test func bf16HalvesWhatCrossesTheWire() throws {
        let flat = try planner(.flat), hier = try planner(.hierarchical)
        let f = try flat.estimate(lora: false), fb = try flat.estimate(full: Self.method(.bf16))
        #expect(abs(fb.exchangeBytes - f.exchangeBytes / 2) <= 8)
        #expect(fb.exchangeSeconds < f.exchangeSeconds)
        let h = try hier.estimate(lora: false), hb = try hier.estimate(full: Self.method(.bf16))
        let b = GradientExchange.bytesPerStep(strategy: .hierarchical, elements: h.trainable, worldSize: 16, localSize: 4, nodes: 4)
        // the node's reduce-scatter stays fp32; the cross-node allreduce halves
        #expect(abs(hb.exchangeBytes - (b.intra + b.inter / 2)) <= 8)
        #expect(hb.mode == "full+bf16" && hb.computeSeconds == h.computeSeconds)
    }

    /// The floats PowerSGD's model counts are those a PowerSGD of the same tensors allreduces.
    @Test(arguments: [1, 4, 16, 64]) func powerSGDFloatsAreTheCompressorsOwn(rank: Int) throws {
        let specs = try LlamaModel.specs(config: ModelConfig.builtIn["small"]!, lora: nil).filter(\.trainable)
        var layout: [(offset: Int, shape: [Int])] = [], at = 0
        for s in specs { layout.append((at, s.shape)); at += s.count }
        let psgd = PowerSGD(shapes: layout, count: at, rank: rank, worldSize: 4, seed: 1)
        let n = psgd.allreducedCounts
        #expect(PowerSGD.floats(shapes: specs.map(\.shape), rank: rank).floats == n.uncompressed + n.p + n.q)
        let p = try planner(.flat)
        let e = try p.estimate(full: Self.method(.powersgd, rank: rank)), full = try p.estimate(lora: false)
        let b = GradientExchange.bytesPerStep(strategy: .flat, elements: n.uncompressed + n.p + n.q, worldSize: 16, localSize: 4, nodes: 4)
        #expect(e.exchangeBytes == b.intra + b.inter)
        #expect(e.exchangeBytes < full.exchangeBytes)
        #expect(e.computeSeconds > full.computeSeconds)  // its products run on every rank
    }

    /// The memory fit counts the exchange's buffers: PowerSGD's error feedback, M's copy and
    /// factors, bf16's 16-bit copies, on every rank.
    @Test func memoryCountsTheExchangesBuffers() throws {
        let config = ModelConfig.builtIn["small"]!
        func need(_ m: GradCompression) throws -> MemoryNeed {
            try MemoryNeed(config: config, lora: nil, ranksPerNode: 4, maxBatch: 2, seqLen: 64, training: true,
                           exchangeFloatsPerTrainable: m.extraFloatsPerTrainable)
        }
        let trainable = Double(try LlamaModel.specs(config: config, lora: nil).filter(\.trainable).reduce(0) { $0 + $1.count })
        let none = try need(.none), bf16 = try need(.bf16), psgd = try need(.powersgd)
        #expect(bf16.perRank - none.perRank == 4 * trainable)
        #expect(psgd.perRank - none.perRank == 12 * trainable)
        #expect(psgd.perNode - none.perNode == 4 * 12 * trainable)
        let p = try planner(.flat)
        #expect(try p.estimate(full: Self.method(.powersgd)).memoryPerNode - p.estimate(lora: false).memoryPerNode == 4 * 12 * trainable)
    }
}
