import Foundation
import Testing
@testable import LoraDist

/// Files the CLI tests feed the real binary: a small English corpus and Hugging
/// Face–style model directories (config.json + model.safetensors).
private enum CLIFiles {
    /// About 8 KB of plain English prose, deterministic.
    static func writeCorpus(_ path: String) throws {
        let sentences = [
            "The river ran quietly past the old mill, where the miller's children played on the bank.",
            "In the morning the village woke to the sound of bells and the smell of fresh bread.",
            "She opened the letter slowly, afraid of what her brother might have written this time.",
            "Nobody in the town remembered when the clock in the square had last told the right hour.",
            "He walked along the cliffs until the lighthouse was only a small white mark behind him.",
            "The teacher asked the class to read the first chapter again and to write down every question.",
            "Rain fell all afternoon, and the farmers stood in the barn talking about the harvest.",
            "When the ship came into the harbour, the whole family ran down to the quay to meet it.",
        ]
        var text = "", i = 0
        while text.utf8.count < 8000 {
            text += sentences[(i * 5) % sentences.count]
            text += i % 4 == 3 ? "\n\n" : " "
            i += 1
        }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// The tiny built-in shape, as a transformers 5 config.json would state it.
    static let config: [String: Any] = [
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": 256, "eos_token_id": 257, "dtype": "float32",
        "head_dim": 8, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02,
        "intermediate_size": 64, "max_position_embeddings": 128, "mlp_bias": false,
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "pad_token_id": NSNull(), "pretraining_tp": 1, "rms_norm_eps": 1e-6,
        "rope_parameters": ["rope_theta": 10000.0, "rope_type": "default"],
        "tie_word_embeddings": false, "transformers_version": "5.24.0", "use_cache": true, "vocab_size": 258,
    ]

    static func writeJSON(_ obj: [String: Any], to path: String) throws {
        try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: path))
    }

    typealias Tensors = [(name: String, shape: [Int], values: [Float])]

    /// Every base parameter of `config.json`, small deterministic values (norms near 1).
    static func weights() throws -> Tensors {
        let c = try ModelConfig.fromHuggingFace(json: try JSONSerialization.data(withJSONObject: config))
        var g = UInt64(42)
        return try LlamaModel.specs(config: c, lora: nil).map { spec in
            let isNorm = spec.name.hasSuffix("norm.weight")
            let values = (0..<spec.count).map { _ -> Float in
                g = g &* 6364136223846793005 &+ 1442695040888963407
                let u = Float(g >> 40) / Float(1 << 24) - 0.5     // [-0.5, 0.5)
                return isNorm ? 1 + 0.1 * u : 0.1 * u
            }
            return (spec.name, spec.shape, values)
        }
    }

    /// A model directory; `edit` may change the tensors before they are written.
    static func writeModelDir(_ dir: String, edit: (inout Tensors) -> Void = { _ in }) throws -> String {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeJSON(config, to: dir + "/config.json")
        var t = try weights()
        edit(&t)
        try SafeTensors.write(t, to: dir + "/model.safetensors")
        return dir
    }

    /// Rewrites a safetensors file's header through `edit`, keeping the data section.
    static func rewriteHeader(_ path: String, edit: (inout [String: Any]) -> Void) throws {
        let d = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = Int(d.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        var header = try #require(try JSONSerialization.jsonObject(with: d.subdata(in: 8..<(8 + n))) as? [String: Any])
        edit(&header)
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var out = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(d.subdata(in: (8 + n)..<d.count))
        try out.write(to: URL(fileURLWithPath: path))
    }
}

/// The options every run gets, then the case's own (later options win).
private func trainArgs(data: String, runDir: String, _ extra: [String]) -> [String] {
    ["train", "--model", "tiny", "--steps", "2", "--seq", "16", "--batch", "2", "--quiet",
     "--data", data, "--run-dir", runDir] + extra
}

@Suite("Bad input: one clear error line, non-zero exit, nothing written", .tags(.cli))
struct BadInputCLITests {
    enum Case: String, CaseIterable, CustomTestStringConvertible {
        case unknownMode, rankZero, rankTooLarge, unknownTarget, missingData, emptyCorpusFile, folderWithoutTxt
        case configNotJSON, configMissingHiddenSize, configKVHeadsDoNotDivide, vocabSmallerThanTokenizer
        case weightsTruncated, weightsHeaderLies, weightsShapeMismatch
        case stepsZero, replicasZero, seqLongerThanMaxPositions, unknownModelName

        var testDescription: String { rawValue }

        /// Extra arguments and the substring the error line must contain; sets up files under `dir`.
        func setUp(dir: String, corpus: String) throws -> (args: [String], expected: String) {
            switch self {
            case .unknownMode:
                return (["--mode", "foo"], "'foo' is invalid for '--mode")
            case .rankZero:
                return (["--rank", "0"], "LoRA rank must be between 1 and 65536, got 0")
            case .rankTooLarge:
                return (["--rank", "64"], "LoRA rank 64 is larger than")
            case .unknownTarget:
                return (["--targets", "q_proj,foo_proj"], "unknown LoRA target module 'foo_proj'")
            case .missingData:
                return (["--data", dir + "/no-such-corpus.txt"], "no-such-corpus.txt does not exist")
            case .emptyCorpusFile:
                let f = dir + "/empty.txt"
                try Data().write(to: URL(fileURLWithPath: f))
                return (["--data", f], "is empty")
            case .folderWithoutTxt:
                let d = dir + "/notext"
                try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
                try "# not a corpus\n".write(toFile: d + "/README.md", atomically: true, encoding: .utf8)
                return (["--data", d], "holds no .txt files")
            case .configNotJSON:
                let f = dir + "/config.json"
                try #"{"hidden_size": 32, "vocab_size": "#.write(toFile: f, atomically: true, encoding: .utf8)
                return (["--model", f], "not a JSON object")
            case .configMissingHiddenSize:
                var c = CLIFiles.config
                c.removeValue(forKey: "hidden_size")
                try CLIFiles.writeJSON(c, to: dir + "/config.json")
                return (["--model", dir + "/config.json"], "missing \"hidden_size\"")
            case .configKVHeadsDoNotDivide:
                var c = CLIFiles.config
                c["num_key_value_heads"] = 3
                try CLIFiles.writeJSON(c, to: dir + "/config.json")
                return (["--model", dir + "/config.json"], "num_key_value_heads 3 does not divide num_attention_heads 4")
            case .vocabSmallerThanTokenizer:
                // The PyTorch fixture's vocabulary (64) cannot hold the byte tokenizer's 258 ids.
                return (["--model", TestPaths.fixtures + "/llama_untied"], "model vocabulary 64 is smaller")
            case .weightsTruncated:
                let m = try CLIFiles.writeModelDir(dir + "/model")
                let f = m + "/model.safetensors"
                let d = try Data(contentsOf: URL(fileURLWithPath: f))
                try d.prefix(200).write(to: URL(fileURLWithPath: f))    // header length now exceeds the file
                return (["--model", m], "exceeds the file")
            case .weightsHeaderLies:
                let m = try CLIFiles.writeModelDir(dir + "/model")
                try CLIFiles.rewriteHeader(m + "/model.safetensors") { h in
                    var e = h["model.norm.weight"] as! [String: Any]
                    let offs = (e["data_offsets"] as! [NSNumber]).map(\.intValue)
                    e["data_offsets"] = [offs[0] + 1_000_000, offs[1] + 1_000_000]
                    h["model.norm.weight"] = e
                }
                return (["--model", m], "'model.norm.weight' data_offsets")
            case .weightsShapeMismatch:
                // Same element count, wrong shape: only the shape check can catch it.
                let m = try CLIFiles.writeModelDir(dir + "/model") { t in
                    let i = t.firstIndex { $0.name == "model.layers.1.self_attn.q_proj.weight" }!
                    t[i].shape = [16, 64]
                }
                return (["--model", m], "'model.layers.1.self_attn.q_proj.weight' has shape [16, 64], the model expects [32, 32]")
            case .stepsZero:
                return (["--steps", "0"], "--steps must be in 1...100000000, got 0")
            case .replicasZero:
                return (["--replicas", "0"], "--replicas must be in 1...1024, got 0")
            case .seqLongerThanMaxPositions:
                var c = CLIFiles.config
                c["max_position_embeddings"] = 8
                try CLIFiles.writeJSON(c, to: dir + "/config.json")
                return (["--model", dir + "/config.json"], "sequence length 16 must be between 1 and max_position_embeddings 8")
            case .unknownModelName:
                return (["--model", "huge"], "model 'huge' is neither a built-in config")
            }
        }
    }

    @Test(arguments: Case.allCases)
    func rejects(_ c: Case) throws {
        let dir = TestPaths.tempDir("bad-\(c.rawValue)")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let corpus = dir + "/corpus.txt"
        try CLIFiles.writeCorpus(corpus)
        let runDir = dir + "/run"
        let (args, expected) = try c.setUp(dir: dir, corpus: corpus)

        let (status, stdout, stderr) = try runProcess(TestPaths.binary, trainArgs(data: corpus, runDir: runDir, args))

        // A normal exit with runCommand's codes (1, or ArgumentParser's 64), not a
        // signal: a trap would report SIGILL (4) / SIGTRAP (5) / SIGABRT (6) / SIGSEGV (11).
        #expect(status == 1 || status == 64, "exit status \(status); stderr: \(stderr)")
        #expect(!stderr.contains("Fatal error") && !stderr.contains("Crash") && !stderr.contains("Stack dump"), "\(stderr)")
        // Exactly one non-empty line, naming the problem.
        let lines = stderr.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 2 && lines[1].isEmpty, "stderr is not one line: \(stderr.debugDescription)")
        let line = String(lines.first ?? "")
        #expect(line.hasPrefix("lora-dist: error: ") && line.count > "lora-dist: error: ".count, "\(line)")
        #expect(line.contains(expected), "expected \(expected.debugDescription) in \(line.debugDescription)")
        #expect(stdout.isEmpty, "stdout: \(stdout)")
        // Nothing half-written.
        #expect(!FileManager.default.fileExists(atPath: runDir), "\(runDir) was created")
    }
}

/// Nested so `--filter BadInputCLITests` runs the whole file.
extension BadInputCLITests {
    @Suite("CLI happy path")
    struct HappyPath {
        static func readJSON(_ path: String) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        }

        /// Runs a tiny job and checks the run directory; returns the summary.
        @discardableResult
        static func train(_ name: String, _ extra: [String], mode: String) throws -> [String: Any] {
            let dir = TestPaths.tempDir("ok-\(name)")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let corpus = dir + "/corpus.txt", runDir = dir + "/runs/one"
            try CLIFiles.writeCorpus(corpus)
            let (status, stdout, stderr) = try runProcess(TestPaths.binary, trainArgs(data: corpus, runDir: runDir, extra))
            try #require(status == 0, "exit \(status); stderr: \(stderr)")
            #expect(stdout.contains("\(mode) done: dev loss"), "\(stdout)")
            #expect(!stderr.contains("error"), "\(stderr)")

            let metrics = try String(contentsOfFile: runDir + "/metrics.jsonl", encoding: .utf8)
            #expect(metrics.hasSuffix("\n"))
            let lines = metrics.split(separator: "\n")
            #expect(lines.count == 2, "one line per step: \(metrics)")
            var trainable: Int?
            for (i, line) in lines.enumerated() {
                let rec = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                for key in ["step", "loss", "lr", "tokens", "tokens_per_s", "trainable_params", "mode"] {
                    #expect(rec[key] != nil, "step \(i + 1) lacks \(key): \(line)")
                }
                #expect(rec["step"] as? Int == i + 1)
                #expect(rec["tokens"] as? Int == (i + 1) * 2 * 16)
                #expect(rec["mode"] as? String == mode)
                #expect((rec["loss"] as? Double).map { $0.isFinite && $0 > 0 } == true)
                #expect((rec["lr"] as? Double).map { $0 > 0 } == true)
                #expect((rec["tokens_per_s"] as? Double).map { $0 > 0 } == true)
                trainable = rec["trainable_params"] as? Int
            }

            let s = try readJSON(runDir + "/summary.json")
            for key in ["final_loss", "dev_loss", "dev_perplexity", "trainable_params", "total_params", "wall_s"] {
                #expect(s[key] != nil, "summary lacks \(key)")
            }
            let devLoss = try #require(s["dev_loss"] as? Double)
            let ppl = try #require(s["dev_perplexity"] as? Double)
            #expect(abs(ppl - Foundation.exp(devLoss)) <= 1e-3 * ppl)
            #expect((s["final_loss"] as? Double).map(\.isFinite) == true)
            #expect((s["wall_s"] as? Double).map { $0 >= 0 } == true)
            #expect(s["trainable_params"] as? Int == trainable)
            #expect(s["mode"] as? String == mode)
            // No temporary files left beside the reports (and one TensorBoard event file).
            let files = try FileManager.default.contentsOfDirectory(atPath: runDir).sorted()
            #expect(files.filter { !$0.hasPrefix("events.out.tfevents.") } == ["checkpoints", "config.yaml", "metrics.jsonl", "summary.json"])
            #expect(files.filter { $0.hasPrefix("events.out.tfevents.") }.count == 1, "\(files)")
            return s
        }

        @Test func loraThenFull() throws {
            let lora = try Self.train("lora", [], mode: "lora")
            let full = try Self.train("full", ["--mode", "full"], mode: "full")
            let loraTrainable = try #require(lora["trainable_params"] as? Int)
            let fullTrainable = try #require(full["trainable_params"] as? Int)
            let fullTotal = try #require(full["total_params"] as? Int)
            #expect(fullTrainable == fullTotal)
            #expect(loraTrainable > 0 && loraTrainable < fullTrainable)
            // LoRA's total is the base plus the adapters.
            #expect(lora["total_params"] as? Int == fullTotal + loraTrainable)
        }

        @Test func trainsFromModelDirectory() throws {
            let dir = TestPaths.tempDir("ok-modeldir")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let m = try CLIFiles.writeModelDir(dir + "/model")
            let s = try Self.train("modeldir", ["--model", m, "--targets", "q_proj,v_proj", "--rank", "4"], mode: "lora")
            #expect(s["model"] as? String == m)
            // 2 layers × (q: 4·32 + 32·4, v: 4·32 + 16·4)
            #expect(s["trainable_params"] as? Int == 2 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4)))
            try Self.train("modeldir-full", ["--model", m, "--mode", "full"], mode: "full")
        }

        @Test func helpListsEveryTrainOption() throws {
            let options = ["--mode", "--model", "--data", "--steps", "--batch", "--micro-batch", "--seq", "--lr",
                           "--min-lr-ratio", "--warmup", "--weight-decay", "--clip", "--rank", "--alpha", "--lora-dropout",
                           "--targets", "--rslora", "--run-dir", "--seed", "--eval-every", "--eval-seqs", "--dev-percent",
                           "--quiet"]
            for args in [["train", "--help"], ["help", "train"]] {
                let (status, stdout, stderr) = try runProcess(TestPaths.binary, args)
                #expect(status == 0, "\(args): exit \(status), \(stderr)")
                for o in options {
                    #expect(stdout.contains(o), "\(args) help does not mention \(o)")
                }
            }
            // The root help lists the subcommands (train is the default) but not train's
            // options: that is ArgumentParser's layout for a default subcommand.
            let (status, stdout, _) = try runProcess(TestPaths.binary, ["--help"])
            #expect(status == 0)
            #expect(stdout.contains("train (default)") && stdout.contains("bench"), "\(stdout)")
            #expect(stdout.contains("lora-dist help <subcommand>"), "\(stdout)")
        }
    }
}
