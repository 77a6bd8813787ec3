import Foundation
import Testing
@testable import LoraDist

/// The families lora-dist implements (Llama 1-3.x, Mistral, Qwen2/2.5, Qwen3), and what it
/// refuses by name instead of computing another model.
@Suite struct FamilyTests {
    static func parse(_ obj: [String: Any]) throws -> ModelConfig {
        try ModelConfig.fromHuggingFace(json: try JSONSerialization.data(withJSONObject: obj), source: "cfg.json")
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body(); return "(accepted)" } catch let e as LoraDistError { return e.message } catch { return "\(error)" }
    }

    /// Tests/Fixtures/families, made by tools/make_family_fixtures.py (transformers 5.24, peft 0.21).
    static let fixtures = ["llama3_scaled", "llama_linear", "mistral_window", "qwen2_bias", "qwen3_qknorm"].map { "families/" + $0 }

    static let llama: [String: Any] = [
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
    ]

    static func with(_ changes: [String: Any]) -> [String: Any] {
        llama.merging(changes) { _, new in new }
    }

    /// Each case: a config change, and the field the refusal must name.
    static let refusals: [(String, [String: Any], String)] = [
        ("an unimplemented model type", ["model_type": "gemma", "architectures": ["GemmaForCausalLM"]], "model_type"),
        ("a model type with another class", ["architectures": ["MistralForCausalLM"]], "architectures"),
        ("dynamic rope scaling", ["rope_scaling": ["rope_type": "dynamic", "factor": 2.0]], "rope_type \"dynamic\""),
        ("yarn rope scaling", ["rope_parameters": ["rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6]], "rope_type \"yarn\""),
        ("legacy `type` key", ["rope_scaling": ["type": "longrope", "factor": 4.0]], "rope_type \"longrope\""),
        ("an unknown llama3 key", ["rope_scaling": ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                                   "mscale": 1.0]], "rope_scaling.mscale"),
        ("llama3 without its factors", ["rope_scaling": ["rope_type": "llama3", "factor": 8.0]], "low_freq_factor"),
        ("another activation", ["hidden_act": "gelu_pytorch_tanh"], "hidden_act"),
        ("attention dropout", ["attention_dropout": 0.1], "attention_dropout"),
        ("tensor-parallel pretraining split", ["pretraining_tp": 2], "pretraining_tp"),
        ("logit soft-capping", ["final_logit_softcapping": 30.0], "final_logit_softcapping"),
        ("attention soft-capping", ["attn_logit_softcapping": 50.0], "attn_logit_softcapping"),
        ("embedding scaling", ["embedding_multiplier": 12.0], "embedding_multiplier"),
        ("partial rotary", ["partial_rotary_factor": 0.5], "partial_rotary_factor"),
        ("quantized weights", ["quantization_config": ["quant_method": "bitsandbytes"]], "quantization_config"),
        ("mixture of experts", ["num_local_experts": 8], "num_local_experts"),
        ("Qwen's sliding windows", ["model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                                    "use_sliding_window": true, "sliding_window": 4], "use_sliding_window"),
        ("multimodal RoPE", ["model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "use_mrope": true], "use_mrope"),
        ("per-layer attention kinds", ["layer_types": ["sliding_attention", "full_attention"]], "layer_types"),
        ("a non-positive rms_norm_eps", ["rms_norm_eps": -1e-6], "rms_norm_eps"),
        ("per-layer-type RoPE", ["rope_parameters": ["full_attention": ["rope_type": "default"]]], "rope_parameters"),
    ]

    @Test("every config field that changes the math and is not implemented is refused by name",
          arguments: refusals.indices)
    func refusal(_ i: Int) {
        let (what, change, field) = Self.refusals[i]
        let m = Self.message { _ = try Self.parse(Self.with(change)) }
        #expect(m.hasPrefix("cfg.json: "), "\(what): \(m)")
        #expect(m.contains(field), "\(what): '\(m)' does not name \(field)")
    }

    @Test("the families' own fields are read into the config")
    func families() throws {
        let l3 = try Self.parse(Self.with(["rope_theta": 500000.0, "tie_word_embeddings": true,
                                           "rope_scaling": ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192]]))
        #expect(l3.ropeScaling == RopeScaling(kind: .llama3, factor: 8, lowFreqFactor: 1, highFreqFactor: 4,
                                              originalMaxPositionEmbeddings: 8192))
        #expect(l3.ropeTheta == 500000 && l3.tieWordEmbeddings)
        let lin = try Self.parse(Self.with(["rope_parameters": ["rope_type": "linear", "factor": 2.0, "rope_theta": 1e4]]))
        #expect(lin.ropeScaling == RopeScaling(kind: .linear, factor: 2))
        let biased = try Self.parse(Self.with(["attention_bias": true, "mlp_bias": true]))
        #expect(biased.biasedProjections == LoRAConfig.projections)
        let mistral = try Self.parse(Self.with(["model_type": "mistral", "architectures": ["MistralForCausalLM"],
                                                "sliding_window": 4096]))
        #expect(mistral.family == .mistral && mistral.slidingWindow == 4096)
        let noWindow = try Self.parse(Self.with(["model_type": "mistral", "architectures": ["MistralForCausalLM"],
                                                 "sliding_window": NSNull()]))
        #expect(noWindow.slidingWindow == nil)
        let qwen2 = try Self.parse(Self.with(["model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                                              "use_sliding_window": false, "sliding_window": 32768, "max_window_layers": 21]))
        #expect(qwen2.biasedProjections == ["q_proj", "k_proj", "v_proj"] && qwen2.slidingWindow == nil)
        let qwen3 = try Self.parse(Self.with(["model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": 16,
                                              "attention_bias": false, "layer_types": ["full_attention", "full_attention"]]))
        #expect(qwen3.qkNorm && qwen3.headDim == 16 && qwen3.biasedProjections.isEmpty)
        // What the families write is what they read.
        for c in [l3, lin, biased, mistral, noWindow, qwen2, qwen3] {
            #expect(try ModelConfig.fromHuggingFace(json: JSONCoding.object(c.huggingFaceJSON())) == c)
        }
    }

    @Test("llama3 RoPE scaling keeps short wavelengths, divides long ones by the factor, blends between")
    func llama3Frequencies() {
        let s = RopeScaling(kind: .llama3, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64)
        let plain = RopeScaling.inverseFrequencies(headDim: 16, theta: 10000, scaling: nil)
        let scaled = RopeScaling.inverseFrequencies(headDim: 16, theta: 10000, scaling: s)
        var kept = 0, divided = 0, blended = 0
        for (f, g) in zip(plain, scaled) {
            let wavelen = 2 * Float.pi / f
            if wavelen < 16 { #expect(g == f); kept += 1 }
            else if wavelen > 64 { #expect(abs(g - f / 8) <= 1e-7 * f); divided += 1 }
            else { #expect(g < f && g > f / 8); blended += 1 }
        }
        #expect(kept > 0 && divided > 0 && blended > 0)
    }

    @Test("a weight tensor the model does not consume is refused by name")
    func unconsumedTensor() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/lora-dist-family-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let config = try Self.parse(Self.with(["vocab_size": 258]))  // the byte tokenizer's
        let specs = try LlamaModel.specs(config: config, lora: nil)
        var tensors = specs.map { (name: $0.name, shape: $0.shape, values: [Float](repeating: 0.01, count: $0.count)) }
        tensors.append((name: "model.layers.0.self_attn.q_proj.bias", shape: [32], values: [Float](repeating: 0, count: 32)))
        try SafeTensors.write(tensors, to: dir + "/model.safetensors")
        try Files.writeAtomically(try JSONCoding.object(config.huggingFaceJSON()), to: dir + "/config.json")
        let m = Self.message { _ = try ModelSource(dir).checkBase(specs) }
        #expect(m.contains("'model.layers.0.self_attn.q_proj.bias' is not consumed"), "\(m)")
        #expect(m.contains("announces no bias"), "\(m)")
    }
}

extension FamilyTests {
    @Test("greedy generation with the key/value cache equals transformers' generate(do_sample=False), base and adapter",
          arguments: fixtures)
    func greedyGeneration(_ name: String) throws {
        let f = try ReferenceTests.Fixture(name)
        let prompt = try f.reference.ints("generate.prompt_ids").map { Int32($0) }
        for (key, adapter) in [("generate.base_ids", false), ("generate.lora_ids", true)] {
            let want = try f.reference.ints(key).map { Int32($0) }
            let lora = adapter ? try LoRAConfig.fromPEFT(json: Data(contentsOf: URL(fileURLWithPath: f.dir + "/adapter/adapter_config.json"))) : nil
            let model = try LlamaModel(config: f.config, lora: lora, maxBatch: 1, seqLen: prompt.count + want.count)
            try HuggingFace.loadBase(model, from: SafeTensors(path: f.dir + "/model.safetensors"))
            if adapter { try HuggingFace.loadAdapter(model, from: SafeTensors(path: f.dir + "/adapter/adapter_model.safetensors")) }
            let got = Generator(model: model).generate(prompt: prompt, maxNewTokens: want.count)
            #expect(got == want, "\(name) \(key)")
        }
    }

    @Test("cached decoding gives the logits of a full forward at every position")
    func cacheEqualsFullForward() throws {
        for name in Self.fixtures {
            let f = try ReferenceTests.Fixture(name)
            let row = Array(f.ids.prefix(f.seqLen))
            let full = try LlamaModel(config: f.config, lora: nil, maxBatch: 1, seqLen: f.seqLen)
            try HuggingFace.loadBase(full, from: SafeTensors(path: f.dir + "/model.safetensors"))
            let logits = row.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: full.forward(ids: $0.baseAddress!, batch: 1),
                                                                                  count: f.seqLen * f.config.vocabSize)) }
            let g = Generator(model: full)
            // a prefill of 3, then one token at a time
            var got = g.feed(Array(row.prefix(3)))
            let V = f.config.vocabSize
            #expect(relativeError(got, Array(logits[(2 * V)..<(3 * V)])) < 1e-5, "\(name) prefill")
            for t in 3..<f.seqLen {
                got = g.feed([row[t]])
                #expect(relativeError(got, Array(logits[(t * V)..<((t + 1) * V)])) < 1e-5, "\(name) position \(t)")
            }
        }
    }
}
