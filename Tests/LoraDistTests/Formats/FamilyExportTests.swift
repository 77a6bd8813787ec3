import Foundation
import Testing
@testable import LoraDist

/// Exports of every family fixture (Tests/Fixtures/families): the merged Hugging Face directory
/// reloads strictly and gives peft's logits, and the PEFT export is the fixture's adapter.
/// (tools/check_family_exports.py loads such exports in transformers and peft themselves.)
/// Tolerance on logits against the fixtures' (made on an Intel Xeon): ReferenceTests.tolerance,
/// max |Δ| / max |ref|; measured with the rest by tools/measure-tolerances.sh (see there).
@Suite struct FamilyExportTests {
    static let tolerance: Float = ReferenceTests.tolerance

    /// The fixture's base + adapter as lora-dist loads them.
    static func adapted(_ f: ReferenceTests.Fixture) throws -> (LlamaModel, LoRAConfig) {
        let lora = try LoRAConfig.fromPEFT(json: Data(contentsOf: URL(fileURLWithPath: f.dir + "/adapter/adapter_config.json")))
        let model = try LlamaModel(config: f.config, lora: lora, maxBatch: f.batch, seqLen: f.seqLen)
        try HuggingFace.loadBase(model, from: SafeTensors(path: f.dir + "/model.safetensors"))
        try HuggingFace.loadAdapter(model, from: SafeTensors(path: f.dir + "/adapter/adapter_model.safetensors"))
        return (model, lora)
    }

    static func json(_ path: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    @Test("the merged export reloads strictly as the same family and gives peft's logits", arguments: FamilyTests.fixtures)
    func merged(name: String) throws {
        let f = try ReferenceTests.Fixture(name)
        let (model, _) = try Self.adapted(f)
        let dir = TestPaths.tempDir("family-merged")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HuggingFace.saveMerged(model, tokenizerOf: try ModelSource("tiny"), to: dir)  // the fixtures carry no tokenizer

        // config.json names the family as the fixture's does, and reads back (strictly) as the same config.
        let written = try Self.json(dir + "/config.json"), original = try Self.json(f.dir + "/config.json")
        #expect(written["model_type"] as? String == original["model_type"] as? String)
        #expect(written["architectures"] as? [String] == original["architectures"] as? [String])
        let config = try ModelConfig.load(dir)
        #expect(config == f.config)
        // ModelSource reads the directory with the byte tokenizer (no tokenizer.json), whose 258 ids do not fit vocab 64.
        let refusal: String
        do { _ = try ModelSource(dir); refusal = "(accepted)" } catch let e as LoraDistError { refusal = e.message }
        #expect(refusal.contains("model vocabulary 64 is smaller than its tokenizer's 258"), "\(refusal)")

        // The same tensors as the fixture's base (a tied head is not written), and peft's logits.
        let st = try SafeTensors(path: dir + "/model.safetensors"), base = try SafeTensors(path: f.dir + "/model.safetensors")
        #expect(st.names.sorted() == base.names.sorted())
        for n in base.names { #expect(try st.entry(n).shape == (try base.entry(n)).shape, "\(n)") }
        let plain = try LlamaModel(config: config, lora: nil, maxBatch: f.batch, seqLen: f.seqLen)
        try HuggingFace.loadBase(plain, from: HuggingFace.Weights(modelDir: dir))
        let (logits, _) = f.run(plain)
        let err = relativeError(logits, try f.reference.floats("lora.logits"))
        recordFixtureError("family export merged \(name) logits", err)
        #expect(err < Self.tolerance, "merged logits against peft's: relative error \(err)")
        // Only projections with an adapter changed; biases and norms are the base's, bit for bit.
        let targets = Set((try Self.json(f.dir + "/adapter/adapter_config.json"))["target_modules"] as? [String] ?? [])
        for n in base.names {
            let changed = try st.floats(n) != (try base.floats(n))
            let module = n.split(separator: ".").dropLast().last.map(String.init) ?? ""
            #expect(changed == (n.hasSuffix(".weight") && targets.contains(module)), "\(n): changed \(changed)")
        }
    }

    @Test("the PEFT export is the fixture's adapter: names, shapes, values, r, alpha, targets", arguments: FamilyTests.fixtures)
    func peft(name: String) throws {
        let f = try ReferenceTests.Fixture(name)
        let (model, _) = try Self.adapted(f)
        let dir = TestPaths.tempDir("family-peft")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HuggingFace.savePEFT(model, baseModel: "Tests/Fixtures/" + name, to: dir)
        let ours = try SafeTensors(path: dir + "/adapter_model.safetensors")
        let theirs = try SafeTensors(path: f.dir + "/adapter/adapter_model.safetensors")
        #expect(ours.names.sorted() == theirs.names.sorted())
        for n in theirs.names {
            let a = try ours.entry(n), b = try theirs.entry(n)
            #expect(a.shape == b.shape && a.dtype == b.dtype, "\(n): \(a.shape) \(a.dtype) vs \(b.shape) \(b.dtype)")
            #expect(try ours.floats(n) == (try theirs.floats(n)), "\(n) differs")
        }
        let cfg = try Self.json(dir + "/adapter_config.json"), ref = try Self.json(f.dir + "/adapter/adapter_config.json")
        #expect((cfg["r"] as? NSNumber)?.intValue == (ref["r"] as? NSNumber)?.intValue)
        #expect((cfg["lora_alpha"] as? NSNumber)?.doubleValue == (ref["lora_alpha"] as? NSNumber)?.doubleValue)
        #expect(Set(cfg["target_modules"] as? [String] ?? []) == Set(ref["target_modules"] as? [String] ?? ["?"]))
        for key in ["peft_type", "task_type", "bias", "base_model_name_or_path"] {
            #expect(cfg[key] as? String == ref[key] as? String, "\(key)")
        }
        for key in ["use_rslora", "use_dora", "fan_in_fan_out"] { #expect(cfg[key] as? Bool == ref[key] as? Bool, "\(key)") }
        // and it reloads into lora-dist as the same adapter: peft's logits again
        let lora = try LoRAConfig.fromPEFT(json: Data(contentsOf: URL(fileURLWithPath: dir + "/adapter_config.json")))
        let again = try LlamaModel(config: f.config, lora: lora, maxBatch: f.batch, seqLen: f.seqLen)
        try HuggingFace.loadBase(again, from: SafeTensors(path: f.dir + "/model.safetensors"))
        try HuggingFace.loadAdapter(again, from: ours)
        let err = relativeError(f.run(again).0, try f.reference.floats("lora.logits"))
        recordFixtureError("family export peft \(name) logits", err)
        #expect(err < Self.tolerance, "reloaded adapter: relative error \(err)")
    }
}
