import Foundation

// The records a run writes, field by field as docs/metrics.md documents them: summary.json,
// one metrics.jsonl line per step, and the state a checkpoint carries across a resume.

/// summary.json: written once at the end of a run by rank 0.
public struct RunSummary: Codable, Equatable {
    public var mode: String
    public var model: String
    public var steps: Int
    public var batch: Int
    public var seqLen: Int
    public var seed: UInt64
    public var stepsDone: Int
    public var preempted: Bool
    public var earlyStopped: Bool
    @Nullable public var bestStep: Int?          // null without --patience
    public var tokens: Int
    public var finalLoss: Double
    public var initialDevLoss: Double
    public var initialDevPerplexity: Double
    public var devLoss: Double
    public var devPerplexity: Double
    public var trainableParams: Int
    public var totalParams: Int
    public var baseParams: Int
    public var weightBytes: Int
    public var baseStorage: String               // fp32 or nf4
    @Nullable public var nf4: NF4Summary?
    public var tokensPerSecond: Double
    public var wallSeconds: Double
    @Nullable public var lora: LoRASummary?      // null under full fine-tuning
    public var lr: Double
    public var worldSize: Int
    public var nodes: Int
    public var ranksPerNode: Int
    public var exchange: String
    public var blasThreads: Int
    /// OpenBLAS's kernel set ("SkylakeX", "Haswell", ...): speed depends on it (BLASCore).
    public var blasCore: String? = nil
    public var replicas: Int
    public var exchangeBytesPerStep: Int          // the mean over the steps done (PowerSGD's vary)
    public var fullFTExchangeBytesPerStep: Int
    @Nullable public var exchangeRatio: Double?  // null on one rank
    public var exchangeBytesTotal: Int? = nil       // counted over every step of the run, resumed ones included
    public var gradCompression: String? = nil
    @Nullable public var powersgd: PowerSGDSummary? = nil   // null unless --grad-compression powersgd
    public var commWaitShare: Double
    public var nodeMemoryBytes: Int
    public var weightsBytesPerNode: Int
    public var checkpoint: String

    public enum CodingKeys: String, CodingKey {
        case mode, model, steps, batch, seed, preempted, tokens, lr, nodes, exchange, replicas, checkpoint, nf4, lora
        case seqLen = "seq_len", stepsDone = "steps_done", earlyStopped = "early_stopped", bestStep = "best_step"
        case finalLoss = "final_loss", initialDevLoss = "initial_dev_loss", initialDevPerplexity = "initial_dev_perplexity"
        case devLoss = "dev_loss", devPerplexity = "dev_perplexity"
        case trainableParams = "trainable_params", totalParams = "total_params", baseParams = "base_params"
        case weightBytes = "weight_bytes", baseStorage = "base_storage", weightsBytesPerNode = "weights_bytes_per_node"
        case tokensPerSecond = "tokens_per_s", wallSeconds = "wall_s", commWaitShare = "comm_wait_share"
        case worldSize = "world_size", ranksPerNode = "ranks_per_node", blasThreads = "blas_threads", blasCore = "blas_core"
        case exchangeBytesPerStep = "exchange_bytes_per_step", fullFTExchangeBytesPerStep = "full_ft_exchange_bytes_per_step"
        case exchangeRatio = "exchange_ratio", nodeMemoryBytes = "node_memory_bytes"
        case exchangeBytesTotal = "exchange_bytes_total", gradCompression = "grad_compression", powersgd
    }

    /// summary.json's `powersgd` object.
    public struct PowerSGDSummary: Codable, Equatable {
        public var rank: Int
        public var startStep: Int
        /// Trainable tensors sent as P and Q from the start step on, and those sent uncompressed.
        public var compressedTensors: Int
        public var uncompressedTensors: Int
        /// Floats one compressed step allreduces (uncompressed tensors + P + Q), against the gradient's.
        public var floatsPerStep: Int
        public var gradientFloats: Int

        enum CodingKeys: String, CodingKey {
            case rank
            case startStep = "start_step", compressedTensors = "compressed_tensors", uncompressedTensors = "uncompressed_tensors"
            case floatsPerStep = "floats_per_step", gradientFloats = "gradient_floats"
        }
    }

    /// summary.json's `lora` object: the adapter's shape in the summary's own words.
    public struct LoRASummary: Codable, Equatable {
        public var r: Int
        public var alpha: Double
        public var dropout: Double
        public var targetModules: [String]
        public var useRSLoRA: Bool

        enum CodingKeys: String, CodingKey {
            case r, alpha, dropout
            case targetModules = "target_modules", useRSLoRA = "use_rslora"
        }

        public init(_ l: LoRAConfig) {
            r = l.rank; alpha = l.alpha.shortest; dropout = l.dropout.shortest; targetModules = l.targets; useRSLoRA = l.useRSLoRA
        }
    }
}

/// One line of metrics.jsonl: one optimizer step, from rank 0.
public struct MetricsRecord: Codable, Equatable {
    public var step: Int
    public var loss: Double
    public var lr: Double
    public var tokens: Int
    public var tokensPerSecond: Double
    public var stepSeconds: Double
    public var gradNorm: Double
    public var trainableParams: Int
    public var mode: String
    public var exchangeBytes: Int
    public var exchangeBytesIntra: Int
    public var exchangeBytesInter: Int
    public var exchangedParams: Int
    public var commWaitSeconds: Double
    public var computeSeconds: Double
    public var worldSize: Int
    public var exchange: String
    public var devLoss: Double?                  // only on evaluation steps (absent otherwise)
    public var gradCompression: String? = nil     // none, bf16, fp16 or powersgd

    public enum CodingKeys: String, CodingKey {
        case step, loss, lr, tokens, mode, exchange
        case gradCompression = "grad_compression"
        case tokensPerSecond = "tokens_per_s", stepSeconds = "step_s", commWaitSeconds = "comm_wait_s", computeSeconds = "compute_s"
        case gradNorm = "grad_norm", trainableParams = "trainable_params", exchangedParams = "exchanged_params"
        case exchangeBytes = "exchange_bytes", exchangeBytesIntra = "exchange_bytes_intra", exchangeBytesInter = "exchange_bytes_inter"
        case worldSize = "world_size", devLoss = "dev_loss"
    }

    /// What the loss curves of a report read back from a line: its step and losses only, so a
    /// line from an older version with other fields still draws.
    public struct Losses: Decodable {
        public var step: Int
        public var loss: Double?
        public var devLoss: Double?

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            step = try c.decode(Int.self, forKey: .step)
            loss = try c.decodeIfPresent(Double.self, forKey: .loss)
            devLoss = try c.decodeIfPresent(Double.self, forKey: .devLoss)
        }
    }
}

/// What a run reports across a resume, saved in every checkpoint's manifest (run_state_json).
public struct RunState: Codable, Equatable {
    public var initialDevLoss: Double
    public var devLoss: Double
    public var finalLoss: Double
    public var trainSeconds: Double
    public var waitSeconds: Double
    @Nullable public var bestDevLoss: Double?    // null before the first evaluation under --patience
    public var bestStep: Int
    public var evalsSinceBest: Int
    /// Bytes the exchange sent up to the checkpoint (absent in checkpoints of older versions).
    public var exchangeBytes: Double? = nil
    /// The compression the checkpoint's run used, and PowerSGD's rank: its state (Q and the
    /// error feedback) is in the checkpoint when `powersgdState` is true.
    public var gradCompression: String? = nil
    public var powersgdRank: Int? = nil
    public var powersgdState: Bool? = nil
    /// The lowest dev loss so far and its step, kept with or without --patience (best_dev_loss and
    /// best_step only under it): a run resumed without early stopping still reports its best step
    /// over all its steps (compare --no-early-stopping --resume). Absent in older checkpoints.
    public var lowestDevLoss: Double? = nil
    public var lowestDevStep: Int? = nil

    enum CodingKeys: String, CodingKey {
        case exchangeBytes = "exchange_bytes", gradCompression = "grad_compression", powersgdRank = "powersgd_rank"
        case powersgdState = "powersgd_state", lowestDevLoss = "lowest_dev_loss", lowestDevStep = "lowest_dev_step"
        case initialDevLoss = "initial_dev_loss", devLoss = "dev_loss", finalLoss = "final_loss"
        case trainSeconds = "train_seconds", waitSeconds = "wait_seconds"
        case bestDevLoss = "best_dev_loss", bestStep = "best_step", evalsSinceBest = "evals_since_best"
    }

    /// The manifest field's text; "{}" for a checkpoint saved outside a run (the benchmark's).
    static func json(_ state: RunState?) throws -> String {
        guard let state else { return "{}" }
        return String(decoding: try JSONCoding.encode(state, pretty: false), as: UTF8.self)
    }

    /// The state a manifest field holds; nil when it holds none ("{}" or empty).
    static func from(json text: String, source: String) throws -> RunState? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.isEmpty || t == "{}" { return nil }
        return try JSONCoding.decode(RunState.self, from: Data(t.utf8), source: source + " run_state_json")
    }
}
