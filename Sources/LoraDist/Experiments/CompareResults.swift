import Foundation

/// report.json: everything `lora-dist compare` measured, and all that report.md and the charts
/// are rendered from (`compare --render-only` reads it back). Perplexities JSON cannot hold
/// (NaN, infinity) are written as null.
public struct CompareResults: Codable {
    public var base: String
    public var domain: String
    public var outOfDomain: [String]
    public var general: String
    public var worldSize: Int
    public var nodes: Int
    public var exchange: String
    public var budget: Budget
    public var earlyStopping: EarlyStopping
    public var lrGrid: LRGrid
    public var basePerplexity: [String: Double?]
    /// The base's top-1 next-token accuracy per domain (absent in reports written before it was measured).
    public var baseAccuracy: [String: Double?]?
    /// `--seeds N` above 1: every row's quality figures are means over N seeds (absent with one seed).
    public var seeds: Int?
    public var runs: [Row]
    public var sweep: [SweepPoint]
    public var quick: Bool
    public var wallSeconds: Double

    enum CodingKeys: String, CodingKey {
        case base, domain, general, nodes, exchange, budget, runs, sweep, quick, seeds
        case outOfDomain = "out_of_domain", basePerplexity = "base_perplexity", baseAccuracy = "base_accuracy"
        case worldSize = "world_size", earlyStopping = "early_stopping", lrGrid = "lr_grid", wallSeconds = "wall_s"
    }

    public struct Budget: Codable {
        public var steps: Int, batch: Int, seqLen: Int, tokens: Int
        enum CodingKeys: String, CodingKey {
            case steps, batch, tokens, seqLen = "seq_len"
        }
    }

    /// How the runs ended. `patience` null and `enabled` false: `--no-early-stopping` (every run
    /// trained all its steps and was measured on its final weights).
    public struct EarlyStopping: Codable {
        public var evalEvery: Int
        public var patience: Int?
        public var enabled: Bool { patience != nil }
        enum CodingKeys: String, CodingKey {
            case patience, enabled, evalEvery = "eval_every"
        }
        public init(evalEvery: Int, patience: Int?) { self.evalEvery = evalEvery; self.patience = patience }
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            evalEvery = try c.decode(Int.self, forKey: .evalEvery)
            patience = try c.decodeIfPresent(Int.self, forKey: .patience)
        }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(evalEvery, forKey: .evalEvery)
            try c.encode(patience, forKey: .patience)
            try c.encode(enabled, forKey: .enabled)
        }
        /// The reports' words for it.
        public var sentence: String {
            guard let patience else {
                return "no early stopping (`--no-early-stopping`): every run trains all its steps and is measured on its final weights; "
                    + "dev loss is still evaluated every \(evalEvery) steps, and \"best\" is the step with the lowest"
            }
            return "early stopping on dev loss (every \(evalEvery) steps, patience \(patience) evaluations, ending on the best weights)"
        }
    }

    public struct LRGrid: Codable {
        public var lora: [Double], full: [Double]
    }

    /// One learning rate of one candidate: its best dev loss.
    public struct SweepPoint: Codable {
        public var run: String
        public var lr: Double
        public var seed: UInt64?     // with --seeds above 1
        @Nullable public var bestDevLoss: Double?
        enum CodingKeys: String, CodingKey {
            case run, lr, seed, bestDevLoss = "best_dev_loss"
        }
    }

    /// A candidate's best run (the learning rate with the lowest dev loss).
    public struct Row: Codable {
        public var run: String                  // e.g. lora-r8-attn
        public var label: String                // e.g. LoRA r=8 (q,k,v,o)
        public var mode: String
        public var lr: Double
        @Nullable public var rank: Int?
        @Nullable public var targetModules: [String]?
        public var trainableParams: Int
        public var totalParams: Int
        public var exchangeBytesPerStep: Int
        public var fullFTExchangeBytesPerStep: Int
        public var nodeMemoryBytes: Int
        public var secondsPerStep: Double
        public var tokensPerSecond: Double
        public var stepsDone: Int
        @Nullable public var bestStep: Int?
        public var earlyStopped: Bool
        @Nullable public var bestDevLoss: Double?
        @Nullable public var devPerplexity: Double?
        @Nullable public var inDomainPerplexity: Double?
        @Nullable public var baseInDomainPerplexity: Double?
        public var outOfDomainPerplexity: [String: Double?]
        @Nullable public var outOfDomainMean: Double?
        @Nullable public var baseOutOfDomainMean: Double?
        @Nullable public var generalPerplexity: Double?
        /// Top-1 next-token accuracy (fraction) on the same test windows as the perplexities.
        @Nullable public var inDomainAccuracy: Double?
        public var outOfDomainAccuracy: [String: Double?]?
        @Nullable public var outOfDomainAccuracyMean: Double?
        @Nullable public var generalAccuracy: Double?
        @Nullable public var forgetting: Double?
        public var runDir: String
        /// QLoRA only: the NF4 base's perplexities before training (absent on other rows).
        public var nf4BasePerplexity: [String: Double?]?
        /// How the run's gradients travelled: none, bf16, fp16 or powersgd (absent in older reports).
        public var gradCompression: String?
        /// With --seeds above 1: each seed's run (the row's quality figures are their means) and,
        /// under each figure's key, its mean with the 95 % interval.
        public var perSeed: [Row]?
        public var intervals: [String: CompareStats.Interval]?

        enum CodingKeys: String, CodingKey {
            case run, label, mode, lr, rank, forgetting
            case targetModules = "target_modules", runDir = "run_dir"
            case trainableParams = "trainable_params", totalParams = "total_params", nodeMemoryBytes = "node_memory_bytes"
            case exchangeBytesPerStep = "exchange_bytes_per_step", fullFTExchangeBytesPerStep = "full_ft_exchange_bytes_per_step"
            case secondsPerStep = "seconds_per_step", tokensPerSecond = "tokens_per_s"
            case stepsDone = "steps_done", bestStep = "best_step", earlyStopped = "early_stopped"
            case bestDevLoss = "best_dev_loss", devPerplexity = "dev_perplexity"
            case inDomainPerplexity = "in_domain_perplexity", baseInDomainPerplexity = "base_in_domain_perplexity"
            case outOfDomainPerplexity = "out_of_domain_perplexity", outOfDomainMean = "out_of_domain_mean"
            case baseOutOfDomainMean = "base_out_of_domain_mean", generalPerplexity = "general_perplexity"
            case nf4BasePerplexity = "nf4_base_perplexity", gradCompression = "grad_compression", perSeed = "per_seed", intervals
            case inDomainAccuracy = "in_domain_accuracy", outOfDomainAccuracy = "out_of_domain_accuracy"
            case outOfDomainAccuracyMean = "out_of_domain_accuracy_mean", generalAccuracy = "general_accuracy"
        }
    }
}

extension CompareResults.Row {
    /// The quality figures a row averages over seeds, by their report.json keys.
    static let qualityFigures: [(key: String, value: WritableKeyPath<CompareResults.Row, Double?>)] = [
        ("best_dev_loss", \.bestDevLoss), ("dev_perplexity", \.devPerplexity),
        ("in_domain_perplexity", \.inDomainPerplexity), ("in_domain_accuracy", \.inDomainAccuracy),
        ("out_of_domain_mean", \.outOfDomainMean), ("out_of_domain_accuracy_mean", \.outOfDomainAccuracyMean),
        ("general_perplexity", \.generalPerplexity), ("general_accuracy", \.generalAccuracy), ("forgetting", \.forgetting),
    ]

    /// One candidate at one learning rate over several seeds: the first seed's row for what does not
    /// depend on the seed (parameters, bytes), the mean of each quality figure (nil when a seed has
    /// none), seconds per step and tokens/s averaged, node memory the largest, and every seed's row.
    static func over(seeds rows: [CompareResults.Row], first: UInt64) -> CompareResults.Row {
        var out = rows[0]
        var intervals: [String: CompareStats.Interval] = [:]
        for (key, path) in qualityFigures {
            let values = rows.compactMap { $0[keyPath: path] }
            let i = values.count == rows.count ? CompareStats.interval(values) : nil
            out[keyPath: path] = i?.mean
            if let i { intervals[key] = i }
        }
        out.secondsPerStep = rows.map(\.secondsPerStep).reduce(0, +) / Double(rows.count)
        out.tokensPerSecond = rows.map(\.tokensPerSecond).reduce(0, +) / Double(rows.count)
        out.nodeMemoryBytes = rows.map(\.nodeMemoryBytes).max()!
        out.runDir = (rows[0].runDir as NSString).deletingLastPathComponent
        out.perSeed = rows
        out.intervals = intervals
        return out
    }
}

extension Dictionary where Value == Double {
    /// The same map with NaN and infinities as nil (null in JSON).
    var finiteValues: [Key: Double?] { mapValues(\.finite) }
}
