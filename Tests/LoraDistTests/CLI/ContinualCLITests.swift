import Foundation
import Testing
@testable import LoraDist

/// `lora-dist compare --quick --continual` under mpirun: the report's structure, and properties
/// that follow from each method: (c)'s adapters are frozen after their stage, so its earlier-domain
/// scores stay exactly the same; (a) goes on changing the weights that scored them.
@Suite(.serialized, .tags(.cli)) struct ContinualCLITests {
    static let stages = ["technical", "legal", "medical"]

    @Test("compare --quick --continual technical,legal,medical on 2 ranks: every stage scored, (c) frozen, (a) moving, forgetting and bytes consistent")
    func quick() throws {
        if !FileManager.default.fileExists(atPath: CompareCLITests.corpora + "/.complete") {
            let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-corpora.sh"])
            try #require(status == 0, "fetch-corpora.sh failed: \(err)")
        }
        // A tiny base trained briefly on general text, then short stages (what --quick does, at a test's budget).
        let out = TestPaths.tempDir("continual"), base = out + "-base"
        defer { try? FileManager.default.removeItem(atPath: base) }
        let g = CompareCLITests.corpora + "/general"
        let (s0, _, e0) = try MultiRankCLITests.launch(2, ["train", "--mode", "full", "--model", "tiny", "--data", g + "/train",
                                                            "--dev-data", g + "/dev", "--steps", "40", "--batch", "8", "--seq", "64",
                                                            "--lr", "1e-2", "--warmup", "4", "--eval-every", "40", "--quiet",
                                                            "--run-dir", out + "-pretrain", "--export-merged", base])
        try #require(s0 == 0, "pretraining the base exited \(s0): \(e0)")
        let (status, stdout, err) = try MultiRankCLITests.launch(2, [
            "compare", "--continual", Self.stages.joined(separator: ","), "--base", base, "--out", out,
            "--ranks", "4", "--lr-lora", "1e-2", "--lr-full", "3e-3", "--steps", "6", "--batch", "4", "--seq", "64",
            "--eval-every", "3", "--patience", "2", "--eval-seqs", "4", "--test-seqs", "8"])
        try #require(status == 0, "compare --continual exited \(status): \(err)")
        #expect(stdout.contains("# Continual adaptation: technical → legal → medical"))
        for f in ["report.md", "report.json", "forgetting.svg", "config.yaml"] {
            #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(f) missing")
        }
        let r = try JSONCoding.decode(ContinualResults.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/report.json")),
                                      source: "report.json")
        #expect(r.stages == Self.stages)
        #expect(r.methods.map(\.method) == [.full, .lora, .switched, .merged])
        let baseGeneral = try #require(r.baseScores["general"]?.perplexity)
        for m in r.methods {
            try #require(m.stages.count == 3, "\(m.method)")
            for (k, s) in m.stages.enumerated() {
                #expect(s.stage == k + 1 && s.domain == Self.stages[k])
                #expect(Set(s.scores.keys) == Set(Self.stages[...k] + ["general"]), "\(m.method) stage \(k + 1): \(s.scores.keys)")
                for (d, score) in s.scores {
                    let ppl = try #require(score.perplexity, "\(m.method) stage \(k + 1) \(d): perplexity missing")
                    let acc = try #require(score.accuracy, "\(m.method) stage \(k + 1) \(d): accuracy missing")
                    #expect(ppl > 1 && acc > 0 && acc < 1, "\(m.method) stage \(k + 1) \(d): \(ppl), \(acc)")
                }
                #expect(s.exchangeBytes == s.exchangeBytesPerStep * s.stepsDone)
                // hierarchical, one node, 2 ranks: a reduce-scatter sends half the gradient
                #expect(s.exchangeBytesPerStep == 4 * s.trainableParams / 2, "\(m.method) stage \(k + 1)")
            }
            let last = m.stages[2]
            for s in m.stages.dropLast() {
                let expected = last.scores[s.domain]!.perplexity! - s.scores[s.domain]!.perplexity!
                let got = try #require(m.forgetting[s.domain] ?? nil, "\(m.method): forgetting of \(s.domain) missing")
                #expect(abs(got - expected) < 1e-9 * max(1, abs(expected)))
            }
            #expect(m.forgetting.count == 2)
            #expect(abs(m.generalRise! - (last.scores["general"]!.perplexity! - baseGeneral)) < 1e-9 * baseGeneral)
            #expect(m.exchangeBytes == m.stages.map(\.exchangeBytes).reduce(0, +))
        }
        let full = r.methods[0], lora = r.methods[1], switched = r.methods[2], merged = r.methods[3]
        // (c): an earlier domain's adapter is frozen after its stage: re-evaluated with it, its scores are
        // bit for bit those right after its stage; general text is served by the base alone.
        for (k, d) in Self.stages.enumerated() {
            let own = switched.stages[k].scores[d]!
            for later in switched.stages[k...] { #expect(later.scores[d] == own, "(c) \(d) after stage \(later.stage)") }
        }
        for s in switched.stages { #expect(s.scores["general"] == r.baseScores["general"]) }
        #expect(switched.forgetting.values.allSatisfy { $0 == 0 })
        // (a) and (b) keep training the weights that scored technical: its perplexity moves.
        for m in [full, lora, merged] {
            #expect(m.stages[1].scores["technical"] != m.stages[0].scores["technical"], "\(m.method): technical did not move")
        }
        // LoRA trains far fewer parameters than full fine-tuning, and exchanges that much less.
        #expect(lora.stages[0].trainableParams * 2 < full.stages[0].trainableParams)
        #expect(lora.exchangeBytes < full.exchangeBytes)
        // Weights kept to serve every domain: (c) the base and three adapters, (b) the base and one.
        let P = full.stages[0].trainableParams, A = lora.stages[0].trainableParams
        #expect(full.keptBytes == 4 * P && merged.keptBytes == 4 * P)
        #expect(lora.keptBytes == 4 * (P + A) && switched.keptBytes == 4 * (P + 3 * A))
        let md = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        for m in r.methods { #expect(md.contains(m.label)) }
        #expect(md.contains("## Forgetting and cost") && md.contains("forgot least"))
        let svg = try String(contentsOfFile: out + "/forgetting.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<polyline").count - 1 == 8)
    }

    @Test("compare --continual on a GGUF base: the stages' model directories carry its tokenizer as tokenizer.json, read back the same")
    func ggufBase() throws {
        if !FileManager.default.fileExists(atPath: CompareCLITests.corpora + "/.complete") {
            let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-corpora.sh"])
            try #require(status == 0, "fetch-corpora.sh failed: \(err)")
        }
        // Small corpora (the first files of each split, about 40 KB) keep the BPE tokenizing short.
        let out = TestPaths.tempDir("continual-gguf"), corpora = out + "-corpora"
        defer { try? FileManager.default.removeItem(atPath: corpora) }
        let fm = FileManager.default
        for d in ["legal", "medical", "general"] {
            for split in ["train", "dev", "test"] {
                let from = CompareCLITests.corpora + "/\(d)/\(split)", to = corpora + "/\(d)/\(split)"
                try fm.createDirectory(atPath: to, withIntermediateDirectories: true)
                var bytes = 0
                for f in try fm.contentsOfDirectory(atPath: from).sorted() where bytes < 40_000 {
                    try fm.copyItem(atPath: from + "/" + f, toPath: to + "/" + f)
                    bytes += (try fm.attributesOfItem(atPath: to + "/" + f)[.size] as? Int) ?? 0
                }
            }
        }
        let gguf = TestPaths.fixtures + "/gguf/tiny_bpe.gguf"
        let (status, _, err) = try MultiRankCLITests.launch(2, [
            "compare", "--continual", "legal,medical", "--base", gguf, "--corpora", corpora, "--out", out,
            "--ranks", "4", "--lr-lora", "1e-2", "--lr-full", "3e-3", "--steps", "4", "--batch", "4", "--seq", "32",
            "--eval-every", "2", "--patience", "2", "--eval-seqs", "2", "--test-seqs", "4"])
        try #require(status == 0, "compare --continual on a GGUF base exited \(status): \(err)")
        let base = try #require(try ModelSource(gguf).tokenizer as? BPETokenizer)
        #expect(base.bos == 2 && base.eos == 3 && base.preTokenizer == "smollm")
        // (a) and (d) hand each stage's weights on as a model directory: each reads text as the GGUF does
        // (without tokenizer.json it would read bytes, whose 258 ids fit this 600-token vocabulary silently).
        for method in ["full", "merge"] {
            for (k, d) in ["legal", "medical"].enumerated() {
                let dir = out + "/runs/\(method)/\(k + 1)-\(d)/model"
                #expect(fm.fileExists(atPath: dir + "/tokenizer.json"), "\(dir): no tokenizer.json")
                let stage = try #require(try ModelSource(dir).tokenizer as? BPETokenizer, "\(dir): not read as BPE")
                #expect(stage.identity == base.identity, "\(dir)")
            }
        }
        let r = try JSONCoding.decode(ContinualResults.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/report.json")),
                                      source: "report.json")
        #expect(r.base == gguf && r.methods.map(\.method) == [.full, .lora, .switched, .merged])
        for m in r.methods {
            #expect(m.stages.count == 2 && m.stages[1].scores.count == 3, "\(m.method)")
            #expect(m.stages.allSatisfy { $0.scores.values.allSatisfy { ($0.perplexity ?? 0) > 1 } }, "\(m.method)")
        }
    }

    @Test("compare --continual refuses a repeated domain, general, an unknown domain: one line, non-zero exit, nothing written")
    func badInput() throws {
        for (list, message) in [("technical,technical", "given twice"), ("legal,general", "general is the held-out text"),
                                ("technical,,legal", "is not a domain name"), ("technical,nowhere", "domain 'nowhere' not found")] {
            let out = TestPaths.tempDir("continual-bad") + "/out"
            let (status, _, err) = try MultiRankCLITests.launch(2, ["compare", "--quick", "--continual", list, "--out", out])
            #expect(status != 0, "\(list) accepted")
            #expect(err.contains(message), "\(list): \(err)")
            #expect(!FileManager.default.fileExists(atPath: out), "\(list): \(out) was created")
        }
    }
}
