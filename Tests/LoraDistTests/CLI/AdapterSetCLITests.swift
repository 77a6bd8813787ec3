import Foundation
import Testing
@testable import LoraDist

/// `train --adapter-set`: several adapters in one job on one shared base, under the real mpirun.
/// Every adapter must train exactly as it does alone with the same flags and its own data.
@Suite(.serialized, .tags(.cli)) struct AdapterSetCLITests {
    static let flags = ["--model", "tiny", "--batch", "5", "--seq", "24", "--lr", "5e-3", "--rank", "4", "--warmup", "1",
                        "--eval-seqs", "4", "--quiet"]

    /// Two corpora different enough that swapping adapters, or sharing one adapter's weights,
    /// shows in the losses.
    static func corpora() throws -> (legal: String, medical: String) {
        (try writeCorpus("set-legal") { "Clause \($0): the licensee may copy and modify the work, \($0 % 11) times." },
         try writeCorpus("set-medical") { "Term \($0): abnormality of the heart valve, onset \($0 % 7) years; see HP:\($0)." })
    }

    static func losses(_ runDir: String) throws -> [Double] {
        try String(contentsOfFile: runDir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])["loss"] as! Double
        }
    }

    static func json(_ path: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    /// The adapter trained alone on one rank: its losses and its PEFT export.
    static func alone(_ name: String, data: String, steps: Int, extra: [String] = []) throws -> (losses: [Double], adapter: SafeTensors) {
        let dir = TestPaths.tempDir("set-alone-\(name)")
        let (status, _, err) = try runProcess(TestPaths.binary, ["train", "--data", data, "--steps", "\(steps)", "--run-dir", dir + "/run"]
                                              + flags + extra, env: cleanEnvironment())
        try #require(status == 0, "alone \(name): \(err)")
        let (s2, _, e2) = try runProcess(TestPaths.binary, ["export", "--checkpoint", dir + "/run", "--format", "peft", "--out", dir + "/peft"],
                                         env: cleanEnvironment())
        try #require(s2 == 0, "export \(name): \(e2)")
        return (try losses(dir + "/run"), try SafeTensors(path: dir + "/peft/adapter_model.safetensors"))
    }

    static func expectClose(_ a: [Double], _ b: [Double], _ what: String) {
        #expect(a.count == b.count, "\(what): \(a.count) steps against \(b.count)")
        for (i, (x, y)) in zip(a, b).enumerated() { #expect(abs(x - y) <= 1e-5 * abs(y), "\(what) step \(i + 1): loss \(x) vs \(y)") }
    }

    /// 2 adapters on 1 rank (round robin), 2 ranks (one each) and 4 ranks (two each): every
    /// adapter's losses and exported weights equal training it alone (relative 1e-5).
    @Test("each adapter of a set trains as it does alone, on 1, 2 and 4 ranks")
    func equalsAlone() throws {
        let (legal, medical) = try Self.corpora()
        let ref = ["legal": try Self.alone("legal", data: legal, steps: 4), "medical": try Self.alone("medical", data: medical, steps: 4)]
        #expect(ref["legal"]!.losses != ref["medical"]!.losses)
        for ranks in [1, 2, 4] {
            let run = TestPaths.tempDir("set-\(ranks)") + "/run"
            let (status, out, err) = try MultiRankCLITests.launch(ranks, ["train", "--adapter-set", "legal=\(legal),medical=\(medical)",
                                                                          "--steps", "4", "--run-dir", run] + Self.flags)
            try #require(status == 0, "\(ranks) ranks: \(err)")
            #expect(out.contains("legal: 4 steps") && out.contains("medical: 4 steps"))
            for name in ["legal", "medical"] {
                let dir = run + "/adapters/" + name
                Self.expectClose(try Self.losses(dir), ref[name]!.losses, "\(ranks) ranks, \(name)")
                let summary = try Self.json(dir + "/summary.json")
                #expect(summary["world_size"] as? Int == max(1, ranks / 2), "\(ranks) ranks, \(name): group size")
                #expect(FileManager.default.fileExists(atPath: dir + "/config.yaml"))
                let peft = try SafeTensors(path: dir + "/adapter/adapter_model.safetensors"), want = ref[name]!.adapter
                #expect(peft.names.sorted() == want.names.sorted())
                var worst: Float = 0
                for t in want.names {
                    let x = try peft.floats(t), y = try want.floats(t)
                    worst = max(worst, zip(x, y).map { abs($0 - $1) }.max() ?? 0)
                }
                #expect(worst <= 1e-5, "\(ranks) ranks, \(name): exported adapter differs by \(worst)")
            }
            let set = try Self.json(run + "/adapter-set.json")
            #expect((set["adapters"] as? [[String: Any]])?.map { $0["name"] as? String } == ["legal", "medical"])
            #expect(set["groups"] as? Int == min(ranks, 2))
        }
    }

    /// Per-adapter flags: legal at rank 8 over the shared rank 4, medical with its own learning
    /// rate and 3 steps; each trains as it does alone with those flags (2 ranks, one each).
    @Test("--adapter-option sets a flag for one adapter of a set")
    func perAdapterFlags() throws {
        let (legal, medical) = try Self.corpora()
        let refLegal = try Self.alone("opt-legal", data: legal, steps: 4, extra: ["--rank", "8"])
        let refMedical = try Self.alone("opt-medical", data: medical, steps: 3, extra: ["--lr", "1e-3"])
        let run = TestPaths.tempDir("set-options") + "/run"
        let (status, _, err) = try MultiRankCLITests.launch(2, ["train", "--adapter-set", "legal=\(legal),medical=\(medical)", "--steps", "4",
                                                               "--run-dir", run, "--adapter-option", "legal:rank=8",
                                                               "--adapter-option=medical:lr=1e-3", "--adapter-option", "medical:steps=3"] + Self.flags)
        try #require(status == 0, "\(err)")
        Self.expectClose(try Self.losses(run + "/adapters/legal"), refLegal.losses, "legal at rank 8")
        Self.expectClose(try Self.losses(run + "/adapters/medical"), refMedical.losses, "medical at lr 1e-3")
        #expect(try Self.json(run + "/adapters/legal/adapter/adapter_config.json")["r"] as? Int == 8)
        #expect(try Self.json(run + "/adapters/medical/adapter/adapter_config.json")["r"] as? Int == 4)
        let yaml = try String(contentsOfFile: run + "/adapters/medical/config.yaml", encoding: .utf8)
        #expect(yaml.contains("lr: 0.001") && yaml.contains("steps: 3"), "\(yaml)")
    }

    /// Stopped after step 2 on 2 ranks (QLoRA, three adapters: one group trains two), resumed
    /// from each adapter's latest checkpoint on 1 rank: the losses of the uninterrupted alone runs.
    @Test("an adapter set stops, and resumes on another world size")
    func resume() throws {
        let (legal, medical) = try Self.corpora()
        let qlora = ["--mode", "qlora"]
        let ref = ["legal": try Self.alone("q-legal", data: legal, steps: 5, extra: qlora).losses,
                   "medical": try Self.alone("q-medical", data: medical, steps: 5, extra: qlora).losses]
        let run = TestPaths.tempDir("set-resume") + "/run"
        let args = ["train", "--adapter-set", "legal=\(legal),medical=\(medical),again=\(legal)", "--steps", "5", "--run-dir", run] + Self.flags + qlora
        let (s1, _, e1) = try MultiRankCLITests.launch(2, args + ["--stop-after", "2"])
        #expect(s1 != 0, "a stopped set exits 75: \(e1)")
        #expect(try Self.losses(run + "/adapters/medical").count == 2)
        let (s2, _, e2) = try MultiRankCLITests.launch(1, args + ["--resume", "latest"])
        try #require(s2 == 0, "resume: \(e2)")
        for (name, want) in [("legal", ref["legal"]!), ("medical", ref["medical"]!), ("again", ref["legal"]!)] {
            Self.expectClose(try Self.losses(run + "/adapters/" + name), want, "resumed \(name)")
        }
    }

    /// Each refusal: one line, a non-zero exit from every rank, no run directory.
    @Test("bad adapter sets are refused with one line")
    func refusals() throws {
        let (legal, medical) = try Self.corpora()
        let cases: [([String], String)] = [
            (["--mode", "full", "--adapter-set", "a=\(legal),b=\(medical)"], "--mode full has no adapters"),
            (["--adapter-set", "a=\(legal),a=\(medical)"], "adapter name 'a' is given twice"),
            (["--adapter-set", "a/b=\(legal)"], "adapter name 'a/b' must be"),
            (["--adapter-set", "a=\(legal),b=/nonexistent/hpo.txt"], "adapter 'b': data /nonexistent/hpo.txt does not exist"),
            (["--adapter-set", "a=\(legal)", "--data", medical], "--data with --adapter-set"),
            (["--adapter-set", "a=\(legal)", "--export-merged", "/tmp/x"], "--export-merged with --adapter-set"),
            (["--adapter-set", "a=\(legal),b=\(medical)", "--resume", "latest"], "no checkpoint to resume"),
            (["--adapter-set", "a=\(legal),b=\(medical)", "--seq", "100000"], "adapter 'a': sequence length 100000"),
            (["--adapter-set", "a=\(legal),b=\(medical)", "--adapter-option", "c:rank=8"], "no adapter 'c' in --adapter-set (a, b)"),
            (["--adapter-set", "a=\(legal),b=\(medical)", "--adapter-option", "a:model=small"], "--model is shared by every adapter of the set"),
            (["--adapter-set", "a=\(legal),b=\(medical)", "--adapter-option", "a:rank"], "is not NAME:FLAG=VALUE"),
            (["--adapter-set", "a=\(legal),b=\(medical)", "--adapter-option", "b:rank=zero"], "--adapter-option for 'b': "),
            (["--adapter-set", "a=\(legal),b=\(medical)", "--adapter-option", "b:rank=0"], "--adapter-option for 'b': --rank: LoRA rank must be between 1"),
            (["--data", legal, "--adapter-option", "a:rank=8"], "--adapter-option a:rank=8 without --adapter-set"),
        ]
        for (extra, message) in cases {
            let run = TestPaths.tempDir("set-refused") + "/run"
            let (status, _, err) = try MultiRankCLITests.launch(2, ["train", "--steps", "2", "--run-dir", run] + Self.flags + extra)
            #expect(status != 0, "\(extra) was not refused")
            let lines = err.split(separator: "\n").filter { $0.hasPrefix("lora-dist: error:") }
            #expect(lines.count == 1 && lines[0].contains(message), "\(extra): \(err)")
            #expect(!FileManager.default.fileExists(atPath: run), "\(extra) left \(run)")
        }
    }
}
