import Foundation
import Testing
@testable import LoraDist

/// LlamaModel.workingFloats (what MemoryNeed, and so the fit check and `plan`, count) against
/// what a built model really holds: every FloatBuffer reachable from it, found by reflection,
/// the weights aside.
@Suite struct ModelMemoryTests {
    /// Σ count of the distinct FloatBuffers reachable from `root`.
    static func allocatedFloats(_ root: Any) -> Int {
        var seen = Set<ObjectIdentifier>()
        var total = 0
        func visit(_ x: Any) {
            if let b = x as? FloatBuffer {
                if seen.insert(ObjectIdentifier(b)).inserted { total += b.count }
                return
            }
            let m = Mirror(reflecting: x)
            if m.displayStyle == .class {
                guard seen.insert(ObjectIdentifier(x as AnyObject)).inserted else { return }
            }
            var mirror: Mirror? = m
            while let current = mirror {
                for child in current.children { visit(child.value) }
                mirror = current.superclassMirror
            }
        }
        visit(root)
        return total
    }

    static let qwen3Like = ModelConfig(family: .qwen3, vocabSize: 300, hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 3,
                                       numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, maxPositionEmbeddings: 256, tieWordEmbeddings: true,
                                       qkNorm: true, bosTokenId: 1, eosTokenId: 2)

    @Test(arguments: ["lora", "lora-dropout", "qlora", "full", "qwen3"], [false, true])
    func workingFloatsMatchTheBuffers(_ kind: String, recompute: Bool) throws {
        var config = ModelConfig.builtIn["tiny"]!
        var lora: LoRAConfig? = try LoRAConfig(rank: 4, alpha: 8, targets: ["all-linear"])
        var nf4 = false
        switch kind {
        case "lora-dropout": lora = try LoRAConfig(rank: 2, alpha: 4, dropout: 0.1, targets: ["q_proj", "down_proj"])
        case "qlora": nf4 = true
        case "full": lora = nil
        case "qwen3": config = Self.qwen3Like
        default: break
        }
        for (batch, seq) in [(1, 8), (3, 40), (2, 130)] {
            let weights = FloatBuffer(try LlamaModel.specs(config: config, lora: lora, nf4Base: nf4).reduce(0) { $0 + $1.slots })
            let lanes = batch  // attention's lanes, each with its scratch: 1, 3 and 2
            let model = try LlamaModel(config: config, lora: lora, nf4Base: nf4, maxBatch: batch, seqLen: seq,
                                       recompute: recompute, allocate: { _ in weights.ptr }, attentionLanes: lanes)
            let estimate = try LlamaModel.workingFloats(config: config, lora: lora, nf4Base: nf4, maxBatch: batch, seqLen: seq,
                                                        recompute: recompute, attentionLanes: lanes)
            #expect(estimate == Double(Self.allocatedFloats(model)), "\(kind) batch \(batch) seq \(seq) recompute \(recompute)")
        }
    }

    /// Recompute keeps one layer's activations instead of every layer's: with the tiny model's
    /// layers at seq 512, far less.
    @Test func recomputeHoldsOneLayer() throws {
        let tiny = ModelConfig.builtIn["tiny"]!
        let with = try LlamaModel.workingFloats(config: tiny, lora: nil, maxBatch: 4, seqLen: 512, recompute: true)
        let without = try LlamaModel.workingFloats(config: tiny, lora: nil, maxBatch: 4, seqLen: 512)
        #expect(with < without && tiny.numHiddenLayers > 1)
    }

    @Test func needAddsUpAndRefuses() throws {
        let tiny = ModelConfig.builtIn["tiny"]!
        let lora = try LoRAConfig(rank: 4, alpha: 8, targets: ["all-linear"])
        let one = try MemoryNeed(config: tiny, lora: lora, ranksPerNode: 1, maxBatch: 4, seqLen: 64, training: true)
        let four = try MemoryNeed(config: tiny, lora: lora, ranksPerNode: 4, maxBatch: 4, seqLen: 64, training: true)
        // alone on its node a rank's shard is its whole gradient: no reduced copy (GradientExchange.reduced)
        let trainable = Double(try LlamaModel.specs(config: tiny, lora: lora).filter(\.trainable).reduce(0) { $0 + $1.count })
        #expect(four.weights == one.weights && four.perNode == one.perNode + 3 * one.perRank + 4 * trainable)
        let flat = try MemoryNeed(config: tiny, lora: lora, ranksPerNode: 4, maxBatch: 4, seqLen: 64, training: true, exchange: .flat)
        #expect(flat.perNode == one.perNode + 3 * one.perRank)
        #expect(one.perNode > one.weights + MemoryNeed.runtimeBytesPerRank)
        try one.check(available: one.perNode)
        try one.check(available: nil)
        #expect(throws: LoraDistError.self) { try one.check(available: one.perNode - 1) }
        // sizes whose element counts overflow an Int are measured, not trapped on
        let huge = try MemoryNeed(config: ModelConfig.builtIn["small"]!, lora: lora, ranksPerNode: 2, maxBatch: 1_000_000,
                                  seqLen: 1 << 20, training: true)
        #expect(huge.perNode > 1e15)
        do { try huge.check(available: 24 * 1_073_741_824.0) } catch let e as LoraDistError {
            #expect(e.message.hasPrefix("this job needs "), "\(e.message)")
            #expect(e.message.contains("per node, the node has 24.0 GiB available"), "\(e.message)")
        }
        #expect(NodeMemory.availableBytes().map { $0 > 0 } ?? true)
    }

    /// MemoryNeed's models against a LoadedModel's: the rank's model and its replicas, each sized
    /// for its part of the pass.
    @Test(arguments: [1, 2, 3])
    func needCountsTheLoadedModels(replicas: Int) throws {
        var o = LoadedModel.Options()
        o.model = "tiny"; o.mode = .full; o.lora = nil; o.seqLen = 24; o.maxBatch = 5; o.replicas = replicas; o.threads = 2
        let loaded = try LoadedModel(o, cluster: TestCluster.shared)
        let per = (5 + replicas - 1) / replicas
        #expect(([loaded.model] + loaded.replicas).map(\.maxBatch) == Array(repeating: per, count: replicas))
        let need = try MemoryNeed(config: loaded.config, lora: nil, ranksPerNode: 1, maxBatch: 5, replicas: replicas, seqLen: 24,
                                  training: false, threads: 2)  // one model alone runs attention on both threads
        let models = (need.perRank - MemoryNeed.runtimeBytesPerRank) / 4 - 2 * 5 * 24  // less the batch's token buffers
        #expect(models == Double(Self.allocatedFloats([loaded.model] + loaded.replicas)), "replicas \(replicas)")
    }

    /// MemoryNeed.sharded against what a trainer holds beyond its models: AdamW's two moments,
    /// and the hierarchical exchange's reduced shard only with more than one rank on the node.
    @Test(arguments: [ExchangeStrategy.hierarchical, .flat])
    func shardedIsTheOptimizerAndExchange(_ exchange: ExchangeStrategy) throws {
        let data = try writeCorpus("memory-sharded") { "Line \($0): some text." }
        var o = TrainOptions()
        o.mode = .full; o.model = "tiny"; o.data = data; o.steps = 1; o.batch = 2; o.seqLen = 16; o.quiet = true
        o.exchange = exchange; o.runDir = TestPaths.tempDir("memory-sharded-run")
        let t = try makeTrainer(o)
        #expect(t.cluster.node.size == 1 && t.exchange.reduced == nil)
        let need = try MemoryNeed(config: t.loaded.config, lora: nil, ranksPerNode: t.cluster.node.size, maxBatch: 2, seqLen: 16,
                                  training: true, exchange: exchange)
        #expect(need.sharded == 4 * Double(t.optimizer.m.count + t.optimizer.v.count + (t.exchange.reduced?.count ?? 0)))
    }
}
