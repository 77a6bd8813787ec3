import Foundation

/// Llama models from GGUF files (llama.cpp's format): the config from the `llama.*`
/// metadata, the base weights dequantized to fp32.
///
/// llama.cpp's converter stores q_proj and k_proj with the rows of each head
/// permuted for its RoPE layout (`permute(w, n_head, n_head_kv)`: reshape to
/// [heads, 2, D/2, in], swap the middle axes). Loading undoes it: Hugging Face row
/// h·D + i·(D/2) + j comes from GGUF row h·D + 2j + i, with the query heads for
/// q and the key-value heads for k — what transformers' GGUF loader does too.
public enum GGUFImport {
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

    /// The model's shape from `general.architecture` == "llama" and the `llama.*` keys.
    /// vocab_size comes from token_embd.weight (else llama.vocab_size, else the token
    /// list); the word embeddings are tied when there is no output.weight.
    public static func config(_ f: GGUFFile) throws -> ModelConfig {
        let path = f.path
        guard let arch = try f.string("general.architecture") else {
            throw LoraDistError("\(path): no general.architecture in the GGUF metadata")
        }
        guard arch == "llama" else {
            throw LoraDistError("\(path): general.architecture is '\(arch)'; only llama GGUF files can be imported")
        }
        func required(_ key: String) throws -> Int {
            guard let v = try f.int("llama." + key) else { throw LoraDistError("\(path): missing llama.\(key)") }
            return v
        }
        if let experts = try f.int("llama.expert_count"), experts > 0 {
            throw LoraDistError("\(path): llama.expert_count is \(experts): mixture-of-experts models are not supported")
        }
        let hidden = try required("embedding_length")
        let heads = try required("attention.head_count")
        guard heads > 0 else { throw LoraDistError("\(path): llama.attention.head_count must be positive, got \(heads)") }
        let kvHeads = try f.int("llama.attention.head_count_kv") ?? heads
        let keyLength = try f.int("llama.attention.key_length")
        let ropeDims = try f.int("llama.rope.dimension_count")
        if let k = keyLength, let r = ropeDims, k != r {
            throw LoraDistError("\(path): llama.rope.dimension_count \(r) differs from llama.attention.key_length \(k): partial rotary embeddings are not supported")
        }
        let headDim = keyLength ?? ropeDims ?? hidden / heads
        if let v = try f.int("llama.attention.value_length"), v != headDim {
            throw LoraDistError("\(path): llama.attention.value_length \(v) differs from the head dim \(headDim)")
        }
        if let kind = try f.string("llama.rope.scaling.type"), kind != "none" {
            throw LoraDistError("\(path): llama.rope.scaling.type '\(kind)' is not supported (only unscaled RoPE)")
        }
        if f.tensors["rope_freqs.weight"] != nil {
            throw LoraDistError("\(path): has rope_freqs.weight (Llama 3 RoPE scaling), which is not supported")
        }
        guard let eps = try f.float("llama.attention.layer_norm_rms_epsilon") else {
            throw LoraDistError("\(path): missing llama.attention.layer_norm_rms_epsilon")
        }
        let vocab: Int
        if let t = f.tensors["token_embd.weight"], t.dims.count == 2 {
            vocab = t.dims[1]
        } else if let v = try f.int("llama.vocab_size") {
            vocab = v
        } else if let tokens = f.metadata["tokenizer.ggml.tokens"], case .array(let list) = tokens {
            vocab = list.count
        } else {
            throw LoraDistError("\(path): cannot tell the vocabulary size (no token_embd.weight, llama.vocab_size or tokenizer.ggml.tokens)")
        }
        let c = ModelConfig(
            vocabSize: vocab, hiddenSize: hidden, intermediateSize: try required("feed_forward_length"),
            numHiddenLayers: try required("block_count"), numAttentionHeads: heads, numKeyValueHeads: kvHeads,
            headDim: headDim, rmsNormEps: Float(eps), ropeTheta: try f.float("llama.rope.freq_base") ?? 10000,
            maxPositionEmbeddings: try f.int("llama.context_length") ?? 2048,
            tieWordEmbeddings: f.tensors["output.weight"] == nil,
            bosTokenId: try f.int("tokenizer.ggml.bos_token_id"), eosTokenId: try f.int("tokenizer.ggml.eos_token_id"))
        try c.validate(source: path)
        return c
    }

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

    /// Checks every base tensor, then dequantizes into the model only the elements
    /// inside the `owned` arena ranges: a rank reads just the blocks of its shard
    /// (row by row for q and k, whose rows are un-permuted on the way).
    public static func loadBase(_ model: LlamaModel, from f: GGUFFile, owned: [Range<Int>]? = nil) throws {
        let store = model.store, c = model.config
        try checkBase(store.params.map(\.spec), in: f)
        for p in store.params where !p.name.contains(".lora_") {
            let span = p.offset..<(p.offset + p.spec.slots)
            guard (owned ?? store.all).contains(where: { $0.overlaps(span) }) else { continue }
            let t = try f.tensor(ggufName(p.name)!)
            let heads: Int? = p.name.hasSuffix(".self_attn.q_proj.weight") ? c.numAttentionHeads
                : p.name.hasSuffix(".self_attn.k_proj.weight") ? c.numKeyValueHeads : nil
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

    /// Elements `elements` (Hugging Face order) of a permuted q/k weight into `base` (the whole tensor's start).
    static func dequantizeUnpermuting(_ f: GGUFFile, _ t: GGUFTensorInfo, heads: Int, elements: Range<Int>,
                                      into dst: FPtr, at first: Int) throws {
        let rows = t.shape[0], cols = t.shape[1]
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
