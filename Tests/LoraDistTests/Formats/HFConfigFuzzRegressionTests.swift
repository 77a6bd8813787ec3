import Foundation
import Testing
@testable import LoraDist

/// config.json inputs the fuzz-config target (Fuzz/config, tools/fuzz.sh) found trapping
/// HFConfigReader, and their neighbours: each is now a LoraDistError naming the field.
@Suite struct HFConfigFuzzRegressionTests {
    /// fuzz-config: a Qwen2 config.json with "num_hidden_layers": 0 and a layer_types list
    /// unwrapped the first element of an empty list (HFConfigReader).
    static let zeroLayerConfig = """
        {
          "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "dtype": "float32",
          "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.2,
          "intermediate_size": 48, "layer_types": ["full_attention", "full_attention"], "max_piioostn_embeddings": 64,
          "max_window_layers": 1, "model_type": "qwen2", "num_attention_heads": 4, "num_hidden_layers": 0,
          "num_key_value_heads": 2, "pad_token_id": null, "rms_norm_eps": 1e-06,
          "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "sliding_window": 4,
          "tie_word_embeddings": true, "transformers_version": "5.24.0", "use_cache": true,
          "use_sliding_window": false, "vocab_size": 64
        }
        """

    @Test("config.json: layer_types with zero, negative or huge num_hidden_layers is refused")
    func layerTypes() throws {
        for layers in ["0", "-1", "100000000000000"] {
            let json = Self.zeroLayerConfig.replacingOccurrences(of: "\"num_hidden_layers\": 0", with: "\"num_hidden_layers\": \(layers)")
            #expect(json.contains("\"num_hidden_layers\": \(layers)"))
            #expect(throws: LoraDistError.self) { try ModelConfig.fromHuggingFace(json: Data(json.utf8), source: "config.json") }
        }
        // the list still has to match the layer count when the count is fine
        let two = Self.zeroLayerConfig.replacingOccurrences(of: "\"num_hidden_layers\": 0", with: "\"num_hidden_layers\": 3")
            .replacingOccurrences(of: "\"max_piioostn_embeddings\": 64,", with: "")
        do { _ = try ModelConfig.fromHuggingFace(json: Data(two.utf8), source: "config.json"); Issue.record("accepted") } catch let e as LoraDistError {
            #expect(e.message.contains("layer_types"))
        }
        let three = two.replacingOccurrences(of: "\"full_attention\", \"full_attention\"]", with: "\"full_attention\", \"full_attention\", \"full_attention\"]")
        #expect(try ModelConfig.fromHuggingFace(json: Data(three.utf8), source: "config.json").numHiddenLayers == 3)
    }

    /// fuzz-config: llama3 rope scaling with original_max_position_embeddings 1e24 trapped
    /// converting the Double to Int (HFConfigReader.rope).
    static let hugeOriginalContext = """
        {
          "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1,
          "eos_token_id": 4, "head_dim": 16, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.2,
          "intermediate_size": 48, "max_position_embeddings": 8192, "mlp_bias": false, "model_type": "llama",
          "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": null,
          "pretraining_tp": 1, "rms_norm_eps": 1e-06,
          "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                           "original_max_position_embeddings": 999999999999999999999512, "rope_type": "llama3"},
          "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "float32", "transformers_": 48,
          "mversion": "5.24.0", "use_cache": true, "ovcab_size": 64
        }
        """

    @Test("config.json: llama3 original_max_position_embeddings must be an integer in range")
    func ropeOriginalContext() throws {
        let key = "\"original_max_position_embeddings\": 999999999999999999999512"
        for value in ["999999999999999999999512", "-1e300", "4.7", "1e15"] {
            let json = Self.hugeOriginalContext.replacingOccurrences(of: key, with: "\"original_max_position_embeddings\": \(value)")
            do { _ = try ModelConfig.fromHuggingFace(json: Data(json.utf8), source: "config.json"); Issue.record("accepted \(value)") }
            catch let e as LoraDistError { #expect(e.message.contains("original_max_position_embeddings"), "\(e.message)") }
        }
        // in range it is read (with the mangled keys of the crashing input put right)
        let fine = Self.hugeOriginalContext.replacingOccurrences(of: key, with: "\"original_max_position_embeddings\": 8192")
            .replacingOccurrences(of: "\"transformers_\": 48,", with: "").replacingOccurrences(of: "\"mversion\": \"5.24.0\",", with: "")
            .replacingOccurrences(of: "\"ovcab_size\"", with: "\"vocab_size\"")
        #expect(try ModelConfig.fromHuggingFace(json: Data(fine.utf8), source: "config.json").ropeScaling?.originalMaxPositionEmbeddings == 8192)
    }
}
