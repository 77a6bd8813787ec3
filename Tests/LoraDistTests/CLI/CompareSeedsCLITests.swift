import Foundation
import Testing
@testable import LoraDist

/// `lora-dist compare --seeds N`: rows are means over the seeds' runs, with intervals, and the
/// verdicts follow the interval of the per-seed differences.
@Suite(.serialized, .tags(.cli)) struct CompareSeedsCLITests {
    @Test("compare --seeds 3 on 2 ranks: each row the mean of its 3 seeds' runs, intervals around the means, verdicts from the differences")
    func seeds() throws {
        if !FileManager.default.fileExists(atPath: CompareCLITests.corpora + "/.complete") {
            let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-corpora.sh"])
            try #require(status == 0, "fetch-corpora.sh failed: \(err)")
        }
        let out = TestPaths.tempDir("compare-seeds")
        let (status, _, err) = try MultiRankCLITests.launch(2, [
            "compare", "--base", "tiny", "--domain", "legal", "--out", out, "--ranks", "2", "--targets", "q_proj,v_proj", "--no-qlora", "--no-compressed",
            "--steps", "4", "--batch", "2", "--seq", "16", "--lr-lora", "1e-2", "--lr-full", "1e-2", "--eval-every", "2",
            "--eval-seqs", "2", "--test-seqs", "4", "--seeds", "3"])
        try #require(status == 0, "compare --seeds exited \(status): \(err)")
        let r = try JSONCoding.decode(CompareResults.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/report.json")), source: "report.json")
        #expect(r.seeds == 3)
        #expect(r.runs.map(\.mode) == ["lora", "full"])
        for row in r.runs {
            let seeds = try #require(row.perSeed, "\(row.run): no per-seed runs")
            try #require(seeds.count == 3)
            #expect(Set(seeds.map(\.runDir)).count == 3, "\(row.run): the seeds share a run directory")
            for (key, path) in CompareResults.Row.qualityFigures {
                let values = seeds.map { $0[keyPath: path]! }
                let mean = values.reduce(0, +) / 3
                #expect(abs(row[keyPath: path]! - mean) < 1e-9 * max(1, abs(mean)), "\(row.run) \(key)")
                let i = try #require(row.intervals?[key], "\(row.run): no interval for \(key)")
                #expect(i.n == 3 && i.low! <= mean && mean <= i.high!)
            }
            // The seed reaches the run: initialisation and data order differ, so do the figures.
            #expect(Set(seeds.map { $0.inDomainPerplexity! }).count > 1, "\(row.run): every seed gave the same perplexity")
        }
        // The verdict for in-domain perplexity is the one the interval of the per-seed differences gives.
        let lora = r.runs.first { $0.mode == "lora" }!, full = r.runs.first { $0.mode == "full" }!
        let diffs = zip(lora.perSeed!, full.perSeed!).map { $0.inDomainPerplexity! - $1.inDomainPerplexity! }
        let interval = try #require(CompareStats.interval(diffs))
        let verdict = try #require(CompareStats.verdict(loraMinusFull: interval, lowerIsBetter: true))
        let md = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        let line = try #require(md.split(separator: "\n").first { $0.hasPrefix("- In-domain perplexity:") })
        #expect(line.contains("**\(verdict.rawValue)**"), "\(line)")
        #expect(md.contains("mean over 3 seeds") && md.contains(" ± "))
        let svg = try String(contentsOfFile: out + "/loss_curves.svg", encoding: .utf8)
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 4, "loss curves: the first seed's train and dev of each row")
        // One seed: no intervals, the report as before.
        let (s1, _, e1) = try MultiRankCLITests.launch(1, ["compare", "--seeds", "0", "--out", out + "/x"])
        #expect(s1 != 0 && e1.contains("--seeds must be in 1...100"))
    }
}
