import Foundation
import Testing
@testable import LoraDist

/// `compare --data-sizes`: reading the sizes, the N-token subset a run trains on, and the
/// verdict on whether LoRA's advantage grows as data gets scarcer.
@Suite struct DataSizesTests {
    @Test("sizes: whole token counts with k/M suffixes, smallest first")
    func parse() throws {
        #expect(try DataSizes.parse("5k,50k,500k") == [5_000, 50_000, 500_000])
        #expect(try DataSizes.parse("2M, 1.5k ,300,7K") == [300, 1_500, 7_000, 2_000_000])
        #expect(try DataSizes.parse("0.25M") == [250_000])
    }

    @Test("a size that is not a positive whole number of tokens, or is given twice, is refused naming it",
          arguments: ["", "5k,", "abc", "5x", "-5k", "0", "0k", "1.5", "1.2345k", "k", "5 k", "1e3", "5k,5000", "5kk", "nan"])
    func refuse(_ text: String) throws {
        let e = #expect(throws: LoraDistError.self) { try DataSizes.parse(text) }
        #expect(e?.message.hasPrefix("--data-sizes: ") == true, "\(e?.message ?? "")")
    }

    @Test("labels: 5k, 1.5k, 2M, 300; parsing a label gives the size back", arguments: [5_000, 1_500, 1_100, 2_000_000, 300, 50_000, 1_250_000, 1_001])
    func label(_ n: Int) throws {
        #expect(try DataSizes.parse(DataSizes.label(n)) == [n])
        #expect(DataSizes.label(5_000) == "5k" && DataSizes.label(1_500) == "1.5k" && DataSizes.label(2_000_000) == "2M")
    }

    @Test("the subset of N tokens: exactly the first N ids of the training split, the same however often it is taken; more than the split is refused")
    func subset() throws {
        let data = try writeCorpus("datasizes", lines: 400) { "document line \($0): \($0 * 7919 % 1000) tokens" }
        let dev = try writeCorpus("datasizes-dev", lines: 40) { "held out \($0)" }
        let c = try TrainingCorpus(data: data, devData: dev, devPercent: 0, tokenizer: ByteTokenizer(), reading: CorpusReading(),
                                   folder: TestPaths.tempDir("datasizes-tokens"))
        let all = Array(c.train)
        for n in [2, 17, 1_000, all.count] {
            let s = try c.firstTrainingTokens(n, data: data)
            #expect(s.count == n)
            #expect(Array(s) == Array(all.prefix(n)))
            #expect(Array(try c.firstTrainingTokens(n, data: data)) == Array(s))
        }
        let e = #expect(throws: LoraDistError.self) { try c.firstTrainingTokens(all.count + 1, data: data) }
        #expect(e?.message == "--train-tokens \(all.count + 1) is more than the \(all.count) training tokens of \(data)")
        // The sampler over a subset draws every window from it: no id past N is ever read.
        let n = 300
        let sampler = try Sampler(tokens: c.firstTrainingTokens(n, data: data), seqLen: 16, seed: 7)
        var inputs = [Int32](repeating: 0, count: 16), targets = inputs
        var starts = Set<[Int32]>()
        for step in 0..<200 {
            sampler.fill(step: step, index: 0, inputs: &inputs, targets: &targets)
            starts.insert(inputs)
            let window = inputs + [targets.last!]
            let found = (0...(n - 17)).contains { Array(all[$0..<($0 + 17)]) == window }
            #expect(found, "step \(step): a window not inside the first \(n) tokens")
        }
        #expect(starts.count > 50, "the sampler should draw many different windows")
    }

    /// A row of one seed with the figures the scarcity verdict reads.
    func row(_ mode: String, outOfDomain: Double, seed: Int) throws -> CompareResults.Row {
        let o: [String: Any] = [
            "run": mode, "label": mode, "mode": mode, "lr": 0.001, "trainable_params": 1, "total_params": 1,
            "exchange_bytes_per_step": 1, "full_ft_exchange_bytes_per_step": 1, "node_memory_bytes": 0, "seconds_per_step": 0.0,
            "tokens_per_s": 0.0, "steps_done": 10, "early_stopped": seed == 0, "out_of_domain_perplexity": [String: Double](),
            "run_dir": "/nonexistent/\(mode)/\(seed)", "out_of_domain_mean": outOfDomain, "base_out_of_domain_mean": 20.0,
        ]
        return try JSONDecoder().decode(CompareResults.Row.self, from: JSONSerialization.data(withJSONObject: o))
    }

    func size(_ tokens: Int, lora: [Double], full: [Double]) throws -> DataSizesResults.Size {
        let l = try lora.enumerated().map { try row("lora", outOfDomain: $1, seed: $0) }
        let f = try full.enumerated().map { try row("full", outOfDomain: $1, seed: $0) }
        return .init(tokens: tokens, label: DataSizes.label(tokens), runs: [.over(seeds: l, first: 1), .over(seeds: f, first: 1)])
    }

    func results(_ sizes: [DataSizesResults.Size]) -> DataSizesResults {
        DataSizesResults(base: "b", domain: "legal", outOfDomain: ["medical"], general: "general", worldSize: 1, nodes: 1,
                         exchange: "flat", budget: .init(steps: 10, batch: 2, seqLen: 8, tokens: 160),
                         earlyStopping: .init(evalEvery: 2, patience: 1), lr: .init(lora: [0.001], full: [0.001]),
                         domainTrainTokens: 10_000, selection: DataSizesResults.prefixSelection, basePerplexity: [:], baseAccuracy: [:],
                         seeds: 3, sizes: sizes, quick: false, wallSeconds: 1)
    }

    @Test("LoRA's advantage out of domain grows as data shrinks when the per-seed change of LoRA − full lies below zero; inconclusive when its interval crosses zero")
    func scarcityVerdict() throws {
        // Out-of-domain perplexity: at 1k LoRA is 3 below full, at 10k about even.
        let grows = results([try size(1_000, lora: [15.0, 15.2, 14.9], full: [18.0, 18.1, 18.0]),
                             try size(10_000, lora: [14.0, 14.1, 14.0], full: [14.0, 14.0, 14.1])])
        let line = try #require(DataSizesReport.scarcity(grows).first { $0.hasPrefix("Out-of-domain perplexity:") })
        #expect(line.contains("**LoRA's advantage grows as data gets scarcer** (as published)"), "\(line)")
        let noisy = results([try size(1_000, lora: [15.0, 19.0, 14.0], full: [18.0, 15.0, 17.0]),
                             try size(10_000, lora: [14.0, 14.1, 14.0], full: [14.0, 14.0, 14.1])])
        let line2 = try #require(DataSizesReport.scarcity(noisy).first { $0.hasPrefix("Out-of-domain perplexity:") })
        #expect(line2.contains("**no change told apart from noise** (inconclusive)"), "\(line2)")
        let shrinks = results([try size(1_000, lora: [14.0, 14.1, 14.0], full: [14.0, 14.0, 14.1]),
                               try size(10_000, lora: [15.0, 15.2, 14.9], full: [18.0, 18.1, 18.0])])
        let line3 = try #require(DataSizesReport.scarcity(shrinks).first { $0.hasPrefix("Out-of-domain perplexity:") })
        #expect(line3.contains("**LoRA's advantage shrinks as data gets scarcer**"), "\(line3)")
        // The report says per row whether early stopping ended each seed's run (seed 0 of each did here).
        let md = DataSizesReport.markdown(grows)
        #expect(md.contains("| lora | 10 (-), 10 (-), 10 (-) | 1 of 3 seeds |"), "\(md)")
    }

    @Test("the chart: one panel per figure, a log x axis for sizes spanning 100×, tokens on the ticks, a whisker per interval")
    func chart() throws {
        let r = results([try size(1_000, lora: [15.0, 15.2, 14.9], full: [18.0, 18.1, 18.0]),
                         try size(100_000, lora: [14.0, 14.1, 14.0], full: [14.0, 14.0, 14.1])])
        let svg = DataSizesReport.chart(r)
        #expect(svg.components(separatedBy: "<svg ").count - 1 == 4, "an outer SVG and three panels")
        #expect(svg.contains("training tokens of legal (log scale)"))
        #expect(svg.contains(">1k tokens<") && svg.contains(">100k tokens<"))
        // Out-of-domain has intervals for both rows at both sizes: four whiskers (vertical lines, stroke-width 1.5).
        #expect(svg.components(separatedBy: "stroke-width=\"1.5\"").count - 1 == 4)
    }
}
