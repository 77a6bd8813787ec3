import Foundation

/// The decoder families lora-dist implements, by Hugging Face `model_type`. They share
/// Llama's block and differ in what `ModelConfig` records: biases (Qwen2: q, k, v; Llama and
/// Qwen3 when `attention_bias` / `mlp_bias` say so), per-head RMSNorm on q and k (Qwen3), a
/// sliding attention window (Mistral). Anything else is refused by name (`HFConfigReader`).
public enum ModelFamily: String, Codable, CaseIterable {
    case llama, mistral, qwen2, qwen3

    /// The transformers class that computes this family.
    public var architecture: String {
        switch self {
        case .llama: return "LlamaForCausalLM"
        case .mistral: return "MistralForCausalLM"
        case .qwen2: return "Qwen2ForCausalLM"
        case .qwen3: return "Qwen3ForCausalLM"
        }
    }
}

/// RoPE frequency scaling, as transformers' `rope_type` names it. `dynamic` and `yarn`
/// are refused: neither is implemented.
public struct RopeScaling: Codable, Equatable {
    public enum Kind: String, Codable { case linear, llama3 }
    public var kind: Kind
    public var factor: Double
    // llama3 only
    public var lowFreqFactor: Double? = nil
    public var highFreqFactor: Double? = nil
    public var originalMaxPositionEmbeddings: Int? = nil

    public init(kind: Kind, factor: Double, lowFreqFactor: Double? = nil, highFreqFactor: Double? = nil,
                originalMaxPositionEmbeddings: Int? = nil) {
        self.kind = kind; self.factor = factor; self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor; self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }

    /// The inverse frequencies θ^(−2d/D), d < D/2, scaled as transformers' `ROPE_INIT_FUNCTIONS` do.
    public static func inverseFrequencies(headDim: Int, theta: Double, scaling: RopeScaling?) -> [Float] {
        let base = (0..<(headDim / 2)).map { d in 1.0 / Foundation.pow(theta, Double(2 * d) / Double(headDim)) }
        guard let s = scaling else { return base.map(Float.init) }
        switch s.kind {
        case .linear:
            return base.map { Float($0 / s.factor) }
        case .llama3:
            // Long wavelengths (beyond the original context / low_freq_factor) slow down by
            // `factor`, short ones (under context / high_freq_factor) stay, the band between blends.
            let old = Double(s.originalMaxPositionEmbeddings!), lo = s.lowFreqFactor!, hi = s.highFreqFactor!
            let lowWavelen = old / lo, highWavelen = old / hi
            return base.map { f in
                let wavelen = 2 * Double.pi / f
                if wavelen < highWavelen { return Float(f) }
                if wavelen > lowWavelen { return Float(f / s.factor) }
                let smooth = (old / wavelen - lo) / (hi - lo)
                return Float((1 - smooth) * f / s.factor + smooth * f)
            }
        }
    }
}

/// The shape and math of a decoder, with Hugging Face config.json's names.
public struct ModelConfig: Codable, Equatable {
    public var family: ModelFamily
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    /// Projections (LoRAConfig.projections names) that add a bias.
    public var biasedProjections: [String]
    /// Qwen3: RMSNorm over each head of q and k, before RoPE.
    public var qkNorm: Bool
    /// Mistral: a query sees itself and the window − 1 keys before it (nil: all before it).
    public var slidingWindow: Int?
    public var initializerRange: Float
    public var bosTokenId: Int?
    public var eosTokenId: Int?

    public init(family: ModelFamily = .llama, vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil,
                rmsNormEps: Float = 1e-6, ropeTheta: Double = 10000, ropeScaling: RopeScaling? = nil,
                maxPositionEmbeddings: Int = 2048, tieWordEmbeddings: Bool = false,
                biasedProjections: [String] = [], qkNorm: Bool = false, slidingWindow: Int? = nil,
                initializerRange: Float = 0.02, bosTokenId: Int? = nil, eosTokenId: Int? = nil) {
        self.family = family
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? hiddenSize / max(numAttentionHeads, 1)
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.biasedProjections = LoRAConfig.projections.filter(biasedProjections.contains)
        self.qkNorm = qkNorm
        self.slidingWindow = slidingWindow
        self.initializerRange = initializerRange
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
    }

    /// Built-in configs, all over the byte vocabulary (256 bytes + BOS + EOS).
    public static let builtIn: [String: ModelConfig] = [
        // tests: about 35 k parameters
        "tiny": ModelConfig(vocabSize: 258, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                            numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 512,
                            bosTokenId: 256, eosTokenId: 257),
        // the default job: about 3.3 M parameters
        "small": ModelConfig(vocabSize: 258, hiddenSize: 256, intermediateSize: 688, numHiddenLayers: 4,
                             numAttentionHeads: 8, numKeyValueHeads: 4, maxPositionEmbeddings: 1024,
                             bosTokenId: 256, eosTokenId: 257),
        // the speed yardstick (docs/performance.md)
        "bench": ModelConfig(vocabSize: 258, hiddenSize: 512, intermediateSize: 1376, numHiddenLayers: 8,
                             numAttentionHeads: 8, numKeyValueHeads: 8, maxPositionEmbeddings: 1024,
                             bosTokenId: 256, eosTokenId: 257),
        // Llama 2 7B's shapes, for `lora-dist plan`
        "llama-7b": ModelConfig(vocabSize: 32000, hiddenSize: 4096, intermediateSize: 11008, numHiddenLayers: 32,
                                numAttentionHeads: 32, numKeyValueHeads: 32, rmsNormEps: 1e-5, maxPositionEmbeddings: 4096,
                                bosTokenId: 1, eosTokenId: 2),
    ]

    /// A built-in name, a config.json, or a directory holding one.
    public static func load(_ nameOrPath: String) throws -> ModelConfig {
        if let c = builtIn[nameOrPath] { return c }
        var path = nameOrPath
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LoraDistError("model '\(nameOrPath)' is neither a built-in config (\(builtIn.keys.sorted().joined(separator: ", "))) nor an existing path")
        }
        if isDir.boolValue { path += "/config.json" }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoraDistError("cannot read model config \(path)")
        }
        return try fromHuggingFace(json: data, source: path)
    }

    /// Parses Hugging Face config.json (see HFConfigReader for what is accepted).
    public static func fromHuggingFace(json data: Data, source: String = "config") throws -> ModelConfig {
        try HFConfigReader.read(json: data, source: source)
    }

    public func validate(source: String = "config") throws {
        for (k, v) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                       ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                       ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim),
                       ("max_position_embeddings", maxPositionEmbeddings)] where v <= 0 {
            throw LoraDistError("\(source): \(k) must be positive, got \(v)")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw LoraDistError("\(source): num_key_value_heads \(numKeyValueHeads) does not divide num_attention_heads \(numAttentionHeads)")
        }
        if headDim % 2 != 0 { throw LoraDistError("\(source): head_dim \(headDim) must be even for rotary embeddings") }
        guard rmsNormEps.isFinite, rmsNormEps > 0 else {
            throw LoraDistError("\(source): rms_norm_eps must be a positive number, got \(rmsNormEps)")
        }
        guard ropeTheta.isFinite, ropeTheta > 0 else { throw LoraDistError("\(source): rope_theta must be positive, got \(ropeTheta)") }
        guard initializerRange.isFinite, initializerRange >= 0, initializerRange <= 10 else {
            throw LoraDistError("\(source): initializer_range must be a number in [0, 10], got \(initializerRange)")
        }
        if let w = slidingWindow, w <= 0 { throw LoraDistError("\(source): sliding_window must be positive, got \(w)") }
        if let s = ropeScaling {
            guard s.factor.isFinite, s.factor >= 1 else {
                throw LoraDistError("\(source): rope scaling factor must be at least 1, got \(s.factor)")
            }
            if s.kind == .llama3 {
                guard let lo = s.lowFreqFactor, let hi = s.highFreqFactor, let old = s.originalMaxPositionEmbeddings,
                      lo > 0, hi > lo, old > 0 else {
                    throw LoraDistError("\(source): llama3 rope scaling needs low_freq_factor > 0, high_freq_factor > low_freq_factor and original_max_position_embeddings > 0")
                }
            }
        }
        // Bounded before any arithmetic on them: a vocab_size of 1e18 is no model, and
        // counting its parameters would overflow.
        let limit = 1 << 24
        for (k, v) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                       ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                       ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim),
                       ("max_position_embeddings", maxPositionEmbeddings)] where v > limit {
            throw LoraDistError("\(source): \(k) \(v) is out of range (at most \(limit))")
        }
        if let w = slidingWindow, w > limit { throw LoraDistError("\(source): sliding_window \(w) is out of range (at most \(limit))") }
        let params = parameterCount
        guard params <= Self.maxParameters else {
            throw LoraDistError("\(source): the model would have \(params) parameters, more than lora-dist's limit of \(Self.maxParameters)")
        }
    }

    /// 2^40 fp32 weights is 4 TiB: far beyond any node; a bound that keeps every count an exact Int.
    public static let maxParameters = 1 << 40

    /// Weights of the model without adapters (each factor is bounded by `validate` first, so
    /// no product overflows: 2^24 · 2^24 · 2^24 < 2^63).
    public var parameterCount: Int {
        let q = numAttentionHeads * headDim, kv = numKeyValueHeads * headDim
        let biases = biasedProjections.reduce(0) { n, p in
            n + ["q_proj": q, "k_proj": kv, "v_proj": kv, "o_proj": hiddenSize, "gate_proj": intermediateSize,
                 "up_proj": intermediateSize, "down_proj": hiddenSize][p, default: 0]
        }
        let layer = 2 * hiddenSize + hiddenSize * (2 * q + 2 * kv) + 3 * hiddenSize * intermediateSize + biases
            + (qkNorm ? 2 * headDim : 0)
        return numHiddenLayers * layer + vocabSize * hiddenSize * (tieWordEmbeddings ? 1 : 2) + hiddenSize
    }

    /// The config.json the family's transformers class would read: transformers 4's form
    /// (top-level rope_theta, rope_scaling), which transformers 5 also reads.
    public func huggingFaceJSON() -> [String: Any] {
        var d: [String: Any] = [
            "architectures": [family.architecture], "model_type": family.rawValue,
            "vocab_size": vocabSize, "hidden_size": hiddenSize, "intermediate_size": intermediateSize,
            "num_hidden_layers": numHiddenLayers, "num_attention_heads": numAttentionHeads,
            "num_key_value_heads": numKeyValueHeads, "head_dim": headDim, "rms_norm_eps": rmsNormEps,
            "rope_theta": ropeTheta, "max_position_embeddings": maxPositionEmbeddings,
            "tie_word_embeddings": tieWordEmbeddings, "hidden_act": "silu",
            "initializer_range": initializerRange, "torch_dtype": "float32",
        ]
        switch family {
        case .llama:
            d["attention_bias"] = biasedProjections.contains("q_proj")
            d["mlp_bias"] = biasedProjections.contains("gate_proj")
        case .qwen3:
            d["attention_bias"] = biasedProjections.contains("q_proj")
        case .mistral:
            d["sliding_window"] = slidingWindow.map { $0 as Any } ?? NSNull()
        case .qwen2:
            d["use_sliding_window"] = false
        }
        if let s = ropeScaling {
            var r: [String: Any] = ["rope_type": s.kind.rawValue, "factor": s.factor]
            if s.kind == .llama3 {
                r["low_freq_factor"] = s.lowFreqFactor
                r["high_freq_factor"] = s.highFreqFactor
                r["original_max_position_embeddings"] = s.originalMaxPositionEmbeddings
            }
            d["rope_scaling"] = r
        }
        if let b = bosTokenId { d["bos_token_id"] = b }
        if let e = eosTokenId { d["eos_token_id"] = e }
        return d
    }
}
