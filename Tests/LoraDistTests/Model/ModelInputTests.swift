import Foundation
import Testing
@testable import LoraDist

/// Model inputs are bounded before arithmetic or allocation on their numbers, and a
/// loaded model with NaN or ∞ weights is refused naming the tensor.
@Suite struct ModelInputTests {
    static func message(_ body: () throws -> Void) -> String {
        do { try body(); return "(accepted)" } catch let e as LoraDistError { return e.message } catch { return "\(error)" }
    }

    @Test("huge dimensions are refused before any count overflows")
    func hugeDimensions() {
        for (key, value) in [("vocab_size", 1e18), ("hidden_size", 1e12), ("num_hidden_layers", 1e9), ("intermediate_size", 9e15)] {
            let m = Self.message { _ = try FamilyTests.parse(FamilyTests.with([key: value])) }
            #expect(m.contains(key) && m.contains("out of range"), "\(key): \(m)")
        }
        // Each dimension in range, the whole too large: refused by its parameter count.
        let m = Self.message { _ = try FamilyTests.parse(FamilyTests.with(["vocab_size": 1 << 24, "hidden_size": 1 << 20])) }
        #expect(m.contains("parameters, more than"), "\(m)")
    }

    @Test("LoRA alpha must be a positive finite number; rank bounded")
    func loraNumbers() {
        for alpha: Float in [0, -1, .nan, .infinity] {
            #expect(Self.message { _ = try LoRAConfig(rank: 4, alpha: alpha) }.contains("alpha"), "alpha \(alpha)")
        }
        #expect(Self.message { _ = try LoRAConfig(rank: 1 << 20) }.contains("rank"))
        #expect(Self.message { _ = try LoRAConfig(rank: 4, dropout: .nan) }.contains("dropout"))
    }

    @Test("weights holding NaN or infinity are refused naming the tensor and element", arguments: [Float.nan, .infinity])
    func nonFiniteWeights(_ bad: Float) throws {
        let dir = TestPaths.tempDir("nonfinite")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try FamilyTests.parse(FamilyTests.with(["vocab_size": 258]))
        let specs = try LlamaModel.specs(config: config, lora: nil)
        var tensors = specs.map { (name: $0.name, shape: $0.shape, values: [Float](repeating: 0.01, count: $0.count)) }
        let i = tensors.firstIndex { $0.name == "model.layers.1.mlp.up_proj.weight" }!
        tensors[i].values[17] = bad
        try SafeTensors.write(tensors, to: dir + "/model.safetensors")
        try Files.writeAtomically(try JSONCoding.object(config.huggingFaceJSON()), to: dir + "/config.json")
        for nf4 in [false, true] {
            let model = try LlamaModel(config: config, lora: try LoRAConfig(rank: 2), nf4Base: nf4, maxBatch: 1, seqLen: 4)
            let m = Self.message { try ModelSource(dir).build(model, seed: 1, owned: model.store.all) }
            #expect(m.contains("'model.layers.1.mlp.up_proj.weight' holds a non-finite value"), "nf4 \(nf4): \(m)")
            if !nf4 { #expect(m.contains("element 17"), "\(m)") }
        }
    }
}

extension ModelInputTests {
    static let peft: [String: Any] = [
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"], "bias": "none", "use_dora": false, "rank_pattern": [String: Any](),
        "alpha_pattern": [String: Any](), "modules_to_save": NSNull(), "layers_to_transform": NSNull(),
        "megatron_core": "megatron.core", "qalora_group_size": 16, "loftq_config": [String: Any](),
    ]

    static func peftMessage(_ change: [String: Any]) -> String {
        message { _ = try LoRAConfig.fromPEFT(json: try JSONSerialization.data(withJSONObject: peft.merging(change) { $1 }), source: "a.json") }
    }

    @Test("the adapter configs peft writes load; a LoRA variant lora-dist does not implement is refused by name")
    func peftConfigs() throws {
        #expect(Self.peftMessage([:]) == "(accepted)")
        for f in FamilyTests.fixtures + ["llama_untied", "llama_tied"] {
            _ = try LoRAConfig.fromPEFT(json: Data(contentsOf: URL(fileURLWithPath: TestPaths.fixtures + "/\(f)/adapter/adapter_config.json")))
        }
        for (change, name) in [(["use_dora": true], "use_dora"), (["rank_pattern": ["q_proj": 8]], "rank_pattern"),
                               (["alpha_pattern": ["q_proj": 8]], "alpha_pattern"), (["bias": "all"], "bias"),
                               (["modules_to_save": ["lm_head"]], "modules_to_save"), (["layers_to_transform": [0]], "layers_to_transform"),
                               (["lora_bias": true], "lora_bias"), (["fan_in_fan_out": true], "fan_in_fan_out"),
                               (["some_future_field": 3], "some_future_field"), (["r": 4.7], "\"r\" must be an integer"),
                               (["lora_alpha": "8"], "lora_alpha"), (["lora_alpha": 0], "alpha")] as [([String: Any], String)] {
            let m = Self.peftMessage(change)
            #expect(m.hasPrefix("a.json: ") && m.contains(name), "\(name): \(m)")
        }
    }
}

extension ModelInputTests {
    @Test("a tokenizer.json id beyond 2^24 is refused before its token table is allocated")
    func hugeTokenID() {
        let vocab = TokenizerTests.fromJSON { j in
            var model = j["model"] as! [String: Any]
            var v = model["vocab"] as! [String: Any]
            v["zz"] = 2147483646
            model["vocab"] = v
            j["model"] = model
        }
        #expect(vocab.contains("id 2147483646, out of range"), "\(vocab)")
        let added = TokenizerTests.fromJSON { j in
            j["added_tokens"] = [["id": 2147483646, "content": "<big>", "special": true]]
        }
        #expect(added.contains("added_tokens[0] has id 2147483646, out of range"), "\(added)")
    }
}
