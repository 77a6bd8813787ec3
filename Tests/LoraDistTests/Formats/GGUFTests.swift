import Foundation
import Testing
@testable import LoraDist

/// GGUF import against gguf-py and transformers' GGUF loader (fixtures from
/// tools/make_gguf_fixtures.py, see Tests/Fixtures/gguf/README.md).
///
/// Tolerances: dequantization must equal gguf-py's bit for bit (the same fp32
/// operations, no BLAS). Logits against transformers' (fixtures made on an Intel Xeon)
/// differ by summation order, which OpenBLAS's sgemm kernel (chosen by CPU) and thread
/// count change; each tolerance is about 4× the worst measured by
/// tools/measure-tolerances.sh (2026-12-02, on an AVX-512 AMD EPYC: every OpenBLAS kernel
/// it runs, OPENBLAS_CORETYPE Prescott, Core2, Penryn, Nehalem, Atom, Barcelona, Sandybridge,
/// Haswell, Zen, SkylakeX and Cooperlake, each at 1 and 2 threads, with OPENBLAS_L2_SIZE
/// unset and 512, which made no difference):
/// tiny models 2.7e-6 relative (qwen2/qwen3 in GGUFFamilyTests 1.1e-6), SmolLM2-135M (logits
/// of size ~20 after 30 layers) 1.2e-4 absolute per logit and 4.8e-5 per logsumexp, and
/// transformers' argmax at every position on every kernel (kept exact).
@Suite("GGUF import") struct GGUFTests {
    static let dir = TestPaths.fixtures + "/gguf"
    static let tinyStems = ["tiny_f32", "tiny_f16_q8_0", "tiny_q4"]
    static let quantTypes = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                             "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
    static let tinyTolerance: Float = 1e-5        // measured worst 2.7e-6 (tiny_f32, SSE kernels)
    static let smolTolerance: Double = 5e-4       // |Δ logit|; measured worst 1.2e-4 (Haswell/Zen, 1 thread)
    static let smolLSETolerance: Double = 2e-4    // |Δ logsumexp|; measured worst 4.8e-5 (Haswell/Zen, 1 thread)

    static func reference() throws -> SafeTensors { try SafeTensors(path: dir + "/reference.safetensors") }

    // MARK: parsing

    @Test func parsesHeaderMetadataAndTensorInfos() throws {
        let f = try GGUFFile(path: Self.dir + "/quants.gguf")
        #expect(f.version == 3)
        #expect(f.alignment == 64)
        #expect(f.dataStart % 64 == 0)
        #expect(try f.string("general.architecture") == "llama")
        #expect(f.metadata["lora_dist.test.u8"] == .uint(200))
        #expect(f.metadata["lora_dist.test.i8"] == .int(-100))
        #expect(try f.int("lora_dist.test.u16") == 60000)
        #expect(try f.int("lora_dist.test.i16") == -30000)
        #expect(try f.int("lora_dist.test.u32") == 4_000_000_000)
        #expect(try f.int("lora_dist.test.i32") == -2_000_000_000)
        #expect(try f.float("lora_dist.test.f32") == 0.25)
        #expect(f.metadata["lora_dist.test.u64"] == .uint(UInt64(1) << 63 + 5))
        #expect(try f.int("lora_dist.test.i64") == -(1 << 40))
        #expect(try f.float("lora_dist.test.f64") == 1.0 / 3.0)
        #expect(try f.bool("lora_dist.test.bool") == true)
        #expect(try f.string("lora_dist.test.string") == "héllo, wörld")
        #expect(try f.intArray("lora_dist.test.ints") == [1, -2, 3])
        guard case .array(let nested) = f.metadata["lora_dist.test.nested"] else {
            Issue.record("nested is not an array"); return
        }
        #expect(nested.count == 2)
        #expect(nested.map { v -> [Int] in if case .array(let a) = v { return a.compactMap(\.intValue) } else { return [] } } == [[1, 2], [3]])
        #expect(try f.string("no.such.key") == nil)
        // wrong types are an error, not nil
        #expect(message { _ = try f.string("lora_dist.test.u8") }?.contains("expected a string") == true)
        #expect(message { _ = try f.int("lora_dist.test.u64") }?.contains("expected an integer") == true)
        #expect(message { _ = try f.stringArray("lora_dist.test.ints") }?.contains("array of strings") == true)

        #expect(f.tensorNames == Self.quantTypes)
        for name in Self.quantTypes {
            let t = try f.tensor(name)
            #expect(t.dims == [256, 3])
            #expect(t.shape == [3, 256])
            #expect(t.count == 768)
            #expect(t.type.name == name)
            #expect(t.byteRange.count == 768 / t.type.blockSize * t.type.blockBytes)
            #expect(t.offset % 64 == 0 && t.byteRange.lowerBound == f.dataStart + t.offset)
        }

        let tiny = try GGUFFile(path: Self.dir + "/tiny_f32.gguf")
        #expect(tiny.tensors.count == 2 + 2 * 9 + 1)
        #expect(try tiny.stringArray("tokenizer.ggml.tokens")?.count == 80)
        #expect(try tiny.stringArray("tokenizer.ggml.tokens")?.prefix(4) == ["<unk>", "<s>", "</s>", "t3"])
        #expect(try tiny.floatArray("tokenizer.ggml.scores")?[5] == -5)
        #expect(try tiny.intArray("tokenizer.ggml.token_type")?.prefix(3) == [2, 3, 3])
        let q = try tiny.tensor("blk.0.attn_q.weight"), k = try tiny.tensor("blk.1.attn_k.weight")
        #expect(q.dims == [64, 64] && k.dims == [64, 32] && k.shape == [32, 64])
        #expect(try tiny.tensor("token_embd.weight").dims == [64, 80])
    }

    @Test func configFromMetadata() throws {
        let c = try GGUFImport.config(GGUFFile(path: Self.dir + "/tiny_q4.gguf"))
        #expect(c == ModelConfig(vocabSize: 80, hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, rmsNormEps: 1e-5,
                                 ropeTheta: 50000, maxPositionEmbeddings: 64, tieWordEmbeddings: false,
                                 bosTokenId: 1, eosTokenId: 2))
        #expect(GGUFImport.ggufName("model.layers.12.mlp.down_proj.weight") == "blk.12.ffn_down.weight")
        #expect(GGUFImport.ggufName("model.layers.0.post_attention_layernorm.weight") == "blk.0.ffn_norm.weight")
        #expect(GGUFImport.ggufName("lm_head.weight") == "output.weight")
        #expect(GGUFImport.ggufName("model.layers.0.self_attn.q_proj.lora_A.weight") == nil)
    }

    /// llama.cpp's permute: w.reshape(H, 2, D/2, in).swapaxes(1, 2) — GGUF row h·D + 2j + i holds HF row h·D + i·D/2 + j.
    @Test func unpermutationInvertsLlamaCppPermute() {
        for (rows, heads) in [(64, 4), (32, 2), (576, 9), (192, 3)] {
            let d = rows / heads
            var ggufRowOfHF = [Int](repeating: -1, count: rows)
            for h in 0..<heads { for j in 0..<(d / 2) { for i in 0..<2 { ggufRowOfHF[h * d + i * (d / 2) + j] = h * d + 2 * j + i } } }
            let mine = (0..<rows).map { GGUFImport.sourceRow($0, rows: rows, heads: heads) }
            #expect(mine == ggufRowOfHF)
            #expect(Set(mine).count == rows)
        }
    }

    // MARK: dequantization

    @Test("dequantization equals gguf-py's", arguments: quantTypes)
    func dequantizesLikeGGUFPy(type: String) throws {
        let f = try GGUFFile(path: Self.dir + "/quants.gguf")
        let got = try f.floats(type), want = try Self.reference().floats("quants." + type)
        #expect(got.count == want.count)
        let mismatches = zip(got, want).filter { $0.0.bitPattern != $0.1.bitPattern }.count
        #expect(mismatches == 0, "\(type): \(mismatches) values differ, relative error \(relativeError(got, want))")
    }

    @Test("a range equals the same slice of the whole tensor", arguments: quantTypes)
    func rangeDequantization(type: String) throws {
        let f = try GGUFFile(path: Self.dir + "/quants.gguf")
        let full = try f.floats(type)
        let ranges = [0..<1, 5..<37, 31..<33, 17..<18, 100..<700, 255..<513, 767..<768, 0..<768, 1..<767, 300..<300]
        for r in ranges {
            // one sentinel each side: nothing outside the range is written
            var out = [Float](repeating: -12345, count: r.count + 2)
            try out.withUnsafeMutableBufferPointer { try f.dequantize(type, elements: r, into: $0.baseAddress! + 1) }
            #expect(out.first == -12345 && out.last == -12345, "\(type) \(r) wrote outside its range")
            #expect(Array(out[1..<(r.count + 1)]) == Array(full[r]), "\(type) \(r)")
        }
        let buffer = FloatBuffer(100)
        #expect(message { try f.dequantize(type, elements: 700..<769, into: buffer.ptr) }?.contains("lie outside tensor") == true)
    }

    // MARK: models

    func loadTiny(_ stem: String, owned: [Range<Int>]? = nil) throws -> (LlamaModel, GGUFFile) {
        let f = try GGUFFile(path: Self.dir + "/\(stem).gguf")
        let model = try LlamaModel(config: GGUFImport.config(f), lora: nil, maxBatch: 2, seqLen: 8)
        try GGUFImport.loadBase(model, from: f, owned: owned)
        return (model, f)
    }

    @Test("tiny GGUF → LlamaModel gives transformers' weights and logits", arguments: tinyStems)
    func tinyModelMatchesTransformers(stem: String) throws {
        let (model, _) = try loadTiny(stem)
        let ref = try Self.reference()
        for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"] {
            let p = model.store[name]
            let got = Array(UnsafeBufferPointer(start: p.value, count: p.count))
            #expect(got == (try ref.floats("\(stem).\(name)")), "\(stem): \(name) differs from transformers' (un-permuted)")
        }
        let ids = try ref.ints("input_ids").map { Int32($0) }
        let logits = ids.withUnsafeBufferPointer { idp in
            Array(UnsafeBufferPointer(start: model.forward(ids: idp.baseAddress!, batch: 2), count: 2 * 8 * 80))
        }
        let err = relativeError(logits, try ref.floats("\(stem).logits"))
        print("\(stem): logits relative error \(err) against transformers")
        recordFixtureError("gguf \(stem) logits", err)
        #expect(err < Self.tinyTolerance, "\(stem): logits relative error \(err)")
    }

    /// QLoRA from GGUF: every projection is dequantized from its ggml type and requantized to
    /// NF4 (the same bytes as quantizing the fp32 load), whichever rank owns its first slot.
    @Test("a GGUF base requantizes to NF4 under QLoRA", arguments: ["tiny_q4", "tiny_f16_q8_0"])
    func qloraFromGGUF(stem: String) throws {
        let (fp32, f) = try loadTiny(stem)
        let lora = try LoRAConfig(rank: 2, alpha: 4, targets: ["all-linear"])
        let q = try LlamaModel(config: GGUFImport.config(f), lora: lora, nf4Base: true, maxBatch: 2, seqLen: 8)
        let slots = q.store.totalCount, cut = slots / 2 + 3
        try GGUFImport.loadBase(q, from: f, owned: [0..<cut])   // two "ranks", each its part
        try GGUFImport.loadBase(q, from: f, owned: [cut..<slots])
        let projections = q.store.params.filter(\.spec.nf4)
        #expect(projections.count == 2 * 7)
        for p in projections {
            let expected = NF4Layout(count: p.count)
            let raw = UnsafeMutableRawPointer.allocate(byteCount: expected.bytes, alignment: 16)
            defer { raw.deallocate() }
            let ref = NF4Tensor(count: p.count, base: raw)
            ref.quantize(fp32.store[p.name].value)
            #expect(memcmp(raw, p.value, expected.bytes) == 0, "\(p.name): NF4 bytes differ from quantizing the fp32 load")
        }
        // fp32 tensors (embedding, norms) are loaded as they are
        #expect(q.store["model.embed_tokens.weight"].floats == fp32.store["model.embed_tokens.weight"].floats)
    }

    @Test("two ranks owning complementary halves load what one full load does", arguments: ["tiny_q4", "tiny_f16_q8_0"])
    func shardedLoad(stem: String) throws {
        let (full, _) = try loadTiny(stem)
        let total = full.store.totalCount
        // odd cut points, inside tensors (q and k among them) and inside quantization blocks
        let a = total / 3 + 7, b = total / 2 + 13, c = 2 * total / 3 + 5
        let ownedA = [0..<a, b..<c], ownedB = [a..<b, c..<total]
        let (ra, _) = try loadTiny(stem, owned: ownedA)
        let (rb, _) = try loadTiny(stem, owned: ownedB)
        var same = true, untouched = true
        for i in 0..<total {
            let ownedByA = i < a || (i >= b && i < c)
            let got = ownedByA ? ra.store.values[i] : rb.store.values[i]
            let other = ownedByA ? rb.store.values[i] : ra.store.values[i]
            if got.bitPattern != full.store.values[i].bitPattern { same = false }
            if other != 0 { untouched = false }
        }
        #expect(same, "the two halves together differ from a full load")
        #expect(untouched, "a rank wrote outside the ranges it owns")
    }

    // MARK: SmolLM2-135M-Instruct

    struct SmolReference: Decodable {
        struct Sentence: Decodable {
            let text: String
            let ids: [Int32]
            let argmax: [Int]
            let logsumexp: [Double]
            let logits: [[Double]]
        }
        let positions: Int
        let token_ids: [Int]
        let sentences: [Sentence]
    }

    static var smolPath: String {
        let models = CacheFolders.models
        return models + "/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    }

    @Test func smolLM2MatchesTransformers() throws {
        let path = Self.smolPath
        if !FileManager.default.fileExists(atPath: path) {
            let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-smollm2.sh"])
            try #require(status == 0, "tools/fetch-smollm2.sh failed: \(err)")
        }
        let ref = try JSONDecoder().decode(SmolReference.self, from: Data(contentsOf: URL(fileURLWithPath: Self.dir + "/smollm2_reference.json")))
        let f = try GGUFFile(path: path)
        var types: [String: Int] = [:]
        for t in f.tensors.values { types[t.type.name, default: 0] += 1 }
        #expect(types == ["Q4_1": 210, "F32": 61, "Q8_0": 1])
        let c = try GGUFImport.config(f)
        #expect(c == ModelConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                                 numAttentionHeads: 9, numKeyValueHeads: 3, headDim: 64, rmsNormEps: 1e-5,
                                 ropeTheta: 100000, maxPositionEmbeddings: 8192, tieWordEmbeddings: true,
                                 bosTokenId: 1, eosTokenId: 2))
        let T = ref.positions, B = ref.sentences.count, V = c.vocabSize
        let model = try LlamaModel(config: c, lora: nil, maxBatch: B, seqLen: T)
        try GGUFImport.loadBase(model, from: f)
        let ids = ref.sentences.flatMap { $0.ids.prefix(T) }
        let logits = ids.withUnsafeBufferPointer { model.forward(ids: $0.baseAddress!, batch: B) }
        var worstLogit = 0.0, worstLSE = 0.0, argmaxDiffers = 0
        for (b, s) in ref.sentences.enumerated() {
            for t in 0..<T {
                let row = logits + (b * T + t) * V
                var m = -Float.infinity, arg = 0
                for v in 0..<V where row[v] > m { m = row[v]; arg = v }
                var sum = 0.0
                for v in 0..<V { sum += exp(Double(row[v] - m)) }
                let lse = Double(m) + log(sum)
                worstLSE = max(worstLSE, abs(lse - s.logsumexp[t]))
                for (k, id) in ref.token_ids.enumerated() {
                    worstLogit = max(worstLogit, abs(Double(row[id]) - s.logits[t][k]))
                }
                if arg != s.argmax[t] { argmaxDiffers += 1 }
                #expect(arg == s.argmax[t], "'\(s.text)' position \(t): argmax \(arg), transformers \(s.argmax[t])")
            }
        }
        recordFixtureError("gguf smollm2 max |Δ logit|", worstLogit)
        recordFixtureError("gguf smollm2 max |Δ logsumexp|", worstLSE)
        recordFixtureError("gguf smollm2 argmax mismatches", Double(argmaxDiffers))
        print("SmolLM2-135M Q4_1: max |Δ logit| = \(worstLogit), max |Δ logsumexp| = \(worstLSE) over \(B)×\(T) positions")
        #expect(worstLogit < Self.smolTolerance, "max |Δ logit| \(worstLogit)")
        #expect(worstLSE < Self.smolLSETolerance, "max |Δ logsumexp| \(worstLSE)")
    }

    // MARK: bad input

    /// A patched copy of a fixture, parsed; returns the error message (nil: it parsed).
    func parseCopy(_ fixture: String, _ patch: (inout Data) throws -> Void) throws -> (GGUFFile?, String?) {
        var data = try Data(contentsOf: URL(fileURLWithPath: Self.dir + "/" + fixture))
        try patch(&data)
        let tmp = TestPaths.tempDir("gguf")
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let path = tmp + "/patched.gguf"
        try data.write(to: URL(fileURLWithPath: path))
        do { return (try GGUFFile(path: path), nil) } catch let e as LoraDistError { return (nil, e.message) }
    }

    /// Byte offset of a tensor info's ggml type field (the u64 offset follows it).
    func typeField(_ data: Data, tensor name: String, dims: Int) throws -> Int {
        var needle = Data()
        withUnsafeBytes(of: UInt64(name.utf8.count).littleEndian) { needle.append(contentsOf: $0) }
        needle.append(contentsOf: Array(name.utf8))
        let r = try #require(data.range(of: needle), "tensor info '\(name)' not found")
        return r.upperBound + 4 + 8 * dims
    }

    func put<T: FixedWidthInteger>(_ v: T, at off: Int, in data: inout Data) {
        withUnsafeBytes(of: v.littleEndian) { data.replaceSubrange(off..<(off + MemoryLayout<T>.size), with: $0) }
    }

    @Test func badMagicAndVersions() throws {
        var (_, m) = try parseCopy("tiny_q4.gguf") { $0.replaceSubrange(0..<4, with: Array("GGUX".utf8)) }
        #expect(m?.contains("not a GGUF file") == true, "\(m ?? "parsed")")
        for v: UInt32 in [1, 4, 0x7FFF_FFFF] {
            (_, m) = try parseCopy("tiny_q4.gguf") { put(v, at: 4, in: &$0) }
            #expect(m?.contains("GGUF version \(v) is not supported") == true, "\(m ?? "parsed")")
        }
        (_, m) = try parseCopy("tiny_q4.gguf") { put(UInt32(3).byteSwapped, at: 4, in: &$0) }
        #expect(m?.contains("big-endian") == true, "\(m ?? "parsed")")
        // version 2 has the same layout
        let (v2, m2) = try parseCopy("tiny_q4.gguf") { put(UInt32(2), at: 4, in: &$0) }
        #expect(m2 == nil && v2?.version == 2)
        (_, m) = try parseCopy("tiny_q4.gguf") { $0 = Data() }
        #expect(m?.contains("not a GGUF file") == true, "\(m ?? "parsed")")
    }

    @Test func unsupportedAndUnknownTensorTypes() throws {
        // IQ4_NL blocks have the size of Q4_0 blocks: the file parses, the tensor cannot be dequantized
        let (f, m) = try parseCopy("tiny_q4.gguf") {
            put(UInt32(20), at: try typeField($0, tensor: "blk.0.attn_q.weight", dims: 2), in: &$0)
        }
        #expect(m == nil)
        let file = try #require(f)
        #expect(try file.tensor("blk.0.attn_q.weight").type.name == "IQ4_NL")
        let model = try LlamaModel(config: GGUFImport.config(file), lora: nil, maxBatch: 1, seqLen: 4)
        let e = message { try GGUFImport.loadBase(model, from: file) }
        #expect(e?.contains("'blk.0.attn_q.weight' has ggml type IQ4_NL, which lora-dist cannot dequantize") == true, "\(e ?? "loaded")")
        let d = message { _ = try file.floats("blk.0.attn_q.weight") }
        #expect(d?.contains("IQ4_NL") == true && d?.contains("blk.0.attn_q.weight") == true, "\(d ?? "dequantized")")

        let (_, u) = try parseCopy("tiny_q4.gguf") {
            put(UInt32(99), at: try typeField($0, tensor: "blk.1.ffn_up.weight", dims: 2), in: &$0)
        }
        #expect(u?.contains("tensor 'blk.1.ffn_up.weight' has unknown ggml type 99") == true, "\(u ?? "parsed")")
        // a 256-element block type on rows of 64
        let (_, b) = try parseCopy("tiny_q4.gguf") {
            put(UInt32(12), at: try typeField($0, tensor: "blk.1.ffn_up.weight", dims: 2), in: &$0)
        }
        #expect(b?.contains("not a multiple of the Q4_K block size 256") == true, "\(b ?? "parsed")")
    }

    @Test func truncatedAndCorruptFiles() throws {
        let size = try Data(contentsOf: URL(fileURLWithPath: Self.dir + "/tiny_f32.gguf")).count
        for (cut, want) in [(6, "truncated"), (20, "truncated"), (300, "truncated"), (2000, "truncated"),
                            (size - 1000, "runs past the end of the file"), (size - 1, "runs past the end of the file")] {
            let (_, m) = try parseCopy("tiny_f32.gguf") { $0 = $0.prefix(cut) }
            #expect(m?.contains(want) == true, "cut at \(cut): \(m ?? "parsed")")
        }
        // tensor data past the end
        var (_, m) = try parseCopy("tiny_f32.gguf") {
            put(UInt64(1 << 40), at: try typeField($0, tensor: "output_norm.weight", dims: 1) + 4, in: &$0)
        }
        #expect(m?.contains("'output_norm.weight' data offset 1099511627776 lies past the end of the file") == true, "\(m ?? "parsed")")
        (_, m) = try parseCopy("tiny_f32.gguf") {
            let off = try typeField($0, tensor: "token_embd.weight", dims: 2) + 4
            put(UInt64(size - 2048), at: off, in: &$0)
        }
        #expect(m?.contains("'token_embd.weight' data") == true && m?.contains("runs past the end of the file") == true, "\(m ?? "parsed")")
        // overlapping tensors: blk.0.attn_k points at blk.0.attn_q's data
        (_, m) = try parseCopy("tiny_f32.gguf") {
            let q = try typeField($0, tensor: "blk.0.attn_q.weight", dims: 2) + 4
            let k = try typeField($0, tensor: "blk.0.attn_k.weight", dims: 2) + 4
            $0.replaceSubrange(k..<(k + 8), with: $0.subdata(in: q..<(q + 8)))
        }
        #expect(m?.contains("overlap") == true, "\(m ?? "parsed")")
        (_, m) = try parseCopy("tiny_f32.gguf") {
            let off = try typeField($0, tensor: "blk.0.attn_k.weight", dims: 2) + 4
            let v = $0.subdata(in: off..<(off + 8)).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            put(v + 4, at: off, in: &$0)
        }
        #expect(m?.contains("is not aligned to 32") == true, "\(m ?? "parsed")")
        // lying lengths and counts
        (_, m) = try parseCopy("tiny_f32.gguf") { put(UInt64(1 << 50), at: 24, in: &$0) }  // first key's length
        #expect(m?.contains("claims 1125899906842624 bytes") == true, "\(m ?? "parsed")")
        (_, m) = try parseCopy("tiny_f32.gguf") { put(UInt64(1 << 40), at: 8, in: &$0) }  // tensor count
        #expect(m?.contains("tensor count 1099511627776 cannot fit") == true, "\(m ?? "parsed")")
        (_, m) = try parseCopy("tiny_f32.gguf") {
            let key = Array("tokenizer.ggml.tokens".utf8)
            let r = try #require($0.range(of: Data(key)))
            put(UInt64(1 << 40), at: r.upperBound + 8, in: &$0)  // after the value type (4) and array type (4)
        }
        #expect(m?.contains("array length of 'tokenizer.ggml.tokens'") == true && m?.contains("cannot fit") == true, "\(m ?? "parsed")")
        (_, m) = try parseCopy("tiny_f32.gguf") {
            let r = try #require($0.range(of: Data("general.architecture".utf8)))
            put(UInt32(77), at: r.upperBound, in: &$0)
        }
        #expect(m?.contains("'general.architecture' has unknown value type 77") == true, "\(m ?? "parsed")")
    }

    /// Random corruption of the header and metadata: every file either parses or is refused, never
    /// traps; whatever parses can be configured, checked and dequantized without trapping either.
    @Test(arguments: ["quants.gguf", "tiny_q4.gguf"])
    func corruptHeadersNeverTrap(fixture: String) throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: Self.dir + "/" + fixture))
        let headerEnd = try GGUFFile(path: Self.dir + "/" + fixture).dataStart
        var g = SplitMix64(seed: 77)
        var refused = 0, parsed = 0
        for i in 0..<200 {
            let (f, m) = try parseCopy(fixture) { data in
                for _ in 0..<(1 + i % 4) {
                    let at = Int(g.next() % UInt64(headerEnd))
                    switch g.next() % 3 {
                    case 0: data[at] = UInt8(truncatingIfNeeded: g.next())
                    case 1: data[at] ^= 0x80
                    default: data[at] = [0x00, 0xFF, 0x7F, 0x40][Int(g.next() % 4)]
                    }
                }
                if i % 10 == 9 { data = data.prefix(Int(g.next() % UInt64(original.count))) }
            }
            if let f {
                parsed += 1
                _ = try? GGUFImport.config(f)
                _ = try? GGUFImport.checkBase(LlamaModel.specs(config: GGUFImport.config(f), lora: nil), in: f)
                for name in f.tensorNames { _ = try? f.floats(name) }
            } else {
                refused += 1
                #expect(m?.isEmpty == false)
            }
        }
        print("\(fixture): \(refused) corrupt copies refused, \(parsed) parsed")
        #expect(refused > 0)
    }

    @Test func configsThatDisagreeWithTheFile() throws {
        let f = try GGUFFile(path: Self.dir + "/tiny_q4.gguf")
        var c = try GGUFImport.config(f)
        c.intermediateSize = 100
        var e = message { try GGUFImport.loadBase(LlamaModel(config: c, lora: nil, maxBatch: 1, seqLen: 4), from: f) }
        #expect(e?.contains("tensor 'blk.1.ffn_gate.weight' has shape [96, 64] (GGUF dims [64, 96]), the model expects [100, 64]") == true, "\(e ?? "loaded")")
        c = try GGUFImport.config(f)
        c.numKeyValueHeads = 4
        e = message { try GGUFImport.checkBase(LlamaModel.specs(config: c, lora: nil), in: f) }
        #expect(e?.contains("'blk.1.attn_k.weight' has shape [32, 64]") == true, "\(e ?? "passed")")
        c = try GGUFImport.config(f)
        c.numHiddenLayers = 3
        e = message { try GGUFImport.checkBase(LlamaModel.specs(config: c, lora: nil), in: f) }
        #expect(e?.contains("no tensor 'blk.2.") == true, "\(e ?? "passed")")
        c = try GGUFImport.config(f)
        c.vocabSize = 81
        e = message { try GGUFImport.checkBase(LlamaModel.specs(config: c, lora: nil), in: f) }
        #expect(e?.contains("expects [81, 64]") == true, "\(e ?? "passed")")
        // a tied config simply ignores output.weight; LoRA adapters are not in the file and not needed
        c = try GGUFImport.config(f)
        c.tieWordEmbeddings = true
        try GGUFImport.checkBase(LlamaModel.specs(config: c, lora: try LoRAConfig(rank: 2, alpha: 4, dropout: 0, targets: ["q_proj"])), in: f)
        // not a llama file
        let (g, m) = try parseCopy("tiny_q4.gguf") {
            let key = Data("general.architecture".utf8)
            let r = try #require($0.range(of: key))
            let value = r.upperBound + 4 + 8  // type, string length
            $0.replaceSubrange(value..<(value + 5), with: Array("gemma".utf8))
        }
        #expect(m == nil)
        e = message { _ = try GGUFImport.config(try #require(g)) }
        #expect(e?.contains("general.architecture is 'gemma'") == true, "\(e ?? "passed")")
    }
}

/// The message of the error `body` throws (nil: it did not throw).
private func message(_ body: () throws -> Void) -> String? {
    do { try body(); return nil } catch let e as LoraDistError { return e.message } catch { return "\(error)" }
}
