import Foundation

/// report.json of `compare --continual`: every stage of every method, and all that report.md
/// and the chart are rendered from. Figures JSON cannot hold (NaN, infinity) are null.
public struct ContinualResults: Codable {
    public var base: String
    public var stages: [String]            // the domains, in training order
    public var general: String
    public var worldSize: Int
    public var nodes: Int
    public var exchange: String
    public var budget: CompareResults.Budget           // per stage
    public var earlyStopping: CompareResults.EarlyStopping
    public var lora: LoRASetting
    public var fullLR: Double
    public var testWindows: Int
    public var baseScores: [String: Score]
    public var methods: [MethodResult]
    public var quick: Bool
    public var wallSeconds: Double

    enum CodingKeys: String, CodingKey {
        case base, stages, general, nodes, exchange, budget, lora, methods, quick
        case worldSize = "world_size", earlyStopping = "early_stopping", fullLR = "full_lr"
        case testWindows = "test_windows", baseScores = "base_scores", wallSeconds = "wall_s"
    }

    public struct LoRASetting: Codable {
        public var rank: Int, alpha: Double, targets: [String], lr: Double
    }

    /// Perplexity and top-1 next-token accuracy on one domain's test windows.
    public struct Score: Codable, Equatable {
        @Nullable public var perplexity: Double?
        @Nullable public var accuracy: Double?
        init(_ e: LoadedModel.Evaluation) { perplexity = e.perplexity.finite; accuracy = e.accuracy.finite }
    }

    /// One stage of one method: what it trained, what it cost, and its scores after it.
    public struct Stage: Codable {
        public var stage: Int                // 1-based
        public var domain: String
        public var stepsDone: Int
        @Nullable public var bestStep: Int?
        public var earlyStopped: Bool
        public var trainableParams: Int
        public var baseParams: Int
        public var exchangeBytesPerStep: Int
        public var exchangeBytes: Int        // per rank, the whole stage: bytes per step × steps done
        public var nodeMemoryBytes: Int
        public var secondsPerStep: Double
        public var scores: [String: Score]  // every domain trained so far and general text
        public var runDir: String

        enum CodingKeys: String, CodingKey {
            case stage, domain, scores
            case stepsDone = "steps_done", bestStep = "best_step", earlyStopped = "early_stopped"
            case trainableParams = "trainable_params", baseParams = "base_params"
            case exchangeBytesPerStep = "exchange_bytes_per_step", exchangeBytes = "exchange_bytes"
            case nodeMemoryBytes = "node_memory_bytes", secondsPerStep = "seconds_per_step", runDir = "run_dir"
        }

        init(summary s: RunSummary, stage: Int, domain: String, runDir: String, scores: [String: Score]) {
            self.stage = stage; self.domain = domain; self.runDir = runDir; self.scores = scores
            stepsDone = s.stepsDone; bestStep = s.bestStep; earlyStopped = s.earlyStopped
            trainableParams = s.trainableParams; baseParams = s.baseParams
            exchangeBytesPerStep = s.exchangeBytesPerStep; exchangeBytes = s.exchangeBytesPerStep * s.stepsDone
            nodeMemoryBytes = s.nodeMemoryBytes
            secondsPerStep = Double(s.tokens) / max(s.tokensPerSecond, 1e-9) / Double(max(s.stepsDone, 1))
        }
    }

    /// One method over all stages, with what it forgot and what it cost in total.
    public struct MethodResult: Codable {
        public var method: ContinualCompare.Method
        public var label: String
        public var stages: [Stage]
        /// Per earlier domain: perplexity after the last stage minus right after the domain's own stage.
        public var forgetting: [String: Double?]
        @Nullable public var forgettingMean: Double?
        /// General text: perplexity after the last stage minus the base's.
        @Nullable public var generalRise: Double?
        public var exchangeBytes: Int        // per rank, all stages
        public var peakNodeMemoryBytes: Int
        /// Weights to keep to serve every domain after the last stage, fp32.
        public var keptBytes: Int

        enum CodingKeys: String, CodingKey {
            case method, label, stages, forgetting
            case forgettingMean = "forgetting_mean", generalRise = "general_rise", exchangeBytes = "exchange_bytes"
            case peakNodeMemoryBytes = "peak_node_memory_bytes", keptBytes = "kept_bytes"
        }

        init(method: ContinualCompare.Method, stages: [Stage], general: String, base: [String: Score]) {
            self.method = method; label = method.label; self.stages = stages
            let last = stages.last!
            var forgetting: [String: Double?] = [:]
            for s in stages.dropLast() {
                let own = s.scores[s.domain]?.perplexity, now = last.scores[s.domain]?.perplexity
                forgetting[s.domain] = own.flatMap { o in now.map { $0 - o } }?.finite
            }
            self.forgetting = forgetting
            let values = forgetting.values.compactMap { $0 }
            forgettingMean = values.count == forgetting.count && !values.isEmpty ? values.reduce(0, +) / Double(values.count) : nil
            generalRise = last.scores[general]?.perplexity.flatMap { g in base[general]?.perplexity.map { g - $0 } }?.finite
            exchangeBytes = stages.map(\.exchangeBytes).reduce(0, +)
            peakNodeMemoryBytes = stages.map(\.nodeMemoryBytes).max() ?? 0
            // What serves every domain: (a) and (d) one model of their own; (b) the base and one
            // adapter; (c) the base and one adapter per domain.
            let base = last.baseParams, adapter = last.trainableParams
            switch method {
            case .full, .merged: keptBytes = 4 * base
            case .lora: keptBytes = 4 * (base + adapter)
            case .switched: keptBytes = 4 * (base + stages.map(\.trainableParams).reduce(0, +))
            }
        }
    }
}

/// DIR/report.md, DIR/report.json and DIR/forgetting.svg of `compare --continual`.
public enum ContinualReport {
    public static func write(_ r: ContinualResults, to dir: String) throws {
        try Files.createDirectory(dir)
        try Files.writeAtomically(try JSONCoding.encode(r), to: dir + "/report.json")
        try Files.writeAtomically(Data(chart(r).utf8), to: dir + "/forgetting.svg")
        try Files.writeAtomically(Data(markdown(r).utf8), to: dir + "/report.md")
    }

    /// Renders report.md and the chart again from a report.json.
    public static func rerender(_ dir: String) throws {
        try write(try CompareReport.results(ContinualResults.self, in: dir), to: dir)
    }

    /// Perplexity on the first domain after each stage (solid) and on general text (dashed), per method:
    /// the first domain is the one every later stage can erase.
    static func chart(_ r: ContinualResults) -> String {
        let first = r.stages[0]
        var series: [SVGChart.Series] = []
        for m in r.methods {
            let onFirst = m.stages.compactMap { s in s.scores[first]?.perplexity.map { (Double(s.stage), $0) } }
            let onGeneral = m.stages.compactMap { s in s.scores[r.general]?.perplexity.map { (Double(s.stage), $0) } }
            series.append(.init(name: "\(m.method.rawValue): \(first)", points: onFirst))
            series.append(.init(name: "\(m.method.rawValue): \(r.general)", points: onGeneral, dashed: true))
        }
        return SVGChart.lines(title: "Perplexity after each stage (\(r.stages.joined(separator: " → ")))",
                              xLabel: "stage", yLabel: "test perplexity", series: series, colorOf: { $0 / 2 }, width: 900)
    }

    static func cell(_ s: ContinualResults.Score?) -> String {
        guard let s else { return "–" }
        return "\(CompareReport.f(s.perplexity)) (\(CompareReport.percent(s.accuracy)))"
    }

    static func markdown(_ r: ContinualResults) -> String {
        let domains = r.stages + [r.general]
        var md = "# Continual adaptation: \(r.stages.joined(separator: " → "))\n\n"
        md += "Base `\(r.base)`, \(r.worldSize) rank(s) on \(r.nodes) node(s), \(r.exchange) exchange. "
        md += "Each stage trains on one domain for up to \(r.budget.steps) steps of \(r.budget.batch) × \(r.budget.seqLen) tokens "
        md += "(\(r.budget.tokens) tokens), early stopping on that domain's dev loss (every \(r.earlyStopping.evalEvery) steps, "
        md += "patience \(r.earlyStopping.patience.map(String.init) ?? "none")), and starts from what the stage before left. "
        md += "LoRA: r = \(r.lora.rank), alpha \(CompareReport.f(r.lora.alpha, 0)), \(r.lora.targets.joined(separator: ", ")), lr \(r.lora.lr); "
        md += "full fine-tuning lr \(r.fullLR) (one learning rate per method, no sweep). "
        md += "**One seed**: every figure is one run, without an interval, so the orderings below may be noise.\n\n"
        md += "Each cell: test perplexity (top-1 next-token accuracy) over \(r.testWindows) windows of the domain's test split; "
        md += "– where the domain has not been trained yet.\n\n"
        md += "| method | after stage | " + domains.joined(separator: " | ") + " | steps | bytes exchanged / rank | node memory |\n"
        md += "|" + String(repeating: " --- |", count: domains.count + 5) + "\n"
        md += "| base | – | " + domains.map { cell(r.baseScores[$0]) }.joined(separator: " | ") + " | – | – | – |\n"
        for m in r.methods {
            for s in m.stages {
                md += "| \(m.label) | \(s.stage) (\(s.domain)) | " + domains.map { cell(s.scores[$0]) }.joined(separator: " | ")
                md += " | \(s.stepsDone)\(s.earlyStopped ? " (stopped early)" : "") | \(Units.bytes(Double(s.exchangeBytes))) "
                md += "| \(Units.bytes(Double(s.nodeMemoryBytes))) |\n"
            }
        }
        md += "\n![perplexity after each stage](forgetting.svg)\n\n## Forgetting and cost\n\n"
        let earlier = r.stages.dropLast()
        md += "Forgetting of a domain: its perplexity after the last stage minus right after its own stage. "
        md += "General: perplexity after the last stage minus the base's. Weights kept: what serves every domain afterwards, fp32.\n\n"
        md += "| method | " + earlier.map { "forgetting \($0)" }.joined(separator: " | ") + (earlier.isEmpty ? "" : " | ")
        md += "mean forgetting | general Δ ppl | bytes exchanged / rank, all stages | peak node memory | weights kept |\n"
        md += "|" + String(repeating: " --- |", count: earlier.count + 6) + "\n"
        for m in r.methods {
            md += "| \(m.label) | " + earlier.map { CompareReport.signed(m.forgetting[$0] ?? nil) }.joined(separator: " | ")
            md += (earlier.isEmpty ? "" : " | ") + "\(CompareReport.signed(m.forgettingMean)) | \(CompareReport.signed(m.generalRise)) "
            md += "| \(Units.bytes(Double(m.exchangeBytes))) | \(Units.bytes(Double(m.peakNodeMemoryBytes))) | \(Units.bytes(Double(m.keptBytes))) |\n"
        }
        md += "\n" + verdicts(r).map { "- \($0)" }.joined(separator: "\n") + "\n"
        md += "\n(c) evaluates each domain with that domain's own adapter, frozen after its stage, so its earlier-domain "
        md += "perplexities cannot move; it serves general text with the base alone (no adapter), so its general figure is the base's. "
        md += "(a) and (d) hand their weights to the next stage as a model directory, (b) its adapter as a PEFT directory "
        md += "(under runs/METHOD/STAGE-DOMAIN/); each stage starts a fresh optimizer and learning-rate schedule.\n"
        return md
    }

    /// Which method forgot least and most, and what the cheapest cost against the most expensive, in words.
    static func verdicts(_ r: ContinualResults) -> [String] {
        guard r.stages.count > 1 else { return ["One stage: nothing earlier to forget."] }
        let ranked = r.methods.filter { $0.forgettingMean != nil }.sorted { $0.forgettingMean! < $1.forgettingMean! }
        var out: [String] = []
        if let least = ranked.first, let most = ranked.last {
            out.append(String(format: "Earlier domains: %@ forgot least (mean %+.2f perplexity), %@ most (%+.2f).",
                              least.label, least.forgettingMean!, most.label, most.forgettingMean!))
        }
        let byBytes = r.methods.sorted { $0.exchangeBytes < $1.exchangeBytes }
        if let cheap = byBytes.first, let dear = byBytes.last, dear.exchangeBytes > 0 {
            out.append(String(format: "Bytes exchanged over all stages: %@ %@ against %@ %@ (%.1f %%).",
                              cheap.label, Units.bytes(Double(cheap.exchangeBytes)), dear.label,
                              Units.bytes(Double(dear.exchangeBytes)), 100 * Double(cheap.exchangeBytes) / Double(dear.exchangeBytes)))
        }
        return out
    }
}
