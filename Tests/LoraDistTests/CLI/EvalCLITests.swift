import Foundation
import Testing
@testable import LoraDist

/// `lora-dist eval`: the sentence and --json carry the same loss, perplexity and top-1 accuracy.
@Suite(.serialized, .tags(.cli)) struct EvalCLITests {
    @Test("eval prints next-token accuracy beside perplexity; --json the same figures as numbers, on 1 and 2 ranks")
    func accuracy() throws {
        let data = try writeCorpus("eval-accuracy", lines: 60) { "Line \($0): the quick brown fox jumps over the lazy dog." } + "/c.txt"
        defer { try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent) }
        let args = ["eval", "--model", "tiny", "--data", data, "--seq", "32", "--windows", "8", "--batch", "4"]
        let (s1, text, e1) = try MultiRankCLITests.launch(1, args)
        try #require(s1 == 0, "\(e1)")
        let (s2, json, e2) = try MultiRankCLITests.launch(2, args + ["--json"])
        try #require(s2 == 0, "\(e2)")
        let line = try #require(json.split(separator: "\n").first)
        let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let loss = try #require(o["loss"] as? Double), ppl = try #require(o["perplexity"] as? Double)
        let acc = try #require(o["accuracy"] as? Double)
        #expect(abs(ppl - exp(loss)) < 1e-9 * ppl)
        #expect(acc >= 0 && acc <= 1)
        #expect(o["windows"] as? Int == 8 && o["seq_len"] as? Int == 32 && o["model"] as? String == "tiny")
        // The sentence (1 rank) rounds the same numbers (2 ranks: the sum is split, not the figures).
        #expect(text.contains(String(format: "loss %.4f nats/token, perplexity %.2f, next-token accuracy %.2f %%", loss, ppl, 100 * acc)), "\(text)")
    }
}
