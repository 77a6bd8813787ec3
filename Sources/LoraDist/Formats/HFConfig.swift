import Foundation

/// Reads a Hugging Face config.json strictly: every key is either turned into a
/// `ModelConfig` field, checked to hold the one value lora-dist implements, or known
/// not to change the math (token ids, dtype, cache flags). Anything else is refused by
/// name, so a model is never trained as something other than what its config says.
/// Both forms are read: transformers 4 (top-level rope_theta, rope_scaling) and
/// transformers 5 (rope_parameters).
enum HFConfigReader {
    /// Keys that do not change what the model computes in training or evaluation.
    static let inert: Set<String> = [
        "_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache", "pad_token_id",
        "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id", "output_attentions",
        "output_hidden_states", "return_dict", "id2label", "label2id", "problem_type", "tokenizer_class",
        "task_specific_params", "prefix", "initializer_range", "architectures", "model_type",
        "lora_dist",  // lora-dist's own note on a merged QLoRA export
        // Qwen2/3 write these even with use_sliding_window false, where transformers ignores them
        "sliding_window", "max_window_layers",
    ]

    static func read(json data: Data, source: String) throws -> ModelConfig {
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoraDistError("\(source): not a JSON object")
        }
        return try read(obj, source: source)
    }

    static func read(_ obj: [String: Any], source: String) throws -> ModelConfig {
        var used = Set<String>()
        func value(_ key: String) -> Any? {
            used.insert(key)
            guard let v = obj[key], !(v is NSNull) else { return nil }
            return v
        }
        func int(_ key: String) throws -> Int {
            guard let v = value(key) else { throw LoraDistError("\(source): missing \"\(key)\"") }
            return try integer(v, key)
        }
        func integer(_ v: Any, _ key: String) throws -> Int {
            guard let n = v as? NSNumber, n.doubleValue.isFinite, n.doubleValue == n.doubleValue.rounded() else {
                throw LoraDistError("\(source): \"\(key)\" must be an integer")
            }
            // Bounded here, before any arithmetic; ModelConfig.validate bounds each field further.
            guard abs(n.doubleValue) < 1e15 else {
                throw LoraDistError("\(source): \"\(key)\" \(n) is out of range")
            }
            return n.intValue
        }
        func optInt(_ key: String) throws -> Int? {
            guard let v = value(key) else { return nil }
            if let arr = v as? [Any] { return try arr.first.map { try integer($0, key) } }  // eos may be a list
            return try integer(v, key)
        }
        func number(_ key: String) throws -> Double? {
            guard let v = value(key) else { return nil }
            guard let n = v as? NSNumber, n.doubleValue.isFinite else { throw LoraDistError("\(source): \"\(key)\" must be a number") }
            return n.doubleValue
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = value(key) else { return nil }
            guard let b = v as? Bool else { throw LoraDistError("\(source): \"\(key)\" must be true or false") }
            return b
        }
        func refuse(_ key: String, _ why: String) -> LoraDistError {
            LoraDistError("\(source): \"\(key)\" \(why)")
        }

        // The family, from model_type and architectures.
        let supported = ModelFamily.allCases.map(\.rawValue).joined(separator: ", ")
        let family: ModelFamily
        if let t = value("model_type") {
            guard let s = t as? String, let f = ModelFamily(rawValue: s) else {
                throw refuse("model_type", "is \(t): not implemented (lora-dist implements \(supported))")
            }
            family = f
        } else {
            family = .llama  // configs from before model_type (and lora-dist's own tests) are Llama
        }
        if let a = value("architectures") {
            guard let list = a as? [String], list == [family.architecture] else {
                throw refuse("architectures", "is \(a): lora-dist implements \(family.architecture) for model_type \(family.rawValue)")
            }
        }

        // Fixed parts of the block: refused unless they hold what is implemented.
        if let act = value("hidden_act") {
            guard act as? String == "silu" else { throw refuse("hidden_act", "is \(act): only silu (SwiGLU) is implemented") }
        }
        if let p = try number("attention_dropout"), p != 0 {
            throw refuse("attention_dropout", "is \(p): attention dropout is not implemented (only 0)")
        }
        if let tp = try number("pretraining_tp"), tp != 1 {
            throw refuse("pretraining_tp", "is \(tp): only 1 is implemented")
        }

        // Biases.
        var biased: [String] = []
        switch family {
        case .llama, .qwen3:
            if try bool("attention_bias") == true { biased += ["q_proj", "k_proj", "v_proj", "o_proj"] }
            if family == .llama, try bool("mlp_bias") == true { biased += ["gate_proj", "up_proj", "down_proj"] }
        case .qwen2:
            biased = ["q_proj", "k_proj", "v_proj"]  // always, in Qwen2Attention
        case .mistral:
            break
        }

        // Attention window.
        let layers = try int("num_hidden_layers")
        var window: Int? = nil
        switch family {
        case .mistral:
            window = try optInt("sliding_window")
        case .qwen2, .qwen3:
            if try bool("use_sliding_window") == true {
                throw refuse("use_sliding_window", "is true: sliding-window attention is implemented for Mistral only (Qwen's per-layer windows are not)")
            }
            if try bool("use_mrope") == true { throw refuse("use_mrope", "is true: multimodal RoPE is not implemented") }
        case .llama:
            break
        }
        if let lt = value("layer_types") {
            // Compared without building a list of `layers` entries: the count is not bounded yet.
            let want = window == nil ? "full_attention" : "sliding_attention"
            guard let list = lt as? [String], list.count == layers, list.allSatisfy({ $0 == want }) else {
                throw refuse("layer_types", "lists other attention kinds than \(want) for every layer, which is all lora-dist implements for this config")
            }
        }

        // RoPE: theta and scaling, in either form.
        var theta = try number("rope_theta") ?? 10000
        var scaling: RopeScaling? = nil
        let ropeKey = obj["rope_parameters"] != nil && !(obj["rope_parameters"] is NSNull) ? "rope_parameters" : "rope_scaling"
        if let r = value(ropeKey) {
            guard let rp = r as? [String: Any] else { throw refuse(ropeKey, "must be an object") }
            (theta, scaling) = try rope(rp, key: ropeKey, theta: theta, source: source)
        }
        _ = value("rope_scaling"); _ = value("rope_parameters")

        let heads = try int("num_attention_heads")
        let c = ModelConfig(
            family: family,
            vocabSize: try int("vocab_size"), hiddenSize: try int("hidden_size"),
            intermediateSize: try int("intermediate_size"), numHiddenLayers: layers,
            numAttentionHeads: heads, numKeyValueHeads: try optInt("num_key_value_heads") ?? heads,
            headDim: try optInt("head_dim"),
            rmsNormEps: Float(try number("rms_norm_eps") ?? 1e-6),
            ropeTheta: theta, ropeScaling: scaling,
            maxPositionEmbeddings: try optInt("max_position_embeddings") ?? 2048,
            tieWordEmbeddings: try bool("tie_word_embeddings") ?? false,
            biasedProjections: biased, qkNorm: family == .qwen3, slidingWindow: window,
            initializerRange: Float(try number("initializer_range") ?? 0.02),
            bosTokenId: try optInt("bos_token_id"), eosTokenId: try optInt("eos_token_id"))

        if let unknown = obj.keys.sorted().first(where: { !used.contains($0) && !inert.contains($0) }) {
            throw refuse(unknown, "is not implemented for model_type \(family.rawValue): lora-dist refuses config fields it does not know rather than compute another model (docs/models.md lists what is supported)")
        }
        try c.validate(source: source)
        return c
    }

    /// (rope_theta, scaling) from a rope_scaling (transformers 4) or rope_parameters (5) object.
    static func rope(_ rp: [String: Any], key: String, theta: Double, source: String) throws -> (Double, RopeScaling?) {
        var theta = theta
        if let t = rp["rope_theta"] {
            guard let n = t as? NSNumber else { throw LoraDistError("\(source): \"\(key).rope_theta\" must be a number") }
            theta = n.doubleValue
        }
        guard let kind = (rp["rope_type"] ?? rp["type"]) as? String else {
            throw LoraDistError("\(source): \"\(key)\" has no rope_type (per-layer-type RoPE parameters are not implemented)")
        }
        func num(_ k: String) throws -> Double {
            guard let n = rp[k] as? NSNumber, n.doubleValue.isFinite else {
                throw LoraDistError("\(source): \"\(key).\(k)\" must be a number for rope_type \(kind)")
            }
            return n.doubleValue
        }
        func integer(_ k: String) throws -> Int {
            let v = try num(k)
            guard v == v.rounded(), abs(v) < 1e15 else {   // bounded before it becomes an Int
                throw LoraDistError("\(source): \"\(key).\(k)\" must be an integer of at most 15 digits, got \(v)")
            }
            return Int(v)
        }
        let allowed: Set<String>
        let scaling: RopeScaling?
        switch kind {
        case "default":
            allowed = []
            scaling = nil
        case "linear":
            allowed = ["factor"]
            scaling = RopeScaling(kind: .linear, factor: try num("factor"))
        case "llama3":
            allowed = ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
            scaling = RopeScaling(kind: .llama3, factor: try num("factor"), lowFreqFactor: try num("low_freq_factor"),
                                  highFreqFactor: try num("high_freq_factor"),
                                  originalMaxPositionEmbeddings: try integer("original_max_position_embeddings"))
        default:
            throw LoraDistError("\(source): \"\(key)\" rope_type \"\(kind)\" is not implemented (lora-dist implements default, linear and llama3)")
        }
        let known = allowed.union(["rope_type", "type", "rope_theta"])
        if let extra = rp.keys.sorted().first(where: { !known.contains($0) }) {
            throw LoraDistError("\(source): \"\(key).\(extra)\" is not implemented for rope_type \(kind)")
        }
        return (theta, scaling)
    }
}
