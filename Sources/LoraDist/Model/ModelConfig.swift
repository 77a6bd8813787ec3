import Foundation

/// The shape of a Llama-style decoder, with Hugging Face config.json's names.
public struct ModelConfig: Codable, Equatable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenId: Int?

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil,
                rmsNormEps: Float = 1e-6, ropeTheta: Double = 10000, maxPositionEmbeddings: Int = 2048,
                tieWordEmbeddings: Bool = false, bosTokenId: Int? = nil, eosTokenId: Int? = nil) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? hiddenSize / numAttentionHeads
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
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

    /// Parses Hugging Face config.json, in both transformers 4 (top-level rope_theta)
    /// and transformers 5 (rope_parameters.rope_theta) forms.
    public static func fromHuggingFace(json data: Data, source: String = "config") throws -> ModelConfig {
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoraDistError("\(source): not a JSON object")
        }
        func int(_ key: String) throws -> Int {
            guard let v = obj[key] else { throw LoraDistError("\(source): missing \"\(key)\"") }
            guard let n = v as? NSNumber, n.doubleValue == n.doubleValue.rounded() else {
                throw LoraDistError("\(source): \"\(key)\" must be an integer")
            }
            return n.intValue
        }
        func optInt(_ key: String) throws -> Int? {
            guard let v = obj[key], !(v is NSNull) else { return nil }
            if let arr = v as? [NSNumber] { return arr.first?.intValue }  // eos may be a list
            return try int(key)
        }
        let heads = try int("num_attention_heads")
        let hidden = try int("hidden_size")
        var theta = 10000.0
        if let t = obj["rope_theta"] as? NSNumber { theta = t.doubleValue }
        if let rp = obj["rope_parameters"] as? [String: Any] {
            if let t = rp["rope_theta"] as? NSNumber { theta = t.doubleValue }
            if let kind = rp["rope_type"] as? String, kind != "default" {
                throw LoraDistError("\(source): rope_type \"\(kind)\" is not supported (only default)")
            }
        }
        let c = ModelConfig(
            vocabSize: try int("vocab_size"), hiddenSize: hidden,
            intermediateSize: try int("intermediate_size"), numHiddenLayers: try int("num_hidden_layers"),
            numAttentionHeads: heads, numKeyValueHeads: try optInt("num_key_value_heads") ?? heads,
            headDim: try optInt("head_dim"),
            rmsNormEps: (obj["rms_norm_eps"] as? NSNumber)?.floatValue ?? 1e-6,
            ropeTheta: theta,
            maxPositionEmbeddings: try optInt("max_position_embeddings") ?? 2048,
            tieWordEmbeddings: (obj["tie_word_embeddings"] as? NSNumber)?.boolValue ?? false,
            bosTokenId: try optInt("bos_token_id"), eosTokenId: try optInt("eos_token_id"))
        try c.validate(source: source)
        return c
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
    }

    /// The config.json a Hugging Face LlamaForCausalLM would write.
    public func huggingFaceJSON() -> [String: Any] {
        var d: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": vocabSize, "hidden_size": hiddenSize, "intermediate_size": intermediateSize,
            "num_hidden_layers": numHiddenLayers, "num_attention_heads": numAttentionHeads,
            "num_key_value_heads": numKeyValueHeads, "head_dim": headDim, "rms_norm_eps": rmsNormEps,
            "rope_theta": ropeTheta, "max_position_embeddings": maxPositionEmbeddings,
            "tie_word_embeddings": tieWordEmbeddings, "hidden_act": "silu",
            "attention_bias": false, "mlp_bias": false, "torch_dtype": "float32",
        ]
        if let b = bosTokenId { d["bos_token_id"] = b }
        if let e = eosTokenId { d["eos_token_id"] = e }
        return d
    }
}
