import Foundation

/// report.json of `compare --data-sizes`: per size, the LoRA and full fine-tuning rows (as in a
/// plain comparison, means over seeds with intervals when --seeds > 1).
public struct DataSizesResults: Codable {
    public var base: String
    public var domain: String
    public var outOfDomain: [String]
    public var general: String
    public var worldSize: Int
    public var nodes: Int
    public var exchange: String
    public var budget: CompareResults.Budget
    public var earlyStopping: CompareResults.EarlyStopping
    public var lr: CompareResults.LRGrid
    /// Tokens in the domain's training split (the largest size allowed).
    public var domainTrainTokens: Int
    /// How the N tokens of a size are chosen (prefixSelection).
    public var selection: String
    public var basePerplexity: [String: Double?]
    public var baseAccuracy: [String: Double?]
    public var seeds: Int?
    public var sizes: [Size]
    public var quick: Bool
    public var wallSeconds: Double

    static let prefixSelection = "the first N tokens of the training split in file order, the same for every seed (sizes nest)"

    public struct Size: Codable {
        public var tokens: Int
        public var label: String
        public var runs: [CompareResults.Row]
    }

    enum CodingKeys: String, CodingKey {
        case base, domain, general, nodes, exchange, budget, lr, selection, seeds, sizes, quick
        case outOfDomain = "out_of_domain", worldSize = "world_size", earlyStopping = "early_stopping"
        case domainTrainTokens = "domain_train_tokens", basePerplexity = "base_perplexity", baseAccuracy = "base_accuracy"
        case wallSeconds = "wall_s"
    }
}

/// DIR/report.md, DIR/report.json and DIR/quality_vs_data_size.svg of `compare --data-sizes`.
public enum DataSizesReport {
    /// The claim this tests (issue 22, as widely summarised from arXiv:2405.09673 and its follow-ups).
    static let published = "with under 10k examples full fine-tuning overfits and loses 20-30 % out of domain, while LoRA matches it in domain and gains 5-15 % out of domain; LoRA's advantage grows as data gets scarcer"

    public static func rerender(_ dir: String) throws {
        try write(try CompareReport.results(DataSizesResults.self, in: dir), to: dir)
    }

    public static func write(_ r: DataSizesResults, to dir: String) throws {
        try Files.createDirectory(dir)
        try Files.writeAtomically(try JSONCoding.encode(r), to: dir + "/report.json")
        try Files.writeAtomically(Data(chart(r).utf8), to: dir + "/quality_vs_data_size.svg")
        try Files.writeAtomically(Data(markdown(r).utf8), to: dir + "/report.md")
    }

    /// The figures plotted and compared, by their report.json keys.
    static let figures: [(key: String, name: String, lowerIsBetter: Bool)] = [
        ("in_domain_perplexity", "In-domain perplexity", true),
        ("out_of_domain_mean", "Out-of-domain perplexity", true),
        ("forgetting", "Forgetting (Δ ppl general)", true),
        ("in_domain_accuracy", "In-domain accuracy", false),
        ("out_of_domain_accuracy_mean", "Out-of-domain accuracy", false),
    ]

    static func value(_ row: CompareResults.Row, _ key: String) -> Double? {
        CompareResults.Row.qualityFigures.first { $0.key == key }.flatMap { row[keyPath: $0.value] }
    }

    /// Three panels against data size (log x when the sizes span more than 10×): in-domain perplexity,
    /// out-of-domain perplexity and forgetting, LoRA and full as two series, 95 % intervals as whiskers.
    static func chart(_ r: DataSizesResults) -> String {
        let modes = Array(Set(r.sizes.flatMap { $0.runs.map(\.label) })).sorted { a, b in
            // LoRA first, full second, as the rows are.
            (r.sizes.first?.runs.firstIndex { $0.label == a } ?? 0) < (r.sizes.first?.runs.firstIndex { $0.label == b } ?? 0)
        }
        let panels = figures.prefix(3).map { fig in
            let series = modes.map { mode -> (name: String, points: [SVGChart.LabeledPoint]) in
                let points = r.sizes.compactMap { size -> SVGChart.LabeledPoint? in
                    guard let row = size.runs.first(where: { $0.label == mode }), let y = value(row, fig.key) else { return nil }
                    let i = row.intervals?[fig.key]
                    return .init(label: String(format: fig.key == "forgetting" ? "%+.2f" : "%.2f", y), x: Double(size.tokens), y: y,
                                 low: i?.low, high: i?.high)
                }
                return (mode, points)
            }
            return SVGChart.labeledPoints(title: "\(fig.name) against training tokens (\(r.domain))",
                                          xLabel: "training tokens of \(r.domain)", yLabel: fig.name.lowercased(), series: series,
                                          height: 360, xTick: { "\(DataSizes.label(Int($0))) tokens" })
        }
        return SVGChart.stacked(panels, width: 900, panelHeight: 360)
    }

    static func markdown(_ r: DataSizesResults) -> String {
        let f = CompareReport.f, b = r.budget
        var md = "# LoRA vs full fine-tuning against data size on \(r.domain)\n\n"
        md += "Base `\(r.base)`, \(r.worldSize) rank(s) on \(r.nodes) node(s), \(r.exchange) exchange. "
        md += "Each size trains on \(r.selection), of the \(r.domainTrainTokens.formatted()) training tokens of \(r.domain); "
        md += "everything else is fixed: up to \(b.steps) steps of \(b.batch) × \(b.seqLen) tokens (windows drawn at random "
        md += "from the N tokens, so a small size is passed over many times), the same dev set for "
        md += r.earlyStopping.sentence + ", "
        md += "the same test sets; learning rate LoRA \(CompareReport.lrs(r.lr.lora)), full \(CompareReport.lrs(r.lr.full)) (not swept per size).\n\n"
        if let n = r.seeds {
            md += "Every quality figure is a mean over \(n) seeds (initialisation, data order, dropout; the same N tokens for every seed) "
            md += "± the half-width of its 95 % interval (Student's t, \(n - 1) degrees of freedom); verdicts come from the interval of "
            md += "the per-seed differences LoRA − full.\n\n"
        } else {
            md += "**One seed**: every figure is one run, without an interval; the comparisons below are of single runs and are not "
            md += "verdicts (`--seeds 3` or more for verdicts).\n\n"
        }
        let basePPL = r.basePerplexity
        md += "Base perplexity: in-domain \(f(basePPL[r.domain] ?? nil, 2)), general \(f(basePPL[r.general] ?? nil, 2))"
        for d in r.outOfDomain { md += ", \(d) \(f(basePPL[d] ?? nil, 2))" }
        md += "; base next-token accuracy: in-domain \(CompareReport.percent(r.baseAccuracy[r.domain] ?? nil)), "
        md += "general \(CompareReport.percent(r.baseAccuracy[r.general] ?? nil))"
        for d in r.outOfDomain { md += ", \(d) \(CompareReport.percent(r.baseAccuracy[d] ?? nil))" }
        md += ".\n\n![quality against data size](quality_vs_data_size.svg)\n\n"
        for size in r.sizes {
            md += "## \(size.label) training tokens\n\n"
            md += "| run | steps run (best) | early stopping ended it | passes over the data | in-domain ppl | in-domain acc | out-of-domain ppl | out-of-domain acc | forgetting (Δ ppl general) | general acc |\n"
            md += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
            for row in size.runs {
                let runs = row.perSeed ?? [row]
                let steps = runs.map { "\($0.stepsDone) (\($0.bestStep.map(String.init) ?? "-"))" }.joined(separator: ", ")
                let stopped = runs.filter(\.earlyStopped).count
                let stoppedText = !r.earlyStopping.enabled ? "off"
                    : runs.count == 1 ? (stopped == 1 ? "yes" : "no") : "\(stopped) of \(runs.count) seeds"
                let passes = runs.map { Double($0.stepsDone * b.batch * b.seqLen) / Double(size.tokens) }
                let passesText = passes.map { String(format: $0 < 10 ? "%.1f" : "%.0f", $0) }.joined(separator: ", ")
                md += "| \(row.label) | \(steps) | \(stoppedText) | \(passesText) "
                for key in ["in_domain_perplexity", "in_domain_accuracy", "out_of_domain_mean", "out_of_domain_accuracy_mean", "forgetting", "general_accuracy"] {
                    md += "| \(CompareReport.figure(row, key)) "
                }
                md += "|\n"
            }
            md += "\n" + verdicts(size, seeds: r.seeds).map { "- \($0)" }.joined(separator: "\n") + "\n\n"
        }
        md += "## Against the published claim\n\nPublished: \(published).\n\n"
        md += scarcity(r).map { "- \($0)" }.joined(separator: "\n") + "\n"
        md += "\nPerplexities are exp(mean cross-entropy) over up to the configured number of test windows of each domain's test split "
        md += "(documents never seen in training or early stopping); accuracy (acc) is top-1 next-token accuracy on the same windows. "
        md += "Out-of-domain is the mean over the other specialised domains; forgetting is the rise of perplexity on held-out "
        md += "general text over the base's. \"Passes over the data\" is steps run × batch × sequence length / N (each seed's run).\n"
        return md
    }

    /// LoRA against full at one size: from the intervals with several seeds, from the means with one.
    static func verdicts(_ size: DataSizesResults.Size, seeds: Int?) -> [String] {
        guard let n = seeds else { return CompareReport.verdicts(size.runs).filter { !$0.hasPrefix("Cost:") } }
        return CompareReport.seedVerdicts(size.runs, seeds: n)
    }

    /// Per seed, LoRA − full of figure `key` at one size (nil when a seed lacks the figure or a row is missing).
    static func differences(_ size: DataSizesResults.Size, _ key: String) -> [Double]? {
        guard let lora = size.runs.first(where: { $0.mode == "lora" }), let full = size.runs.first(where: { $0.mode == "full" }) else { return nil }
        let l = lora.perSeed ?? [lora], fl = full.perSeed ?? [full]
        let d = zip(l, fl).compactMap { a, b in value(a, key).flatMap { x in value(b, key).map { x - $0 } } }
        return d.count == l.count ? d : nil
    }

    /// Does LoRA's advantage grow as data gets scarcer? Per figure, the change of LoRA − full from the
    /// largest size to the smallest, per seed (seed i at both sizes), and its 95 % interval: on LoRA's
    /// good side of zero, LoRA's advantage grew as data shrank (as published); on the other, it shrank.
    static func scarcity(_ r: DataSizesResults) -> [String] {
        guard r.sizes.count >= 2, let small = r.sizes.first, let large = r.sizes.last else {
            return ["One size only: nothing to compare across sizes."]
        }
        var out: [String] = []
        for fig in figures {
            guard let ds = differences(small, fig.key), let dl = differences(large, fig.key) else {
                out.append("\(fig.name): no full fine-tuning row or a figure is missing; no verdict.")
                continue
            }
            let scale = fig.key.contains("accuracy") ? 100.0 : 1.0, unit = fig.key.contains("accuracy") ? " points" : ""
            let change = zip(ds, dl).map { $0 - $1 }
            let mean = change.reduce(0, +) / Double(change.count)
            var line = String(format: "%@: LoRA − full %+.2f%@ at %@ tokens, %+.2f%@ at %@; change %+.2f%@",
                              fig.name, scale * ds.reduce(0, +) / Double(ds.count), unit, small.label,
                              scale * dl.reduce(0, +) / Double(dl.count), unit, large.label, scale * mean, unit)
            if let i = CompareStats.interval(change), let lo = i.low, let hi = i.high {
                line += String(format: ", 95 %% interval [%+.2f, %+.2f] over %ld seeds: ", scale * lo, scale * hi, change.count)
                let toward = fig.lowerIsBetter ? hi < 0 : lo > 0, away = fig.lowerIsBetter ? lo > 0 : hi < 0
                line += toward ? "**LoRA's advantage grows as data gets scarcer** (as published)"
                    : away ? "**LoRA's advantage shrinks as data gets scarcer** (disagrees with the published claim)"
                    : "**no change told apart from noise** (inconclusive)"
            } else {
                line += " (one seed: direction only; "
                line += (fig.lowerIsBetter ? mean < 0 : mean > 0) ? "LoRA's advantage grows as data gets scarcer)"
                    : "LoRA's advantage does not grow as data gets scarcer)"
            }
            out.append(line + ".")
        }
        // The published magnitudes: out-of-domain change against the base, per method, at the smallest size.
        for row in small.runs {
            guard let ood = row.outOfDomainMean, let base = row.baseOutOfDomainMean, base > 0 else { continue }
            out.append(String(format: "At %@ tokens, %@ moved out-of-domain perplexity from the base's %.2f to %.2f (%+.1f %%).",
                              small.label, row.label, base, ood, 100 * (ood / base - 1)))
        }
        return out
    }
}
