import Foundation
import Testing
@testable import LoraDist

/// A safetensors file built by hand: 8-byte little-endian header length, header, data.
private func safetensorsBytes(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> Data {
    var h = Data(header.utf8)
    while h.count % 8 != 0 { h.append(UInt8(ascii: " ")) }
    var out = Data()
    withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(h)
    out.append(contentsOf: data)
    return out
}

private func littleEndianBytes(_ values: [UInt16]) -> [UInt8] {
    values.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
}

/// The error message of `body`, or nil when it does not throw.
private func errorMessage(_ body: () throws -> Void) -> String? {
    do { try body(); return nil } catch let e as LoraDistError { return e.message } catch { return "\(error)" }
}

@Suite("SafeTensors reader and writer")
struct SafeTensorsTests {
    static let untied = TestPaths.fixtures + "/llama_untied"

    @Test func roundTripThroughWrite() throws {
        let dir = TestPaths.tempDir("st-roundtrip")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/t.safetensors"
        // Given out of order, with an odd-sized tensor so the header needs padding.
        let tensors: [(name: String, shape: [Int], values: [Float])] = [
            ("zeta", [3], [1, -2, 3.5]),
            ("alpha.weight", [2, 3], [0, 1, 2, 3, 4, 5]),
            ("mid", [], [42]),
            ("empty", [0, 4], []),
        ]
        try SafeTensors.write(tensors, to: path, metadata: ["format": "pt", "note": "hello"])

        let raw = try #require(FileManager.default.contents(atPath: path))
        let n = raw.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        #expect(n % 8 == 0)
        #expect(8 + Int(n) + 4 * 10 == raw.count)

        let st = try SafeTensors(path: path)
        #expect(st.names == ["alpha.weight", "empty", "mid", "zeta"])
        #expect(st.metadata == ["format": "pt", "note": "hello"])
        // Data is laid out in sorted-name order, back to back.
        let ranges = st.names.map { st.entries[$0]!.range }
        #expect(ranges.map(\.lowerBound) == [0, 24, 24, 28])
        #expect(ranges.last!.upperBound == 40)
        for t in tensors {
            let e = try st.entry(t.name)
            #expect(e.dtype == "F32")
            #expect(e.shape == t.shape)
            #expect(try st.floats(t.name) == t.values)
        }
        // Writing over an existing file replaces it whole, leaving no temporary file.
        try SafeTensors.write([("only", [1], [7])], to: path)
        #expect(try SafeTensors(path: path).names == ["only"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["t.safetensors"])
    }

    @Test func readsFixtureModel() throws {
        let st = try SafeTensors(path: Self.untied + "/model.safetensors")
        #expect(st.entries.count == 21)
        #expect(st.metadata["format"] == "pt")
        #expect(st.entries["__metadata__"] == nil)
        let expected: [String: [Int]] = [
            "model.embed_tokens.weight": [64, 32], "lm_head.weight": [64, 32], "model.norm.weight": [32],
            "model.layers.0.self_attn.q_proj.weight": [32, 32], "model.layers.0.self_attn.k_proj.weight": [16, 32],
            "model.layers.1.self_attn.v_proj.weight": [16, 32], "model.layers.1.self_attn.o_proj.weight": [32, 32],
            "model.layers.0.mlp.gate_proj.weight": [48, 32], "model.layers.0.mlp.down_proj.weight": [32, 48],
            "model.layers.1.post_attention_layernorm.weight": [32],
        ]
        for (name, shape) in expected {
            let e = try st.entry(name)
            #expect(e.dtype == "F32", "\(name)")
            #expect(e.shape == shape, "\(name)")
            let v = try st.floats(name)
            #expect(v.count == shape.reduce(1, *))
            #expect(v.allSatisfy { $0.isFinite })
        }
        // Norm weights are 1 + 0.1·randn: near one, not all equal.
        let norm = try st.floats("model.norm.weight")
        #expect(norm.allSatisfy { abs($0 - 1) < 0.6 })
        #expect(Set(norm).count > 1)
    }

    @Test func readsFixtureReference() throws {
        let st = try SafeTensors(path: Self.untied + "/reference.safetensors")
        #expect(st.entries.count == 51)
        let ids = try st.entry("input_ids")
        #expect(ids.dtype == "I64")
        #expect(ids.shape == [2, 8])
        #expect(try st.ints("input_ids") == [11, 34, 2, 47, 3, 7, 35, 54, 57, 40, 16, 16, 50, 2, 15, 20])
        #expect(try st.entry("full.logits").shape == [2, 8, 64])
        #expect(try st.entry("full.loss").shape == [])
        #expect(try st.floats("full.loss") == [4.337958335876465])
        #expect(try st.floats("lora.scaling") == [2])
        #expect(try st.entry("full.grad.model.layers.0.self_attn.k_proj.weight").shape == [16, 32])
        #expect(try st.entry("lora.grad.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").shape == [4, 32])
        // Asking for the wrong kind of tensor is an error, not garbage.
        #expect(errorMessage { _ = try st.floats("input_ids") }?.contains("not a floating tensor") == true)
        #expect(errorMessage { _ = try st.ints("full.loss") }?.contains("not an integer tensor") == true)
    }

    @Test func decodesF16() throws {
        // 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800, 65504 = 0x7BFF, smallest subnormal 0x0001
        let data = safetensorsBytes(
            header: #"{"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]}}"#,
            data: littleEndianBytes([0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001]))
        let st = try SafeTensors(data: data)
        #expect(try st.floats("h") == [1, -2, 0.5, 65504, Float(Float16(bitPattern: 1))])
        #expect(Float(Float16(bitPattern: 1)) == 0x1p-24)
    }

    @Test func decodesBF16() throws {
        // 1.0 = 0x3F80, -2.0 = 0xC000, 0.5 = 0x3F00, 3.140625 = 0x4049
        let data = safetensorsBytes(
            header: #"{"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#,
            data: littleEndianBytes([0x3F80, 0xC000, 0x3F00, 0x4049]))
        let st = try SafeTensors(data: data)
        #expect(try st.entry("b").shape == [2, 2])
        #expect(try st.floats("b") == [1, -2, 0.5, 3.140625])
    }

    @Test func decodesF64AndI32() throws {
        var bytes: [UInt8] = []
        for d in [1.0, -2.0, 0.5] { withUnsafeBytes(of: d.bitPattern.littleEndian) { bytes += $0 } }
        for i: Int32 in [7, -3] { withUnsafeBytes(of: i.littleEndian) { bytes += $0 } }
        let data = safetensorsBytes(
            header: #"{"d":{"dtype":"F64","shape":[3],"data_offsets":[0,24]},"i":{"dtype":"I32","shape":[2],"data_offsets":[24,32]}}"#,
            data: bytes)
        let st = try SafeTensors(data: data)
        #expect(try st.floats("d") == [1, -2, 0.5])
        #expect(try st.ints("i") == [7, -3])
    }

    @Test func rejectsFewerThanEightBytes() {
        let msg = errorMessage { _ = try SafeTensors(data: Data([1, 2, 3]), path: "short.safetensors") }
        #expect(msg?.contains("too short") == true, "\(msg ?? "no error")")
        #expect(msg?.contains("short.safetensors") == true)
    }

    @Test func rejectsHeaderLengthPastTheEnd() {
        let good = safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 128, 63])
        let cases: [Data] = [
            good.prefix(20),                                                        // truncated file
            safetensorsBytes(header: "{}", data: [], declaredLength: 1000),          // lying length
            safetensorsBytes(header: "{}", data: [], declaredLength: UInt64.max),   // would overflow Int
        ]
        for d in cases {
            let msg = errorMessage { _ = try SafeTensors(data: d) }
            #expect(msg?.contains("exceeds the file") == true, "\(msg ?? "no error")")
        }
    }

    @Test func rejectsNonJSONHeader() {
        for header in ["not json at all", "[1, 2, 3]", #"{"a": "#] {
            let msg = errorMessage { _ = try SafeTensors(data: safetensorsBytes(header: header, data: [])) }
            #expect(msg?.contains("header is not a JSON object") == true, "\(header): \(msg ?? "no error")")
        }
    }

    @Test func rejectsMalformedEntry() {
        for entry in [#"{"dtype":"F32","shape":[1]}"#, #"{"dtype":"F32","shape":[1],"data_offsets":[0]}"#,
                      #"{"shape":[1],"data_offsets":[0,4]}"#, #""x""#] {
            let msg = errorMessage { _ = try SafeTensors(data: safetensorsBytes(header: "{\"a\":\(entry)}", data: [0, 0, 0, 0])) }
            #expect(msg?.contains("malformed header entry for 'a'") == true, "\(entry): \(msg ?? "no error")")
        }
    }

    @Test func rejectsOffsetsOutsideTheDataSection() {
        for offsets in ["[0,8]", "[4,8]", "[-4,0]", "[4,0]"] {
            let data = safetensorsBytes(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\(offsets)}}",
                                        data: [0, 0, 128, 63])
            let msg = errorMessage { _ = try SafeTensors(data: data) }
            #expect(msg?.contains("lie outside the 4-byte data section") == true, "\(offsets): \(msg ?? "no error")")
        }
    }

    @Test func rejectsByteLengthNotMatchingShape() {
        // 8 bytes for a [3] F32 tensor (needs 12); 4 bytes for a [2] BF16... needs 4: fine, so use [3].
        let cases = [(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, "needs 12"),
                     (#"{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#, "needs 6")]
        for (header, needs) in cases {
            let msg = errorMessage { _ = try SafeTensors(data: safetensorsBytes(header: header, data: [UInt8](repeating: 0, count: 8))) }
            #expect(msg?.contains("holds 8 bytes but shape [3]") == true, "\(msg ?? "no error")")
            #expect(msg?.contains(needs) == true, "\(msg ?? "no error")")
        }
    }

    @Test func rejectsShapesWhoseSizeOverflows() {
        // Element counts or byte sizes past Int.max must be refused, not trap or wrap to a small size.
        for shape in ["[4611686018427387904]", "[4294967296,4294967296]", "[4294967296,4294967296,0]"] {
            let data = safetensorsBytes(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[0,0]}}", data: [])
            let msg = errorMessage { _ = try SafeTensors(data: data) }
            #expect(msg?.contains("'a' shape \(shape.replacingOccurrences(of: ",", with: ", ")) is too large") == true,
                    "\(shape): \(msg ?? "no error")")
        }
    }

    @Test func rejectsUnknownDtype() {
        let data = safetensorsBytes(header: #"{"q":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}}"#, data: [0])
        let msg = errorMessage { _ = try SafeTensors(data: data) }
        #expect(msg?.contains("'q' has unsupported dtype Q4_K") == true, "\(msg ?? "no error")")
    }

    @Test func rejectsUnknownTensorName() throws {
        let st = try SafeTensors(data: safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                                                       data: [0, 0, 128, 63]), path: "m.safetensors")
        #expect(try st.floats("a") == [1])
        let msg = errorMessage { _ = try st.floats("b") }
        #expect(msg == "m.safetensors: no tensor named 'b'")
        #expect(errorMessage { _ = try st.entry("__metadata__") }?.contains("no tensor named") == true)
    }

    @Test func rejectsUnreadableFile() {
        let msg = errorMessage { _ = try SafeTensors(path: "/nonexistent/dir/model.safetensors") }
        #expect(msg?.contains("cannot read safetensors file") == true)
    }
}

/// Nested so `--filter SafeTensorsTests` runs the whole file.
extension SafeTensorsTests {
    @Suite("ModelConfig.fromHuggingFace")
    struct HuggingFaceConfig {
        static func parse(_ obj: [String: Any]) throws -> ModelConfig {
            try ModelConfig.fromHuggingFace(json: try JSONSerialization.data(withJSONObject: obj), source: "cfg.json")
        }

        static let base: [String: Any] = [
            "vocab_size": 258, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2,
        ]

        @Test func transformers5Form() throws {
            var d = Self.base
            d["rope_parameters"] = ["rope_theta": 500000.0, "rope_type": "default"]
            d["dtype"] = "float32"
            d["head_dim"] = 16          // explicit, differs from hidden / heads
            d["rms_norm_eps"] = 1e-5
            d["max_position_embeddings"] = 128
            d["tie_word_embeddings"] = true
            d["bos_token_id"] = 256
            d["eos_token_id"] = 257
            d["pad_token_id"] = NSNull()
            let c = try Self.parse(d)
            #expect(c.ropeTheta == 500000)
            #expect(c.headDim == 16)
            #expect(c.rmsNormEps == 1e-5)
            #expect(c.maxPositionEmbeddings == 128)
            #expect(c.tieWordEmbeddings)
            #expect(c.bosTokenId == 256 && c.eosTokenId == 257)
            #expect(c.numKeyValueHeads == 2)
        }

        @Test func transformers4Form() throws {
            var d = Self.base
            d["rope_theta"] = 250000.0
            d["torch_dtype"] = "bfloat16"
            d.removeValue(forKey: "num_key_value_heads")   // defaults to the query heads
            let c = try Self.parse(d)
            #expect(c.ropeTheta == 250000)
            #expect(c.headDim == 8)                        // hidden / heads
            #expect(c.numKeyValueHeads == 4)
            #expect(c.rmsNormEps == 1e-6)
            #expect(c.maxPositionEmbeddings == 2048)
            #expect(!c.tieWordEmbeddings)
            #expect(c.bosTokenId == nil && c.eosTokenId == nil)
            // No rope_theta at all: Llama's default.
            #expect(try Self.parse(Self.base).ropeTheta == 10000)
        }

        @Test func eosTokenIdList() throws {
            var d = Self.base
            d["eos_token_id"] = [128001, 128008, 128009]
            #expect(try Self.parse(d).eosTokenId == 128001)
        }

        @Test func fixtureConfig() throws {
            let c = try ModelConfig.load(TestPaths.fixtures + "/llama_untied")
            #expect(c == ModelConfig(vocabSize: 64, hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 2,
                                     numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, rmsNormEps: 1e-6,
                                     ropeTheta: 10000, maxPositionEmbeddings: 64, tieWordEmbeddings: false,
                                     initializerRange: 0.2, bosTokenId: 1, eosTokenId: 2))
            #expect(try ModelConfig.load(TestPaths.fixtures + "/llama_tied/config.json").tieWordEmbeddings)
        }

        @Test(arguments: ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"])
        func missingKey(_ key: String) {
            var d = Self.base
            d.removeValue(forKey: key)
            let msg = errorMessage { _ = try Self.parse(d) }
            #expect(msg == "cfg.json: missing \"\(key)\"")
        }

        @Test func invalidValues() {
            func message(_ change: (inout [String: Any]) -> Void) -> String? {
                var d = Self.base
                change(&d)
                return errorMessage { _ = try Self.parse(d) }
            }
            #expect(message { $0["hidden_size"] = "32" }?.contains("\"hidden_size\" must be an integer") == true)
            #expect(message { $0["hidden_size"] = 32.5 }?.contains("\"hidden_size\" must be an integer") == true)
            #expect(message { $0["num_key_value_heads"] = 3 }?.contains("num_key_value_heads 3 does not divide num_attention_heads 4") == true)
            #expect(message { $0["num_hidden_layers"] = 0 }?.contains("num_hidden_layers must be positive") == true)
            #expect(message { $0["head_dim"] = 7 }?.contains("head_dim 7 must be even") == true)
            #expect(message { $0["rope_parameters"] = ["rope_type": "yarn", "rope_theta": 1.0] }?.contains("rope_type \"yarn\" is not implemented") == true)
            let notObject = errorMessage { _ = try ModelConfig.fromHuggingFace(json: Data("[1]".utf8), source: "x.json") }
            #expect(notObject == "x.json: not a JSON object")
            let notJSON = errorMessage { _ = try ModelConfig.fromHuggingFace(json: Data("{".utf8), source: "x.json") }
            #expect(notJSON == "x.json: not a JSON object")
        }

        @Test func unknownModel() {
            let msg = errorMessage { _ = try ModelConfig.load("/nonexistent/model") }
            #expect(msg?.contains("neither a built-in config") == true)
        }
    }
}
