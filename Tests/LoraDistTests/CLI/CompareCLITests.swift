import Foundation
import Testing
@testable import LoraDist

/// `lora-dist compare --quick` under mpirun: the report's structure, every number
/// finite, and numbers that must agree with each other.
@Suite(.serialized, .tags(.cli)) struct CompareCLITests {
    static var corpora: String { CacheFolders.corpora }

    @Test("compare --quick --seeds 1 on 2 ranks: a consistent report, whose comparisons say they are not verdicts")
    func quick() throws {
        if !FileManager.default.fileExists(atPath: Self.corpora + "/.complete") {
            let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-corpora.sh"])
            try #require(status == 0, "fetch-corpora.sh failed: \(err)")
        }
        let out = TestPaths.tempDir("compare")
        let (status, stdout, err) = try MultiRankCLITests.launch(2, ["compare", "--quick", "--seeds", "1", "--domain", "legal", "--out", out])
        try #require(status == 0, "compare exited \(status): \(err)")
        #expect(stdout.contains("# LoRA vs full fine-tuning on legal"))
        for f in ["report.md", "report.json", "loss_curves.svg", "exchange_bytes.svg", "quality_vs_bytes.svg"] {
            #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(f) missing")
        }
        let svg = try String(contentsOfFile: out + "/loss_curves.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("<polyline"))
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/report.json"))) as? [String: Any])
        let runs = try #require(report["runs"] as? [[String: Any]])
        // ranks 4 and 16 × two target sets, QLoRA, full fine-tuning, and full with bf16 and PowerSGD r=4, r=16
        #expect(runs.count == 2 * 2 + 2 + 3)
        #expect(runs.compactMap { $0["grad_compression"] as? String }.sorted()
                == ["bf16"] + Array(repeating: "none", count: 6) + ["powersgd", "powersgd"])
        let full = try #require(runs.first { $0["mode"] as? String == "full" })
        let fullTrainable = full["trainable_params"] as! Int
        for row in runs {
            for key in ["in_domain_perplexity", "out_of_domain_mean", "general_perplexity", "forgetting", "best_dev_loss",
                        "seconds_per_step", "tokens_per_s"] {
                let v = try #require(row[key] as? Double, "\(row["run"]!): \(key) missing or not finite")
                #expect(v.isFinite)
            }
            for key in ["in_domain_accuracy", "out_of_domain_accuracy_mean", "general_accuracy"] {
                let v = try #require(row[key] as? Double, "\(row["run"]!): \(key) missing or not finite")
                #expect(v > 0 && v < 1, "\(row["run"]!): \(key) \(v)")
            }
            let trainable = row["trainable_params"] as! Int
            // hierarchical, one node, 2 ranks: a reduce-scatter sends half the gradient (bf16 has nothing
            // to compress on one node: nothing crosses a wire). PowerSGD r=4 sends less from its start
            // step on; at r=16 none of the tiny base's matrices compresses (2(rows+cols)r ≥ rows·cols).
            if row["grad_compression"] as? String == "powersgd" {
                if row["run"] as? String == "full-powersgd-r4" {
                    #expect((row["exchange_bytes_per_step"] as! Int) < 4 * trainable / 2, "\(row["run"]!)")
                }
            } else {
                #expect(row["exchange_bytes_per_step"] as? Int == 4 * trainable / 2, "\(row["run"]!)")
            }
            #expect(row["full_ft_exchange_bytes_per_step"] as? Int == 4 * fullTrainable / 2)
            #expect((row["in_domain_perplexity"] as! Double) > 1)
            #expect(abs((row["dev_perplexity"] as! Double) - Foundation.exp(row["best_dev_loss"] as! Double)) < 1e-6 * (row["dev_perplexity"] as! Double))
            let basePPL = try #require(report["base_perplexity"] as? [String: Double])
            #expect(abs((row["forgetting"] as! Double) - ((row["general_perplexity"] as! Double) - basePPL["general"]!)) < 1e-9)
            if row["mode"] as? String == "lora" { #expect(trainable < fullTrainable) }
        }
        // QLoRA: same adapters as its LoRA twin, trained on the NF4 base, whose own perplexity is reported.
        let qlora = try #require(runs.first { $0["mode"] as? String == "qlora" })
        let twin = try #require(runs.first { $0["run"] as? String == "lora-r4-all" })
        #expect(qlora["trainable_params"] as? Int == twin["trainable_params"] as? Int)
        let nf4Base = try #require(qlora["nf4_base_perplexity"] as? [String: Double])
        #expect(nf4Base["general"].map { $0.isFinite && $0 > 1 } == true)
        let baseAccuracy = try #require(report["base_accuracy"] as? [String: Double])
        #expect(Set(baseAccuracy.keys) == ["general", "legal", "medical", "technical"] && baseAccuracy.values.allSatisfy { $0 > 0 && $0 < 1 })
        let md = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        #expect(md.contains("| in-domain acc |") && md.contains("Base next-token accuracy"))
        #expect(md.contains("QLoRA vs LoRA r=4 (all linear)"))
        #expect(md.contains("Against the published comparison"))
        #expect(md.components(separatedBy: "as published").count + md.components(separatedBy: "disagrees").count - 2 >= 3)
        // One seed: no intervals, so the report says its comparisons are single runs, line by line.
        #expect(report["seeds"] == nil && md.contains("**One seed**"))
        #expect(md.components(separatedBy: "- One seed, not a verdict: ").count - 1 == 3, "\(md)")
    }
}
