import Foundation

/// Models from GGUF files (llama.cpp's format) of the architectures `llama`, `qwen2` and
/// `qwen3`: the config from `general.architecture` and the `<arch>.*` metadata, the base
/// weights dequantized to fp32, as llama.cpp's converter (convert_hf_to_gguf.py) writes them
/// and transformers' GGUF loader reads them.
///
/// Strict, like the config.json reader: every `<arch>.*` key is either read, checked to hold
/// the one value lora-dist implements (RoPE unscaled, no experts, causal attention, …), or
/// known not to change the math; any other key is refused by name. The file's tensors must be
/// exactly the ones its config consumes: a tensor nothing would read (a bias, a norm, a
/// rope_freqs table, a classifier head) is refused by name rather than ignored.
///
/// Only `llama` files have q_proj and k_proj permuted: the converter's LlamaModel stores the
/// rows of each head in llama.cpp's RoPE layout (`permute(w, n_head, n_head_kv)`: reshape to
/// [heads, 2, D/2, in], swap the middle axes), and loading undoes it: Hugging Face row
/// h·D + i·(D/2) + j comes from GGUF row h·D + 2j + i, with the query heads for q and the
/// key-value heads for k. The converter's Qwen2Model and Qwen3Model write q and k as they are,
/// and transformers' GGUF loader un-permutes only for `llama` (its LlamaTensorProcessor).
public enum GGUFImport {
    /// The architectures imported, in `general.architecture`'s spelling, and what they compute as.
    public static let architectures: [(name: String, family: ModelFamily)] = [("llama", .llama), ("qwen2", .qwen2), ("qwen3", .qwen3)]

    static let layerNames: [String: String] = [
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        // biases (Qwen2: q, k, v) and Qwen3's per-head norms
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.bias": "attn_output.bias",
        "mlp.gate_proj.bias": "ffn_gate.bias",
        "mlp.up_proj.bias": "ffn_up.bias",
        "mlp.down_proj.bias": "ffn_down.bias",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
    ]

    /// The GGUF tensor name of a Hugging Face parameter name (nil: none).
    public static func ggufName(_ hf: String) -> String? {
        switch hf {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "lm_head.weight": return "output.weight"
        default: break
        }
        let prefix = "model.layers."
        guard hf.hasPrefix(prefix) else { return nil }
        let rest = hf.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let n = Int(rest[..<dot]), n >= 0,
              let t = layerNames[String(rest[rest.index(after: dot)...])] else { return nil }
        return "blk.\(n).\(t)"
    }

    // MARK: config

    /// `<arch>.*` keys that are read into the config.
    static let readKeys: Set<String> = [
        "context_length", "embedding_length", "block_count", "feed_forward_length", "vocab_size",
        "attention.head_count", "attention.head_count_kv", "attention.key_length", "attention.value_length",
        "attention.layer_norm_rms_epsilon", "rope.dimension_count", "rope.freq_base",
    ]

    /// `<arch>.*` keys that llama.cpp does not use for these architectures' math (or uses only
    /// under a RoPE scaling that is refused anyway).
    static let inertKeys: Set<String> = [
        "attention.layer_norm_epsilon",          // LayerNorm eps: these blocks use RMSNorm only
        "rope.scaling.finetuned",                // a note on the training
        "rope.scaling.original_context_length",  // read by YaRN only
        "tensor_data_layout",                    // the original checkpoint's layout; GGUF's is fixed
    ]

    /// Keys of these architectures' GGUF vocabulary that change the math and are not implemented, and why.
    static let refusedKeys: [String: String] = [
        "expert_count": "mixture-of-experts models are not supported",
        "expert_used_count": "mixture-of-experts models are not supported",
        "expert_shared_count": "mixture-of-experts models are not supported",
        "expert_feed_forward_length": "mixture-of-experts models are not supported",
        "attention.sliding_window": "sliding-window attention is not implemented for GGUF imports",
        "attn_logit_softcapping": "attention logit softcapping is not implemented",
        "final_logit_softcapping": "final logit softcapping is not implemented",
        "logit_scale": "a logit scale is not implemented",
        "embedding_scale": "an embedding scale is not implemented",
        "residual_scale": "a residual scale is not implemented",
        "attention.clamp_kqv": "clamped q/k/v are not implemented",
        "attention.max_alibi_bias": "ALiBi is not implemented",
        "attention.causal": "only causal attention is implemented",
        "pooling_type": "an embedding or reranking model (pooled output) is not a causal LM",
        "rope.scaling.type": "only unscaled RoPE is implemented for GGUF imports",
        "rope.scaling.factor": "only unscaled RoPE is implemented for GGUF imports",
        "rope.scale_linear": "only unscaled RoPE is implemented for GGUF imports",
        "rope.scaling.attn_factor": "a RoPE attention factor is not implemented",
        "rope.dimension_sections": "multimodal RoPE (sections) is not implemented",
        "rope.freq_base_swa": "a second RoPE base for sliding-window layers is not implemented",
    ]

    /// The model's shape from `general.architecture` and the `<arch>.*` keys. vocab_size comes
    /// from token_embd.weight (else `<arch>.vocab_size`, else the token list); the word embeddings
    /// are tied when there is no output.weight. Refuses what the import does not implement, and a
    /// file holding tensors the config would not consume.
    public static func config(_ f: GGUFFile) throws -> ModelConfig {
        try config(metadata: f.metadata, tensors: f.tensors, tensorNames: f.tensorNames, path: f.path)
    }

    static func config(metadata: [String: GGUFValue], tensors: [String: GGUFTensorInfo], tensorNames: [String],
                       path: String) throws -> ModelConfig {
        let m = Metadata(values: metadata, path: path)
        let supported = architectures.map(\.name).joined(separator: ", ")
        guard let arch = try m.string("general.architecture") else {
            throw LoraDistError("\(path): no general.architecture in the GGUF metadata (lora-dist imports \(supported))")
        }
        guard let family = architectures.first(where: { $0.name == arch })?.family else {
            throw LoraDistError("\(path): general.architecture is '\(arch)': lora-dist imports the GGUF architectures \(supported)")
        }
        if let type = try m.string("general.type"), type != "model" {
            throw LoraDistError("\(path): general.type is '\(type)', not 'model' (a LoRA adapter GGUF cannot be the base)")
        }
        if let n = try m.int("split.count"), n > 1 {
            throw LoraDistError("\(path): one of \(n) split GGUF files: merge them first (llama-gguf-split --merge)")
        }

        // every <arch>.* key: read, checked, inert, or refused by name
        let p = arch + "."
        for key in metadata.keys.sorted() where key.hasPrefix(p) {
            let k = String(key.dropFirst(p.count))
            if readKeys.contains(k) || inertKeys.contains(k) { continue }
            let v = metadata[key]!
            func refuse(_ why: String) -> LoraDistError { LoraDistError("\(path): \(key) = \(v): \(why)") }
            switch k {
            case "expert_count", "expert_used_count", "expert_shared_count", "attention.sliding_window":
                if try m.int(key) != 0 { throw refuse(refusedKeys[k]!) }  // 0: none
            case "pooling_type":
                if try m.int(key) != 0 { throw refuse(refusedKeys[k]!) }  // 0: LLAMA_POOLING_TYPE_NONE
            case "attention.causal":
                if try m.bool(key) != true { throw refuse(refusedKeys[k]!) }
            case "rope.scaling.type":
                if try m.string(key) != "none" { throw refuse(refusedKeys[k]!) }
            case "rope.scaling.factor", "rope.scale_linear", "rope.scaling.attn_factor":
                // llama.cpp applies a factor whatever the scaling type; 0 means 1 for the first two
                let x = try m.float(key)!
                if !(x == 1 || (x == 0 && k != "rope.scaling.attn_factor")) { throw refuse(refusedKeys[k]!) }
            default:
                if let why = refusedKeys[k] { throw refuse(why) }
                throw refuse("not implemented for GGUF architecture \(arch): lora-dist refuses metadata it does not know rather than compute another model")
            }
        }

        func required(_ key: String) throws -> Int {
            guard let v = try m.int(p + key) else { throw LoraDistError("\(path): missing \(p)\(key)") }
            return v
        }
        if tensors["rope_freqs.weight"] != nil {
            throw LoraDistError("\(path): has rope_freqs.weight (per-frequency RoPE factors: Llama 3 RoPE scaling), which the GGUF import does not implement")
        }
        let hidden = try required("embedding_length")
        let heads = try required("attention.head_count")
        guard heads > 0 else { throw LoraDistError("\(path): \(p)attention.head_count must be positive, got \(heads)") }
        let kvHeads = try m.int(p + "attention.head_count_kv") ?? heads
        // llama.cpp: the head dim is key_length (default hidden / heads), RoPE turns
        // rope.dimension_count of them (default all)
        let keyLength = try m.int(p + "attention.key_length")
        let headDim = keyLength ?? hidden / heads
        if let r = try m.int(p + "rope.dimension_count"), r != headDim {
            let source = keyLength == nil ? "the head dim \(hidden) / \(heads) = \(headDim)" : "\(p)attention.key_length \(headDim)"
            throw LoraDistError("\(path): \(p)rope.dimension_count \(r) differs from \(source): partial rotary embeddings are not supported")
        }
        if let v = try m.int(p + "attention.value_length"), v != headDim {
            throw LoraDistError("\(path): \(p)attention.value_length \(v) differs from the head dim \(headDim)")
        }
        guard let eps = try m.float(p + "attention.layer_norm_rms_epsilon") else {
            throw LoraDistError("\(path): missing \(p)attention.layer_norm_rms_epsilon")
        }
        let vocab: Int
        let declared = try m.int(p + "vocab_size")
        if let t = tensors["token_embd.weight"], t.dims.count == 2 {
            vocab = t.dims[1]
            if let d = declared, d != vocab {
                throw LoraDistError("\(path): \(p)vocab_size \(d) differs from token_embd.weight's \(vocab) rows")
            }
        } else if let v = declared {
            vocab = v
        } else if let tokens = metadata["tokenizer.ggml.tokens"], case .array(let list) = tokens {
            vocab = list.count
        } else {
            throw LoraDistError("\(path): cannot tell the vocabulary size (no token_embd.weight, \(p)vocab_size or tokenizer.ggml.tokens)")
        }
        let c = ModelConfig(
            family: family,
            vocabSize: vocab, hiddenSize: hidden, intermediateSize: try required("feed_forward_length"),
            numHiddenLayers: try required("block_count"), numAttentionHeads: heads, numKeyValueHeads: kvHeads,
            headDim: headDim, rmsNormEps: Float(eps), ropeTheta: try m.float(p + "rope.freq_base") ?? 10000,
            maxPositionEmbeddings: try m.int(p + "context_length") ?? 2048,
            tieWordEmbeddings: tensors["output.weight"] == nil,
            biasedProjections: family == .qwen2 ? ["q_proj", "k_proj", "v_proj"] : [],
            qkNorm: family == .qwen3,
            bosTokenId: try m.int("tokenizer.ggml.bos_token_id"), eosTokenId: try m.int("tokenizer.ggml.eos_token_id"))
        try c.validate(source: path)
        try checkConsumed(tensorNames, by: c, arch: arch, path: path)
        return c
    }

    /// Refuses the first tensor (in file order) that a model of config `c` does not consume.
    static func checkConsumed(_ names: [String], by c: ModelConfig, arch: String, path: String) throws {
        // the names of one layer, from the model's own parameter list (a one-layer copy)
        var one = c
        one.numHiddenLayers = 1
        var top = Set<String>(), perLayer = Set<String>()
        for spec in try LlamaModel.specs(config: one, lora: nil) {
            let g = ggufName(spec.name)!
            if g.hasPrefix("blk.0.") { perLayer.insert(String(g.dropFirst("blk.0.".count))) } else { top.insert(g) }
        }
        func consumed(_ name: String) -> Bool {
            if top.contains(name) { return true }
            guard name.hasPrefix("blk.") else { return false }
            let rest = name.dropFirst(4)
            guard let dot = rest.firstIndex(of: "."), let n = Int(rest[..<dot]), n >= 0, n < c.numHiddenLayers,
                  String(n) == rest[..<dot] else { return false }
            return perLayer.contains(String(rest[rest.index(after: dot)...]))
        }
        for name in names where !consumed(name) {
            let hint: String
            if name.hasSuffix(".bias") {
                hint = arch == "qwen2" ? " (a qwen2 model has biases on q, k and v only)" : " (a \(arch) model has no biases)"
            } else if name.hasSuffix("_norm.weight") && name.hasPrefix("blk.") {
                hint = " (a \(arch) model has no such norm)"
            } else if name.contains("_exps.") || name.contains("ffn_gate_inp") || name.contains("_shexp") {
                hint = " (mixture of experts: not supported)"
            } else if name.hasPrefix("cls") {
                hint = " (a classifier or reranker head: not a causal LM)"
            } else if name.hasPrefix("blk."), let n = Int(name.dropFirst(4).prefix { $0 != "." }), n >= c.numHiddenLayers {
                hint = " (\(arch).block_count is \(c.numHiddenLayers))"
            } else {
                hint = ""
            }
            throw LoraDistError("\(path): tensor '\(name)' is not consumed by a \(arch) model of this config\(hint): refusing to ignore it")
        }
    }

    /// Typed reads of a metadata dictionary: nil when absent, an error when of another type.
    struct Metadata {
        let values: [String: GGUFValue]
        let path: String

        func typeError(_ key: String, _ v: GGUFValue, _ want: String) -> LoraDistError {
            LoraDistError("\(path): metadata '\(key)' is \(v.kind) (\(v)), expected \(want)")
        }
        func string(_ key: String) throws -> String? {
            guard let v = values[key] else { return nil }
            guard case .string(let s) = v else { throw typeError(key, v, "a string") }
            return s
        }
        func int(_ key: String) throws -> Int? {
            guard let v = values[key] else { return nil }
            guard let n = v.intValue else { throw typeError(key, v, "an integer") }
            return n
        }
        func float(_ key: String) throws -> Double? {
            guard let v = values[key] else { return nil }
            switch v {
            case .float(let f): return f
            case .uint(let u): return Double(u)
            case .int(let i): return Double(i)
            default: throw typeError(key, v, "a number")
            }
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = values[key] else { return nil }
            guard case .bool(let b) = v else { throw typeError(key, v, "a bool") }
            return b
        }
    }

    // MARK: weights

    /// Checks that `f` holds every base tensor of `specs`, with the right shape
    /// (GGUF dims reversed) and a type that can be dequantized.
    public static func checkBase(_ specs: [ParamSpec], in f: GGUFFile) throws {
        for spec in specs where !spec.name.contains(".lora_") {
            guard let g = ggufName(spec.name) else {
                throw LoraDistError("\(f.path): no GGUF tensor name is known for '\(spec.name)'")
            }
            guard let t = f.tensors[g] else {
                let hint = spec.name == "lm_head.weight" ? " (the file ties the output head to token_embd: use tie_word_embeddings)" : ""
                throw LoraDistError("\(f.path): no tensor '\(g)' for '\(spec.name)'\(hint)")
            }
            guard t.shape == spec.shape else {
                throw LoraDistError("\(f.path): tensor '\(g)' has shape \(t.shape) (GGUF dims \(t.dims)), the model expects \(spec.shape) for '\(spec.name)'")
            }
            guard t.type.isDequantizable else {
                throw LoraDistError("\(f.path): tensor '\(g)' has ggml type \(t.type.name), which lora-dist cannot dequantize (supported: \(GGMLType.dequantizable.sorted().joined(separator: ", ")))")
            }
        }
    }

    /// Whether the file's q and k rows are in llama.cpp's permuted RoPE layout (`llama` files only).
    static func permuted(_ f: GGUFFile) throws -> Bool { try f.string("general.architecture") == "llama" }

    /// Checks every base tensor, then dequantizes into the model only the elements
    /// inside the `owned` arena ranges: a rank reads just the blocks of its shard
    /// (row by row for a llama file's q and k, whose rows are un-permuted on the way).
    public static func loadBase(_ model: LlamaModel, from f: GGUFFile, owned: [Range<Int>]? = nil) throws {
        let store = model.store, c = model.config
        try checkBase(store.params.map(\.spec), in: f)
        let unpermute = try permuted(f)
        for p in store.params where !p.name.contains(".lora_") {
            let span = p.offset..<(p.offset + p.spec.slots)
            guard (owned ?? store.all).contains(where: { $0.overlaps(span) }) else { continue }
            let t = try f.tensor(ggufName(p.name)!)
            // q and k, weights and biases alike (as the converter permutes them, and transformers un-permutes)
            let isQ = p.name.hasSuffix(".self_attn.q_proj.weight") || p.name.hasSuffix(".self_attn.q_proj.bias")
            let isK = p.name.hasSuffix(".self_attn.k_proj.weight") || p.name.hasSuffix(".self_attn.k_proj.bias")
            let heads: Int? = !unpermute ? nil : isQ ? c.numAttentionHeads : isK ? c.numKeyValueHeads : nil
            // Under QLoRA `fill` hands over a staging buffer and requantizes it to NF4.
            try store.fill(p, owned: owned ?? store.all) { elements, dst in
                if let heads {
                    try dequantizeUnpermuting(f, t, heads: heads, elements: elements, into: dst, at: elements.lowerBound)
                } else {
                    try f.dequantize(t, elements: elements, into: dst)
                }
            }
        }
    }

    /// The GGUF row that holds Hugging Face row `row` of a q/k weight with `rows` rows in `heads` heads.
    static func sourceRow(_ row: Int, rows: Int, heads: Int) -> Int {
        let d = rows / heads, halfD = d / 2
        let h = row / d, r = row % d
        return h * d + 2 * (r % halfD) + r / halfD
    }

    /// Elements `elements` (Hugging Face order) of a permuted q/k weight (or bias: rows of one
    /// element) into `dst`, which holds the tensor from element `first` on.
    static func dequantizeUnpermuting(_ f: GGUFFile, _ t: GGUFTensorInfo, heads: Int, elements: Range<Int>,
                                      into dst: FPtr, at first: Int) throws {
        let cols = t.dims.count == 1 ? 1 : t.dims[0], rows = t.count / cols
        guard heads > 0, rows % heads == 0, (rows / heads) % 2 == 0 else {
            throw LoraDistError("\(f.path): tensor '\(t.name)' has \(rows) rows, which \(heads) heads of even size cannot split")
        }
        var e = elements.lowerBound
        while e < elements.upperBound {
            let row = e / cols, c0 = e % cols
            let c1 = min(cols, elements.upperBound - row * cols)
            let src = sourceRow(row, rows: rows, heads: heads) * cols
            try f.dequantize(t, elements: (src + c0)..<(src + c1), into: dst + (row * cols + c0 - first))
            e = row * cols + c1
        }
    }
}
