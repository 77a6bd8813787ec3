import Foundation

/// What a model loaded on a node's ranks takes of the node's memory, estimated from the
/// shapes before anything is allocated: `LoadedModel` refuses a job that does not fit, and
/// `plan` (Planner) prints the same figure.
///
/// - weights: one copy per node (the shared window), in fp32 slots (NF4 bytes included);
/// - per rank: each model's gradient, saved activations, logits (V floats per row) and scratch
///   (`LlamaModel.workingFloats`) — the rank's model and each replica sized for its part of the
///   micro-batch — the batch's token buffers, and the runtime;
/// - training: AdamW's two moments of the trainable set, and under the hierarchical exchange
///   with more than one rank on a node its reduced gradient, split among the node's ranks (each
///   holds the shard it owns; GradientExchange.reduced).
public struct MemoryNeed {
    /// Bytes of the shared weights, once per node.
    public var weights = 0.0
    /// Bytes each rank adds: its models' working sets, batch buffers, runtime.
    public var perRank = 0.0
    /// Bytes of optimizer state (and reduced gradient), per node (its ranks' shards together).
    public var sharded = 0.0
    public var ranksPerNode = 1
    /// Tokens one forward pass of a rank's model holds (micro-batch × sequence length).
    public var tokensPerPass = 0

    /// What a rank's process takes before any model: Swift and MPI runtimes, OpenBLAS buffers.
    public static let runtimeBytesPerRank = 30e6

    public var perNode: Double { weights + sharded + Double(ranksPerNode) * perRank }

    /// `maxBatch` sequences of `seqLen` tokens per forward pass of a rank, split over
    /// `replicas` models (the rank's own and replicas − 1 more) on the rank's `threads` (a model
    /// alone runs attention on all of them, each with its own scratch); `training` adds the
    /// optimizer's state and, for `exchange`, the reduced gradient.
    /// `exchangeFloatsPerTrainable`: what the gradient exchange keeps per rank beyond the
    /// gradient, per trainable value (GradCompression.extraFloatsPerTrainable).
    public init(config: ModelConfig, lora: LoRAConfig?, nf4Base: Bool = false, ranksPerNode: Int, maxBatch: Int,
                replicas: Int = 1, seqLen: Int, training: Bool, recompute: Bool = false, threads: Int = 1,
                exchange: ExchangeStrategy = .hierarchical, exchangeFloatsPerTrainable: Double = 0) throws {
        let specs = try LlamaModel.specs(config: config, lora: lora, nf4Base: nf4Base)
        let trainable = Double(specs.filter(\.trainable).reduce(0) { $0 + $1.count })
        weights = 4 * Double(specs.reduce(0) { $0 + $1.slots })
        // r models of the same size (LoadedModel: the rank's own and r − 1 replicas)
        let r = max(1, min(replicas, maxBatch))
        let model = try LlamaModel.workingFloats(config: config, lora: lora, nf4Base: nf4Base, maxBatch: (maxBatch + r - 1) / r,
                                                 seqLen: seqLen, recompute: recompute,
                                                 attentionLanes: ThreadBudget(threads: threads, replicas: r).blasThreadsPerReplica)
        let tokens = 2 * Double(maxBatch) * Double(seqLen)  // inputs and targets, Int32
        // QLoRA replicas share NF4Matmul.TileShare's buffers instead of one dequantization tile each.
        let tiles = nf4Base && r > 1 ? Double(NF4Matmul.TileShare.slots - r) * Double(NF4Matmul.Scratch.floats(config: config)) : 0
        perRank = 4 * (Double(r) * model + tiles + tokens + exchangeFloatsPerTrainable * trainable)
            + Self.runtimeBytesPerRank
        let reduced = exchange == .hierarchical && ranksPerNode > 1 ? 1.0 : 0
        sharded = training ? 4 * (2 + reduced) * trainable : 0
        self.ranksPerNode = ranksPerNode
        tokensPerPass = maxBatch * seqLen
    }

    /// The need of an adapter set whose adapters each have this need (`self`, counted for one
    /// adapter trained alone): the frozen base (`frozenBytes`) once per node, every one of the
    /// `adapters` adapters' weights and optimizer state on the node (an adapter's group may
    /// span fewer ranks, but counting them all keeps the estimate on the safe side), and each
    /// rank a model's working set for each of the `perRank` adapters it trains.
    public func adapterSet(adapters: Int, perRank models: Int, frozenBytes: Double) -> MemoryNeed {
        var n = self
        let adapterWeights = weights - frozenBytes
        n.weights = frozenBytes + Double(adapters) * adapterWeights
        n.sharded = Double(adapters) * sharded
        n.perRank = Double(models) * (perRank - Self.runtimeBytesPerRank) + Self.runtimeBytesPerRank
        return n
    }

    /// Throws one line when the node cannot hold the job: what it needs against what
    /// `available` (NodeMemory.availableBytes) says the node has. nil: unknown, not checked.
    public func check(available: Double?) throws {
        guard let available, perNode > available else { return }
        let ranks = ranksPerNode > 1 ? " × \(ranksPerNode) ranks" : ""
        throw LoraDistError("this job needs \(Units.bytes(perNode)) per node, the node has \(Units.bytes(available)) available "
            + "(weights \(Units.bytes(weights)) once per node, \(Units.bytes(perRank)) per rank\(ranks) for activations and logits "
            + "of \(tokensPerPass.formatted()) tokens per pass and gradients"
            + (sharded > 0 ? ", optimizer state \(Units.bytes(sharded))" : "")
            + "): lower the batch (or micro-batch) or the sequence length, or run fewer ranks per node")
    }
}
