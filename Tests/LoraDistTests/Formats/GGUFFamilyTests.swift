import Foundation
import Testing
@testable import LoraDist

/// GGUF import of llama.cpp's `qwen2` and `qwen3` architectures (and what is refused for all
/// three), against transformers' GGUF loader: fixtures from tools/make_gguf_fixtures.py, see
/// Tests/Fixtures/gguf/README.md. Tolerance: GGUFTests.tinyTolerance (max |Δ| / max |ref|; how it was measured is there).
@Suite("GGUF import: qwen2, qwen3") struct GGUFFamilyTests {
    static let dir = TestPaths.fixtures + "/gguf"
    static let stems = ["qwen2_f32", "qwen2_q8_0", "qwen3_f32", "qwen3_q8_0"]

    static func reference() throws -> SafeTensors { try SafeTensors(path: dir + "/families_reference.safetensors") }
    static func file(_ stem: String) throws -> GGUFFile { try GGUFFile(path: dir + "/\(stem).gguf") }

    static let qwen2 = ModelConfig(family: .qwen2, vocabSize: 64, hiddenSize: 32, intermediateSize: 32, numHiddenLayers: 2,
                                   numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, rmsNormEps: 1e-6, ropeTheta: 1e6,
                                   maxPositionEmbeddings: 128, tieWordEmbeddings: true,
                                   biasedProjections: ["q_proj", "k_proj", "v_proj"], bosTokenId: 1, eosTokenId: 2)
    static let qwen3 = ModelConfig(family: .qwen3, vocabSize: 64, hiddenSize: 32, intermediateSize: 32, numHiddenLayers: 2,
                                   numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, rmsNormEps: 1e-6, ropeTheta: 1e6,
                                   maxPositionEmbeddings: 128, tieWordEmbeddings: false, qkNorm: true,
                                   bosTokenId: 1, eosTokenId: 2)

    // MARK: config and names

    @Test("config from the <arch>.* metadata", arguments: stems)
    func configFromMetadata(stem: String) throws {
        let c = try GGUFImport.config(Self.file(stem))
        #expect(c == (stem.hasPrefix("qwen2") ? Self.qwen2 : Self.qwen3))
    }

    @Test func llamaFilesStayLlama() throws {
        let c = try GGUFImport.config(GGUFFile(path: Self.dir + "/tiny_q4.gguf"))
        #expect(c.family == .llama && c.biasedProjections.isEmpty && !c.qkNorm)
    }

    @Test func biasAndNormNames() {
        #expect(GGUFImport.ggufName("model.layers.3.self_attn.q_proj.bias") == "blk.3.attn_q.bias")
        #expect(GGUFImport.ggufName("model.layers.0.self_attn.v_proj.bias") == "blk.0.attn_v.bias")
        #expect(GGUFImport.ggufName("model.layers.1.self_attn.q_norm.weight") == "blk.1.attn_q_norm.weight")
        #expect(GGUFImport.ggufName("model.layers.1.self_attn.k_norm.weight") == "blk.1.attn_k_norm.weight")
        #expect(GGUFImport.ggufName("model.layers.0.self_attn.q_proj.lora_B.weight") == nil)
    }

    // MARK: weights and logits

    func load(_ stem: String, owned: [Range<Int>]? = nil) throws -> LlamaModel {
        let f = try Self.file(stem)
        let model = try LlamaModel(config: GGUFImport.config(f), lora: nil, maxBatch: 2, seqLen: 8)
        try GGUFImport.loadBase(model, from: f, owned: owned)
        return model
    }

    static let referenceWeights = [
        "qwen2": ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.bias", "model.layers.0.self_attn.k_proj.bias"],
        "qwen3": ["model.layers.1.self_attn.q_proj.weight", "model.layers.0.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight"],
    ]

    @Test("GGUF → LlamaModel gives transformers' weights (not un-permuted) and logits", arguments: stems)
    func matchesTransformers(stem: String) throws {
        let arch = String(stem.prefix(5))
        let model = try load(stem)
        let ref = try Self.reference()
        for name in Self.referenceWeights[arch]! {
            let p = model.store[name]
            let got = Array(UnsafeBufferPointer(start: p.value, count: p.count))
            let want = try ref.floats("\(stem).\(name)")
            #expect(got == want, "\(stem): \(name) differs from transformers'")
            if name.hasSuffix("q_proj.weight") {
                // the check can tell: llama's un-permutation would have moved rows
                let rows = p.spec.shape[0], cols = p.spec.shape[1], heads = model.config.numAttentionHeads
                var unpermuted = [Float](repeating: 0, count: got.count)
                for r in 0..<rows {
                    let s = GGUFImport.sourceRow(r, rows: rows, heads: heads)
                    for c in 0..<cols { unpermuted[r * cols + c] = got[s * cols + c] }
                }
                #expect(unpermuted != want)
            }
        }
        let ids = try ref.ints("\(arch).input_ids").map { Int32($0) }
        let v = model.config.vocabSize
        let logits = ids.withUnsafeBufferPointer { idp in
            Array(UnsafeBufferPointer(start: model.forward(ids: idp.baseAddress!, batch: 2), count: 2 * 8 * v))
        }
        let err = relativeError(logits, try ref.floats("\(stem).logits"))
        print("\(stem): logits relative error \(err) against transformers")
        recordFixtureError("gguf \(stem) logits", err)
        #expect(err < GGUFTests.tinyTolerance, "\(stem): logits relative error \(err)")
    }

    @Test("two ranks owning complementary halves load what one full load does", arguments: ["qwen2_q8_0", "qwen3_f32"])
    func shardedLoad(stem: String) throws {
        let full = try load(stem)
        let total = full.store.totalCount
        let a = total / 3 + 7, b = total / 2 + 13, c = 2 * total / 3 + 5
        let ra = try load(stem, owned: [0..<a, b..<c]), rb = try load(stem, owned: [a..<b, c..<total])
        var same = true
        for i in 0..<total {
            let got = (i < a || (i >= b && i < c)) ? ra.store.values[i] : rb.store.values[i]
            if got.bitPattern != full.store.values[i].bitPattern { same = false }
        }
        #expect(same, "the two halves together differ from a full load")
    }

    /// A llama file's q/k biases are permuted like the weights (the converter permutes
    /// q_proj.bias too): the un-permutation handles one-element rows.
    @Test func unpermutesOneDimensionalTensors() throws {
        let f = try Self.file("qwen2_f32")
        let t = try f.tensor("blk.0.attn_q.bias")
        let plain = try f.floats("blk.0.attn_q.bias")
        var out = [Float](repeating: .nan, count: 32)
        try out.withUnsafeMutableBufferPointer {
            try GGUFImport.dequantizeUnpermuting(f, t, heads: 4, elements: 0..<32, into: $0.baseAddress!, at: 0)
        }
        #expect(out == (0..<32).map { plain[GGUFImport.sourceRow($0, rows: 32, heads: 4)] })
        var part = [Float](repeating: .nan, count: 5)
        try part.withUnsafeMutableBufferPointer {
            try GGUFImport.dequantizeUnpermuting(f, t, heads: 4, elements: 9..<14, into: $0.baseAddress!, at: 9)
        }
        #expect(part == Array(out[9..<14]))
    }

    // MARK: refusals

    /// config() over the fixture's metadata and tensor list, edited.
    func config(_ stem: String, set: [String: GGUFValue] = [:], remove: [String] = [], addTensors: [String] = []) throws -> ModelConfig {
        let f = try Self.file(stem)
        var meta = f.metadata
        for k in remove { meta[k] = nil }
        for (k, v) in set { meta[k] = v }
        var tensors = f.tensors, names = f.tensorNames
        let any = f.tensors["output_norm.weight"]!
        for n in addTensors {
            tensors[n] = GGUFTensorInfo(name: n, dims: any.dims, type: any.type, offset: any.offset, byteRange: any.byteRange)
            names.append(n)
        }
        return try GGUFImport.config(metadata: meta, tensors: tensors, tensorNames: names, path: f.path)
    }

    @Test func unknownArchitecturesAreRefusedInOneLine() throws {
        for arch in ["gemma", "qwen2moe", "qwen3moe", "mistral3", "phi3", "qwen"] {
            let e = errorMessage { _ = try config("qwen2_f32", set: ["general.architecture": .string(arch)]) }
            #expect(e?.hasSuffix("qwen2_f32.gguf: general.architecture is '\(arch)': lora-dist imports the GGUF architectures llama, qwen2, qwen3") == true, "\(e ?? "accepted")")
            #expect(e?.contains("\n") == false)
        }
        let e = errorMessage { _ = try config("qwen3_f32", remove: ["general.architecture"]) }
        #expect(e?.contains("no general.architecture") == true, "\(e ?? "accepted")")
        // on disk: a patched copy of the file
        let m = try patched("qwen2_f32.gguf") { data in
            let r = try #require(data.range(of: Data("general.architecture".utf8)))
            let value = r.upperBound + 4 + 8  // value type, string length
            data.replaceSubrange(value..<(value + 5), with: Array("gemma".utf8))
        }
        #expect(m?.contains("general.architecture is 'gemma': lora-dist imports the GGUF architectures llama, qwen2, qwen3") == true, "\(m ?? "accepted")")
    }

    @Test func unconsumedTensorsAreRefusedByName() throws {
        let cases: [(String, String, String)] = [
            ("qwen2_f32", "blk.0.attn_output.bias", "a qwen2 model has biases on q, k and v only"),
            ("qwen2_q8_0", "blk.1.ffn_down.bias", "a qwen2 model has biases on q, k and v only"),
            ("qwen2_f32", "blk.0.attn_q_norm.weight", "a qwen2 model has no such norm"),
            ("qwen3_f32", "blk.1.attn_q.bias", "a qwen3 model has no biases"),
            ("tiny_q4", "blk.0.attn_k.bias", "a llama model has no biases"),
            ("tiny_f32", "blk.1.attn_k_norm.weight", "a llama model has no such norm"),
            ("qwen3_q8_0", "blk.2.attn_q.weight", "qwen3.block_count is 2"),
            ("qwen3_f32", "blk.0.ffn_gate_exps.weight", "mixture of experts"),
            ("qwen3_f32", "cls.output.weight", "reranker"),
            ("qwen2_f32", "blk.0.attn_rot_embd", ""),
            ("qwen2_f32", "blk.00.attn_q.weight", ""),
            ("qwen3_f32", "token_types.weight", ""),
        ]
        for (stem, tensor, hint) in cases {
            let e = errorMessage { _ = try config(stem, addTensors: [tensor]) }
            #expect(e?.contains("tensor '\(tensor)' is not consumed by a \(stem.hasPrefix("tiny") ? "llama" : String(stem.prefix(5))) model") == true, "\(e ?? "accepted")")
            #expect((hint.isEmpty || e?.contains(hint) == true) && e?.hasSuffix("refusing to ignore it") == true, "\(e ?? "accepted")")
        }
        var e = errorMessage { _ = try config("qwen3_f32", addTensors: ["rope_freqs.weight"]) }
        #expect(e?.contains("has rope_freqs.weight") == true, "\(e ?? "accepted")")
        // on disk: blk.1.attn_v.bias renamed blk.1.ffn_up.bias (same length)
        e = try patched("qwen2_q8_0.gguf") { data in
            let r = try #require(data.range(of: Data("blk.1.attn_v.bias".utf8)))
            data.replaceSubrange(r, with: Array("blk.1.ffn_up.bias".utf8))
        }
        #expect(e?.contains("tensor 'blk.1.ffn_up.bias' is not consumed by a qwen2 model of this config (a qwen2 model has biases on q, k and v only)") == true, "\(e ?? "accepted")")
        // and a missing one is named when the weights are checked
        let f = try Self.file("qwen3_f32")
        var c = try GGUFImport.config(f)
        c.biasedProjections = ["q_proj"]
        e = errorMessage { try GGUFImport.checkBase(LlamaModel.specs(config: c, lora: nil), in: f) }
        #expect(e?.contains("no tensor 'blk.1.attn_q.bias' for 'model.layers.1.self_attn.q_proj.bias'") == true, "\(e ?? "passed")")
    }

    @Test func unsupportedMetadataIsRefusedByName() throws {
        let refused: [(String, GGUFValue, String)] = [
            ("expert_count", .uint(8), "mixture-of-experts"),
            ("expert_used_count", .uint(2), "mixture-of-experts"),
            ("expert_feed_forward_length", .uint(64), "mixture-of-experts"),
            ("rope.scaling.type", .string("yarn"), "only unscaled RoPE"),
            ("rope.scaling.type", .string("linear"), "only unscaled RoPE"),
            ("rope.scaling.factor", .float(4), "only unscaled RoPE"),
            ("rope.scale_linear", .float(2), "only unscaled RoPE"),
            ("rope.scaling.attn_factor", .float(0.5), "RoPE attention factor"),
            ("rope.dimension_sections", .array([.int(8), .int(4), .int(4), .int(0)]), "multimodal RoPE"),
            ("rope.freq_base_swa", .float(10000), "second RoPE base"),
            ("attention.sliding_window", .uint(4096), "sliding-window attention"),
            ("attn_logit_softcapping", .float(50), "softcapping"),
            ("final_logit_softcapping", .float(30), "softcapping"),
            ("logit_scale", .float(0.5), "logit scale"),
            ("attention.causal", .bool(false), "only causal attention"),
            ("pooling_type", .uint(4), "not a causal LM"),
            ("some_future_key", .uint(1), "not implemented for GGUF architecture"),
        ]
        for stem in ["qwen2_f32", "qwen3_q8_0", "tiny_q4"] {
            let arch = stem.hasPrefix("tiny") ? "llama" : String(stem.prefix(5))
            for (key, value, why) in refused {
                let e = errorMessage { _ = try config(stem, set: [arch + "." + key: value]) }
                #expect(e?.contains("\(stem).gguf: \(arch).\(key) = \(value): ") == true && e?.contains(why) == true, "\(stem) \(key): \(e ?? "accepted")")
            }
            // the values that mean "as implemented", and keys that do not change the math
            let accepted: [String: GGUFValue] = [
                "expert_count": .uint(0), "expert_used_count": .uint(0), "rope.scaling.type": .string("none"),
                "rope.scaling.factor": .float(1), "rope.scale_linear": .float(1), "rope.scaling.attn_factor": .float(1),
                "attention.causal": .bool(true), "pooling_type": .uint(0), "attention.sliding_window": .uint(0),
                "attention.layer_norm_epsilon": .float(1e-5), "rope.scaling.finetuned": .bool(false),
                "rope.scaling.original_context_length": .uint(4096),
            ]
            let base = try config(stem)
            for (key, value) in accepted {
                #expect(try config(stem, set: [arch + "." + key: value]) == base, "\(stem) \(key)")
            }
            // another architecture's keys are not this one's business (llama.cpp does not read them)
            #expect(try config(stem, set: ["gemma2.attn_logit_softcapping": .float(50)]) == base)
        }
        let checks: [([String: GGUFValue], String)] = [
            (["general.type": .string("adapter")], "general.type is 'adapter'"),
            (["split.count": .uint(3)], "one of 3 split GGUF files"),
            (["qwen2.vocab_size": .uint(65)], "qwen2.vocab_size 65 differs from token_embd.weight's 64 rows"),
            (["qwen2.rope.dimension_count": .uint(4)], "partial rotary embeddings are not supported"),
            (["qwen2.attention.value_length": .uint(16)], "qwen2.attention.value_length 16 differs from the head dim 8"),
            (["qwen2.feed_forward_length": .array([.uint(32), .uint(32)])], "'qwen2.feed_forward_length' is an array"),
            (["qwen2.attention.head_count": .string("4")], "'qwen2.attention.head_count' is a string"),
        ]
        for (set, want) in checks {
            let e = errorMessage { _ = try config("qwen2_f32", set: set) }
            #expect(e?.contains(want) == true, "\(set): \(e ?? "accepted")")
        }
        var e = errorMessage { _ = try config("qwen3_f32", remove: ["qwen3.attention.layer_norm_rms_epsilon"]) }
        #expect(e?.contains("missing qwen3.attention.layer_norm_rms_epsilon") == true, "\(e ?? "accepted")")
        e = errorMessage { _ = try config("qwen3_f32", remove: ["qwen3.block_count"]) }
        #expect(e?.contains("missing qwen3.block_count") == true, "\(e ?? "accepted")")
        // a llama file's keys under another name are not read: a qwen3 file with llama.* keys only is incomplete
        e = errorMessage { _ = try config("tiny_q4", set: ["general.architecture": .string("qwen3")]) }
        #expect(e?.contains("missing qwen3.") == true, "\(e ?? "accepted")")
    }

    /// A patched copy of a fixture: the message config() refuses it with (nil: accepted).
    func patched(_ fixture: String, _ patch: (inout Data) throws -> Void) throws -> String? {
        var data = try Data(contentsOf: URL(fileURLWithPath: Self.dir + "/" + fixture))
        try patch(&data)
        let tmp = TestPaths.tempDir("gguf-family")
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let path = tmp + "/" + fixture
        try data.write(to: URL(fileURLWithPath: path))
        return errorMessage { _ = try GGUFImport.config(GGUFFile(path: path)) }
    }
}

/// The message of the error `body` throws (nil: it did not throw).
private func errorMessage(_ body: () throws -> Void) -> String? {
    do { try body(); return nil } catch let e as LoraDistError { return e.message } catch { return "\(error)" }
}
