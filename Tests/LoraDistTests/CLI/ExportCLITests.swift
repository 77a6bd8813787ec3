import Foundation
import Testing
@testable import LoraDist

/// Hugging Face import and PEFT / merged export against transformers and peft
/// (fixtures from tools/make_export_fixtures.py, Tests/Fixtures/export/).
///
/// peft and transformers checked our exports when the fixtures were made: the script
/// ran lora-dist, loaded its PEFT export with PeftModel.from_pretrained and its merged
/// export with LlamaForCausalLM.from_pretrained, and recorded the adapter they loaded
/// and the logits they computed. These tests run the same lora-dist commands (args.json)
/// and check the exports are still equal to the ones peft and transformers accepted.
///
/// Tolerances (max |Δ| / max |ref|): the fixture's training run was made on an Intel Xeon
/// (AVX-512); OpenBLAS picks its sgemm kernel by CPU, and 20 training steps at lr 0.05 amplify
/// another kernel's last-bit differences. Each tolerance is 3.5-5× the worst measured by
/// tools/measure-tolerances.sh (2026-12-02, on an AVX-512 AMD EPYC: every OpenBLAS kernel
/// it runs, OPENBLAS_CORETYPE Prescott, Core2, Penryn, Nehalem, Atom, Barcelona, Sandybridge,
/// Haswell, Zen, SkylakeX and Cooperlake, each at 1 and 2 threads, with OPENBLAS_L2_SIZE
/// unset and 512, which made no difference).
/// (The fixture predates the attention rewrite that recomputes Q·Kᵀ in the backward: the kernel
/// it was made with, SkylakeX, now differs by 4e-6 on the adapter, from 0 before.)
@Suite(.serialized, .tags(.cli)) struct ExportCLITests {
    static let logitsTolerance: Float = 3e-6        // base import (F32, BF16, F16); measured worst 6.3e-7
    static let adaptedLogitsTolerance: Float = 5e-5 // base + trained adapter, and the merged export; measured worst 1.1e-5 (Penryn)
    static let adapterTolerance: Float = 1e-4       // trained adapter tensors; measured worst 2.8e-5 (Penryn), 2.2e-5 (Haswell, Zen)
    static let lossTolerance: Float = 1.5e-6        // the 20 training losses, relative; measured worst 4.1e-7
    static let dir = TestPaths.fixtures + "/export"

    /// args.json: the lora-dist arguments the fixture script used.
    struct Args {
        let model: String, data: String
        let train: [String]
        let continueSteps: Int

        init() throws {
            let data = try Data(contentsOf: URL(fileURLWithPath: ExportCLITests.dir + "/args.json"))
            let o = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            model = ExportCLITests.dir + "/" + (try #require(o["model"] as? String))
            self.data = ExportCLITests.dir + "/" + (try #require(o["data"] as? String))
            train = try #require(o["train"] as? [String])
            continueSteps = try #require((o["continue_steps"] as? NSNumber)?.intValue)
        }

        func value(_ flag: String) -> String? {
            train.firstIndex(of: flag).flatMap { $0 + 1 < train.count ? train[$0 + 1] : nil }
        }

        /// `train` with some flags' values replaced.
        func with(_ changes: [String: String]) -> [String] {
            var a = train
            for (flag, value) in changes.sorted(by: { $0.key < $1.key }) {
                if let i = a.firstIndex(of: flag) { a[i + 1] = value } else { a += [flag, value] }
            }
            return a
        }
    }

    /// One lora-dist train + both exports, shared by the tests that need it.
    final class Run {
        let args: Args
        let runDir: String, peftDir: String, mergedDir: String
        let losses: [Double]

        init() throws {
            args = try Args()
            let tmp = TestPaths.tempDir("export")
            runDir = tmp + "/run"; peftDir = tmp + "/peft"; mergedDir = tmp + "/merged"
            try ExportCLITests.lora(["train", "--model", args.model, "--data", args.data, "--run-dir", runDir] + args.train)
            try ExportCLITests.lora(["export", "--format", "peft", "--checkpoint", runDir, "--out", peftDir])
            try ExportCLITests.lora(["export", "--format", "merged", "--checkpoint", runDir, "--out", mergedDir])
            losses = try ExportCLITests.losses(runDir)
        }
    }

    nonisolated(unsafe) static let shared: Result<Run, Error> = Result { try Run() }

    static func lora(_ args: [String]) throws {
        let (status, _, err) = try runProcess(TestPaths.binary, args)
        guard status == 0 else { throw LoraDistError("lora-dist \(args.joined(separator: " ")) exited \(status): \(err)") }
    }

    static func losses(_ runDir: String) throws -> [Double] {
        let text = try String(contentsOfFile: runDir + "/metrics.jsonl", encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return try #require((o?["loss"] as? NSNumber)?.doubleValue)
        }
    }

    static func reference() throws -> SafeTensors { try SafeTensors(path: dir + "/reference.safetensors") }

    /// The model's logits on the reference input ids.
    static func logits(_ model: LlamaModel, _ ref: SafeTensors) throws -> [Float] {
        let e = try ref.entry("input_ids")
        let ids = try ref.ints("input_ids").map { Int32($0) }
        return ids.withUnsafeBufferPointer { p in
            let out = model.forward(ids: p.baseAddress!, batch: e.shape[0])
            return Array(UnsafeBufferPointer(start: out, count: ids.count * model.config.vocabSize))
        }
    }

    static func shape(_ ref: SafeTensors) throws -> (batch: Int, seq: Int) {
        let s = try ref.entry("input_ids").shape
        return (s[0], s[1])
    }

    /// stderr of a failed run: exactly one "lora-dist: error: ..." line.
    static func oneLine(_ stderr: String) -> String? {
        let lines = stderr.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.count == 1, lines[0].hasPrefix("lora-dist: error: ") else { return nil }
        return String(lines[0])
    }

    // MARK: - import

    @Test("a Hugging Face directory (F32, BF16 sharded, F16) gives transformers' logits",
          arguments: ["base_f32", "base_bf16_sharded", "base_f16"])
    func importBase(name: String) throws {
        let ref = try Self.reference()
        let (batch, seq) = try Self.shape(ref)
        let source = try ModelSource(Self.dir + "/" + name)
        guard case .huggingFace(let weights) = source.weights else { Issue.record("\(name): no weights"); return }
        let dtype = ["base_f32": "F32", "base_bf16_sharded": "BF16", "base_f16": "F16"][name]!
        for (_, st) in weights.files { #expect(st.entries.values.allSatisfy { $0.dtype == dtype }) }
        if name.hasSuffix("sharded") { #expect(weights.files.count >= 2) }
        let model = try LlamaModel(config: source.config, lora: nil, maxBatch: batch, seqLen: seq)
        try HuggingFace.loadBase(model, from: weights)
        let err = relativeError(try Self.logits(model, ref), try ref.floats(name + ".logits"))
        print("ExportCLITests: \(name) logits relative error \(err)")
        recordFixtureError("export import \(name) logits", err)
        #expect(err < Self.logitsTolerance, "\(name): logits relative error \(err)")
    }

    // MARK: - export

    @Test("lora-dist re-produces the PEFT adapter peft loaded, and its config")
    func peftExport() throws {
        let run = try Self.shared.get()
        let ref = try Self.reference()
        let st = try SafeTensors(path: run.peftDir + "/adapter_model.safetensors")
        let recorded = ref.names.filter { $0.hasPrefix("adapter.") }
        #expect(Set(st.names) == Set(recorded.map { String($0.dropFirst("adapter.".count)) }))
        var worst: Float = 0
        for name in recorded {
            let t = String(name.dropFirst("adapter.".count))
            #expect(try st.entry(t).shape == ref.entry(name).shape, "\(t)")
            let err = relativeError(try st.floats(t), try ref.floats(name))
            worst = max(worst, err)
            #expect(err <= Self.adapterTolerance, "\(t): relative error \(err)")
        }
        print("ExportCLITests: adapter tensors worst relative error \(worst)")
        recordFixtureError("export peft adapter tensors", worst)
        // The training losses are the ones the fixture run logged.
        let refLosses = try ref.floats("train.losses")
        #expect(run.losses.count == refLosses.count)
        var worstLoss: Float = 0
        for (a, b) in zip(run.losses, refLosses) {
            worstLoss = max(worstLoss, abs(Float(a) - b) / abs(b))
            #expect(abs(Float(a) - b) <= Self.lossTolerance * abs(b), "loss \(a) vs \(b)")
        }
        recordFixtureError("export train losses", worstLoss)

        let cfgData = try Data(contentsOf: URL(fileURLWithPath: run.peftDir + "/adapter_config.json"))
        let cfg = try #require(try JSONSerialization.jsonObject(with: cfgData) as? [String: Any])
        #expect((cfg["r"] as? NSNumber)?.intValue == Int(run.args.value("--rank")!))
        #expect((cfg["lora_alpha"] as? NSNumber)?.floatValue == Float(run.args.value("--alpha")!))
        #expect(Set(cfg["target_modules"] as? [String] ?? []) == Set(run.args.value("--targets")!.split(separator: ",").map(String.init)))
        #expect((cfg["use_rslora"] as? NSNumber)?.boolValue == false)
        #expect((cfg["lora_dropout"] as? NSNumber)?.floatValue == 0)
        #expect(cfg["bias"] as? String == "none")
        #expect(cfg["peft_type"] as? String == "LORA")
        #expect(cfg["task_type"] as? String == "CAUSAL_LM")
        #expect(cfg["base_model_name_or_path"] as? String == run.args.model)
    }

    @Test("base + exported adapter gives peft's logits")
    func peftLogits() throws {
        let run = try Self.shared.get()
        let ref = try Self.reference()
        let (batch, seq) = try Self.shape(ref)
        let lora = try LoRAConfig.fromPEFT(json: Data(contentsOf: URL(fileURLWithPath: run.peftDir + "/adapter_config.json")))
        let source = try ModelSource(run.args.model)
        guard case .huggingFace(let weights) = source.weights else { Issue.record("no base weights"); return }
        let model = try LlamaModel(config: source.config, lora: lora, maxBatch: batch, seqLen: seq)
        try HuggingFace.loadBase(model, from: weights)
        try HuggingFace.loadAdapter(model, from: SafeTensors(path: run.peftDir + "/adapter_model.safetensors"))
        let err = relativeError(try Self.logits(model, ref), try ref.floats("peft.logits"))
        print("ExportCLITests: base + adapter vs peft logits relative error \(err)")
        recordFixtureError("export peft logits", err)
        #expect(err < Self.adaptedLogitsTolerance, "relative error \(err)")
    }

    @Test("the merged export, loaded as a plain model, gives transformers' logits")
    func mergedLogits() throws {
        let run = try Self.shared.get()
        let ref = try Self.reference()
        let (batch, seq) = try Self.shape(ref)
        let source = try ModelSource(run.mergedDir)
        #expect(source.config == (try ModelSource(run.args.model)).config)
        guard case .huggingFace(let weights) = source.weights else { Issue.record("merged export has no weights"); return }
        let model = try LlamaModel(config: source.config, lora: nil, maxBatch: batch, seqLen: seq)
        try HuggingFace.loadBase(model, from: weights)
        let err = relativeError(try Self.logits(model, ref), try ref.floats("merged.logits"))
        print("ExportCLITests: merged export vs transformers logits relative error \(err)")
        recordFixtureError("export merged logits", err)
        #expect(err < Self.adaptedLogitsTolerance, "relative error \(err)")
    }

    @Test("--adapter continues training from the exported adapter")
    func continueTraining() throws {
        let run = try Self.shared.get()
        let dir = TestPaths.tempDir("export-continue")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["train", "--model", run.args.model, "--data", run.args.data, "--run-dir", dir + "/run",
                    "--adapter", run.peftDir] + run.args.with(["--steps": String(run.args.continueSteps)])
        let (status, _, err) = try runProcess(TestPaths.binary, args)
        #expect(status == 0, "\(err)")
        let losses = try Self.losses(dir + "/run")
        #expect(losses.count == run.args.continueSteps)
        let first = try #require(losses.first)
        let fresh = run.losses[0], last = run.losses[run.losses.count - 1]
        print("ExportCLITests: continue first loss \(first); original run first \(fresh), last \(last)")
        // Same seed, so this step sees the batch the original run's step 1 saw (loss `fresh`
        // with a zero lora_B). With the trained adapter it is near the end of that run instead.
        #expect(abs(first - last) < 0.5, "first loss \(first), original run ended at \(last)")
        #expect(fresh - first > 1, "first loss \(first) is not below a fresh adapter's \(fresh)")
    }

    // MARK: - bad input

    @Test("a PEFT adapter for another base: exit 1, one line naming the file and the tensor")
    func adapterForAnotherBase() throws {
        let args = try Args()
        let other = TestPaths.fixtures + "/llama_untied/adapter"
        let tmp = TestPaths.tempDir("export-bad")
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let (status, _, err) = try runProcess(TestPaths.binary, [
            "train", "--model", args.model, "--data", args.data, "--run-dir", tmp + "/run",
            "--adapter", other] + args.train)
        #expect(status == 1)
        let line = try #require(Self.oneLine(err), "stderr: \(err)")
        #expect(line.contains(other + "/adapter_model.safetensors"), "\(line)")
        #expect(line.contains("'base_model.model.model.layers."), "\(line)")
        print("ExportCLITests: \(line)")
    }

    @Test("safetensors offsets that overlap, leave a hole or lie past the end are refused",
          arguments: [
            ("overlaps", [("a", 0, 8), ("b", 4, 12)], 12),
            ("hole", [("a", 0, 8), ("b", 12, 20)], 20),
            ("outside", [("a", 0, 8), ("b", 8, 16)], 12),
          ] as [(String, [(String, Int, Int)], Int)])
    func badOffsets(expected: String, tensors: [(String, Int, Int)], dataBytes: Int) throws {
        var header: [String: Any] = [:]
        for (name, begin, end) in tensors {
            header[name] = ["dtype": "F32", "shape": [(end - begin) / 4], "data_offsets": [begin, end]]
        }
        let json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        var bytes = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(json)
        bytes.append(Data(repeating: 0, count: dataBytes))
        do {
            _ = try SafeTensors(data: bytes, path: "hand-made.safetensors")
            Issue.record("\(expected): accepted")
        } catch let e as LoraDistError {
            #expect(e.message.contains(expected), "\(e.message)")
            #expect(e.message.contains("hand-made.safetensors"))
            print("ExportCLITests: \(e.message)")
        }
    }

    /// Without its tokenizer a merged model directory reads text as bytes, whose ids fit a BPE
    /// vocabulary silently: every merged export carries its base's.
    @Test("a merged export carries its base's tokenizer: a GGUF's written from its metadata, a Hugging Face directory's copied")
    func mergedExportCarriesTheTokenizer() throws {
        let args = try Args(), fm = FileManager.default
        let tmp = TestPaths.tempDir("export-tokenizer")
        defer { try? fm.removeItem(atPath: tmp) }
        let gguf = TestPaths.fixtures + "/gguf/tiny_bpe.gguf"
        let base = try #require(try ModelSource(gguf).tokenizer as? BPETokenizer)
        let short = ["--steps", "2", "--batch", "2", "--seq", "16", "--eval-every", "2", "--eval-seqs", "2"]
        try Self.lora(["train", "--model", gguf, "--data", args.data, "--run-dir", tmp + "/run",
                       "--export-merged", tmp + "/trained"] + short)
        try Self.lora(["export", "--format", "merged", "--checkpoint", tmp + "/run", "--out", tmp + "/exported"])
        for dir in [tmp + "/trained", tmp + "/exported"] {
            #expect(fm.fileExists(atPath: dir + "/tokenizer.json"), "\(dir): no tokenizer.json")
            let merged = try #require(try ModelSource(dir).tokenizer as? BPETokenizer, "\(dir): not read as BPE")
            #expect(merged.identity == base.identity, "\(dir)")
            #expect(merged.encode("the merged model reads text as its base does") == base.encode("the merged model reads text as its base does"))
        }
        // a Hugging Face base: its tokenizer.json, byte for byte
        try Self.lora(["train", "--model", tmp + "/trained", "--mode", "full", "--data", args.data, "--run-dir", tmp + "/run2"] + short)
        try Self.lora(["export", "--format", "merged", "--checkpoint", tmp + "/run2", "--out", tmp + "/exported2"])
        #expect(fm.contents(atPath: tmp + "/exported2/tokenizer.json") == fm.contents(atPath: tmp + "/trained/tokenizer.json"))
    }

    @Test("export --format peft of a full fine-tuning checkpoint: one clear line")
    func peftOfFullCheckpoint() throws {
        let args = try Args()
        let tmp = TestPaths.tempDir("export-full"), run = tmp + "/run"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try Self.lora(["train", "--model", args.model, "--data", args.data, "--run-dir", run]
                      + args.with(["--mode": "full", "--steps": "1"]))
        let (status, _, err) = try runProcess(TestPaths.binary, ["export", "--format", "peft", "--checkpoint", run,
                                                                 "--out", run + "/../peft"])
        #expect(status == 1)
        let line = try #require(Self.oneLine(err), "stderr: \(err)")
        #expect(line.contains("full fine-tuning"), "\(line)")
        print("ExportCLITests: \(line)")
        #expect(!FileManager.default.fileExists(atPath: run + "/../peft/adapter_model.safetensors"))
    }

    @Test("a config.json whose shapes disagree with the tensors: one line naming tensor and shapes")
    func configShapeMismatch() throws {
        let args = try Args()
        let dir = TestPaths.tempDir("export-config")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: args.model + "/model.safetensors", toPath: dir + "/model.safetensors")
        var cfg = try #require(try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: args.model + "/config.json"))) as? [String: Any])
        #expect((cfg["intermediate_size"] as? NSNumber)?.intValue == 64)
        cfg["intermediate_size"] = 48
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let (status, _, err) = try runProcess(TestPaths.binary, [
            "train", "--model", dir, "--data", args.data, "--run-dir", dir + "/run"] + args.train)
        #expect(status == 1)
        let line = try #require(Self.oneLine(err), "stderr: \(err)")
        #expect(line.contains("'model.layers.") && line.contains(".mlp."), "\(line)")
        #expect(line.contains("64") && line.contains("48"), "\(line)")
        print("ExportCLITests: \(line)")
    }
}
