import Foundation

/// DIR/report.md, DIR/report.json and the charts of a comparison.
public enum CompareReport {
    /// The published comparison the report checks (arXiv:2405.09673, arXiv:2310.08659, as widely summarised):
    /// in-domain score LoRA 92 % vs full 94 %, out-of-domain 85 % vs 73 %, forgetting +1.2 vs +4.5 perplexity.
    static let published = "in-domain LoRA 92 % vs full 94 % (LoRA slightly behind), out-of-domain 85 % vs 73 % (LoRA ahead), forgetting +1.2 vs +4.5 perplexity (LoRA forgets less)"

    /// DIR/report.json of a comparison of any kind, read back (`compare --render-only`).
    static func results<T: Decodable>(_ type: T.Type, in dir: String) throws -> T {
        guard let data = FileManager.default.contents(atPath: dir + "/report.json") else {
            throw LoraDistError("\(dir)/report.json is missing or not JSON")
        }
        return try JSONCoding.decode(type, from: data, source: dir + "/report.json")
    }

    /// Renders report.md and the charts again from a report.json (and the runs' metrics it points at).
    public static func rerender(_ dir: String) throws {
        try write(try CompareReport.results(CompareResults.self, in: dir), to: dir)
    }

    public static func write(_ r: CompareResults, to dir: String) throws {
        try Files.createDirectory(dir)
        let runs = r.runs
        try Files.writeAtomically(try JSONCoding.encode(r), to: dir + "/report.json")
        // Loss curves: training loss solid, dev loss dashed, one colour per run.
        var series: [SVGChart.Series] = []
        for row in runs {
            let (train, dev) = curves(row.perSeed?.first?.runDir ?? row.runDir)   // with seeds: the first seed's curves
            series.append(.init(name: "\(row.label) train", points: smoothed(train)))
            series.append(.init(name: "\(row.label) dev", points: dev, dashed: true))
        }
        try Files.writeAtomically(Data(SVGChart.lines(title: "Loss by step (\(r.domain))", xLabel: "optimizer step",
                                                         yLabel: "cross-entropy (nats/token); train: mean of 10 steps", series: series,
                                                         colorOf: { $0 / 2 }, width: 900).utf8),
                                     to: dir + "/loss_curves.svg")
        let bars = runs.map { ($0.label, Double($0.exchangeBytesPerStep)) }
        try Files.writeAtomically(Data(SVGChart.bars(title: "Gradient bytes exchanged per step and rank", unit: "",
                                                        items: bars).utf8), to: dir + "/exchange_bytes.svg")
        try Files.writeAtomically(Data(qualityVsBytesChart(runs).utf8), to: dir + "/quality_vs_bytes.svg")
        try Files.writeAtomically(Data(markdown(r).utf8), to: dir + "/report.md")
    }

    /// The rows by gradient bytes exchanged per step, fewest first (ties by label): the order of the
    /// quality-against-bytes chart and table.
    static func byBytes(_ runs: [CompareResults.Row]) -> [CompareResults.Row] {
        runs.sorted { ($0.exchangeBytesPerStep, $0.label) < ($1.exchangeBytesPerStep, $1.label) }
    }

    /// In-domain perplexity and forgetting (both in perplexity units) against bytes exchanged per step,
    /// one labelled point per row: what each rank buys for what it costs on the wire.
    static func qualityVsBytesChart(_ runs: [CompareResults.Row]) -> String {
        let rows = byBytes(runs)
        func points(_ value: (CompareResults.Row) -> Double?) -> [SVGChart.LabeledPoint] {
            rows.compactMap { row in value(row).map { .init(label: row.label, x: Double(row.exchangeBytesPerStep), y: $0) } }
        }
        return SVGChart.labeledPoints(title: "Quality against gradient bytes exchanged", xLabel: "bytes exchanged per step and rank",
                                      yLabel: "perplexity", series: [("in-domain perplexity", points(\.inDomainPerplexity)),
                                                                     ("forgetting (Δ ppl general)", points(\.forgetting))])
    }

    /// The table beside quality_vs_bytes.svg: the rows by bytes, with the two figures the chart plots.
    static func qualityVsBytesTable(_ runs: [CompareResults.Row]) -> String {
        var md = "| run | bytes exchanged / step | in-domain ppl | forgetting (Δ ppl general) |\n| --- | --- | --- | --- |\n"
        for row in byBytes(runs) {
            md += "| \(row.label) | \(Units.bytes(Double(row.exchangeBytesPerStep))) | \(figure(row, "in_domain_perplexity")) "
            md += "| \(figure(row, "forgetting")) |\n"
        }
        return md
    }

    /// (step, train loss) and (step, dev loss) from a run's metrics.jsonl.
    static func curves(_ runDir: String) -> ([(Double, Double)], [(Double, Double)]) {
        var train: [(Double, Double)] = [], dev: [(Double, Double)] = []
        let text = (try? String(contentsOfFile: runDir + "/metrics.jsonl", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            guard let o = try? JSONDecoder().decode(MetricsRecord.Losses.self, from: Data(line.utf8)) else { continue }
            if let l = o.loss { train.append((Double(o.step), l)) }
            if let d = o.devLoss { dev.append((Double(o.step), d)) }
        }
        return (train, dev)
    }

    /// Training loss averaged over the last 10 steps: per-step losses of small batches are too noisy to read.
    static func smoothed(_ points: [(Double, Double)], window: Int = 10) -> [(Double, Double)] {
        points.indices.map { i in
            let lo = max(0, i - window + 1)
            return (points[i].0, points[lo...i].map(\.1).reduce(0, +) / Double(i - lo + 1))
        }
    }

    static func f(_ v: Double?, _ digits: Int = 2) -> String {
        guard let d = v, d.isFinite else { return "n/a" }
        return String(format: "%.\(digits)f", d)
    }

    static func markdown(_ r: CompareResults) -> String {
        let runs = r.runs
        let budget = r.budget
        let basePPL = r.basePerplexity
        let domain = r.domain
        var md = "# LoRA vs full fine-tuning on \(domain)\n\n"
        md += "Base `\(r.base)`, \(r.worldSize) rank(s) on \(r.nodes) node(s), \(r.exchange) exchange. "
        md += "Budget per run: up to \(budget.steps) steps of \(budget.batch) × \(budget.seqLen) tokens "
        md += "(\(budget.tokens) tokens), \(r.earlyStopping.sentence); "
        md += "each row is the best learning rate of the grid (LoRA \(lrs(r.lrGrid.lora)), full \(lrs(r.lrGrid.full))) by dev loss.\n\n"
        if let n = r.seeds {
            md += "Every quality figure is a mean over \(n) seeds (initialisation, data order, dropout) ± the half-width of its "
            md += "95 % interval (Student's t, \(n - 1) degrees of freedom); the learning rate is chosen by mean dev loss.\n\n"
        } else {
            md += "**One seed**: every figure is one run, without an interval, so the comparisons under \"Against the published "
            md += "comparison\" are of single runs and are not verdicts: a difference may be noise (`--seeds 3` or more for verdicts).\n\n"
        }
        md += "Base perplexity: in-domain \(f(basePPL[domain] ?? nil)), general \(f(basePPL[r.general] ?? nil))"
        for d in r.outOfDomain { md += ", \(d) \(f(basePPL[d] ?? nil))" }
        md += "."
        if let acc = r.baseAccuracy {
            md += " Base next-token accuracy: in-domain \(percent(acc[domain] ?? nil)), general \(percent(acc[r.general] ?? nil))"
            for d in r.outOfDomain { md += ", \(d) \(percent(acc[d] ?? nil))" }
            md += "."
        }
        md += "\n\n"
        md += "| run | trainable params | lr | steps (best) | in-domain ppl | in-domain acc | out-of-domain ppl | out-of-domain acc | forgetting (Δ ppl general) | general acc | bytes exchanged / step | node memory | s / step |\n"
        md += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for row in runs {
            let trainable = row.trainableParams, total = max(row.totalParams, 1)
            md += "| \(row.label) | \(trainable.formatted()) (\(String(format: "%.2f", 100 * Double(trainable) / Double(total))) %) "
            md += "| \(row.lr) | \(row.stepsDone) (\(row.bestStep.map(String.init) ?? "-")) "
            md += "| \(figure(row, "in_domain_perplexity")) | \(figure(row, "in_domain_accuracy")) | \(figure(row, "out_of_domain_mean")) "
            md += "| \(figure(row, "out_of_domain_accuracy_mean")) | \(figure(row, "forgetting")) | \(figure(row, "general_accuracy")) "
            md += "| \(Units.bytes(Double(row.exchangeBytesPerStep))) "
            md += "| \(Units.bytes(Double(row.nodeMemoryBytes))) | \(f(row.secondsPerStep, 3)) |\n"
        }
        md += "\n![loss curves](loss_curves.svg)\n\n![bytes exchanged per step](exchange_bytes.svg)\n\n"
        md += "## Quality against bytes exchanged\n\n" + qualityVsBytesTable(runs)
        md += "\n![quality against bytes exchanged](quality_vs_bytes.svg)\n\n"
        md += "## Against the published comparison\n\nPublished: \(published).\n\n"
        let verdictLines = r.seeds == nil ? verdicts(runs) : seedVerdicts(runs, seeds: r.seeds!)
        md += (verdictLines + qloraVerdicts(runs, base: basePPL, domain: domain)).map { "- \($0)" }.joined(separator: "\n") + "\n"
        md += "\nPerplexities are exp(mean cross-entropy) over up to the configured number of test windows of each domain's test split "
        md += "(documents never seen in training or early stopping); accuracy (acc) is top-1 next-token accuracy on the same windows. "
        md += "Out-of-domain is the mean over the other specialised domains; "
        md += "forgetting is the rise of perplexity on held-out general text over the base's. Bytes are per rank and step, "
        md += "from the collective's cost model (docs/metrics.md).\n"
        return md
    }

    static func lrs(_ grid: [Double]) -> String {
        grid.map { "\($0)" }.joined(separator: ", ")
    }

    /// A row's quality figure by its report.json key: the value, with ± the interval's half-width over seeds.
    static func figure(_ row: CompareResults.Row, _ key: String) -> String {
        let isAccuracy = key.contains("accuracy"), isChange = key == "forgetting"
        let value = CompareResults.Row.qualityFigures.first { $0.key == key }.flatMap { row[keyPath: $0.value] }
        var text = isAccuracy ? percent(value) : isChange ? signed(value) : f(value)
        if let h = row.intervals?[key]?.halfWidth {
            text = isAccuracy ? String(format: "%.1f ± %.1f %%", 100 * value!, 100 * h) : text + String(format: " ± %.2f", h)
        }
        return text
    }

    /// With several seeds: each comparison of the best LoRA with full fine-tuning decided by the 95 % interval
    /// of the per-seed difference (seed i of LoRA against seed i of full: the same data order), not by the means.
    static func seedVerdicts(_ runs: [CompareResults.Row], seeds: Int) -> [String] {
        guard let full = runs.first(where: { $0.mode == "full" }), let fullSeeds = full.perSeed else {
            return ["No full fine-tuning run: nothing to compare LoRA against."]
        }
        guard let lora = runs.filter({ $0.mode == "lora" }).min(by: { ($0.bestDevLoss ?? .infinity) < ($1.bestDevLoss ?? .infinity) }),
              let loraSeeds = lora.perSeed else { return ["No LoRA run."] }
        // What the published comparison found, per figure (nil: it says nothing).
        let figures: [(key: String, name: String, lowerIsBetter: Bool, published: CompareStats.Verdict?)] = [
            ("in_domain_perplexity", "In-domain perplexity", true, .fullBetter),
            ("in_domain_accuracy", "In-domain accuracy", false, .fullBetter),
            ("out_of_domain_mean", "Out-of-domain perplexity", true, .loraBetter),
            ("out_of_domain_accuracy_mean", "Out-of-domain accuracy", false, .loraBetter),
            ("forgetting", "Forgetting (Δ ppl general)", true, .loraBetter),
        ]
        var out: [String] = []
        for fig in figures {
            let path = CompareResults.Row.qualityFigures.first { $0.key == fig.key }!.value
            let diffs = zip(loraSeeds, fullSeeds).compactMap { l, f in l[keyPath: path].flatMap { a in f[keyPath: path].map { a - $0 } } }
            guard diffs.count == seeds, let d = CompareStats.interval(diffs),
                  let verdict = CompareStats.verdict(loraMinusFull: d, lowerIsBetter: fig.lowerIsBetter) else {
                out.append("\(fig.name): not every seed has a finite figure; no verdict.")
                continue
            }
            let scale = fig.key.contains("accuracy") ? 100.0 : 1.0, unit = fig.key.contains("accuracy") ? " points" : ""
            var line = "\(fig.name): \(lora.label) \(figure(lora, fig.key)) vs full \(figure(full, fig.key)); "
            line += String(format: "LoRA − full %+.2f%@, 95 %% interval [%+.2f, %+.2f] over %ld seeds: ",
                           scale * d.mean, unit, scale * d.low!, scale * d.high!, seeds)
            line += "**\(verdict.rawValue)**"
            if let p = fig.published {
                line += verdict == p ? " (as published)" : verdict == .noDifference ? " (published: \(p.rawValue); inconclusive here)"
                    : " (published: \(p.rawValue); disagrees)"
            }
            out.append(line + ".")
        }
        return out
    }

    /// A fraction as a percentage with one decimal; n/a when absent (reports from before accuracy was measured).
    static func percent(_ v: Double?) -> String {
        guard let d = v, d.isFinite else { return "n/a" }
        return String(format: "%.1f %%", 100 * d)
    }

    static func signed(_ v: Double?) -> String {
        guard let d = v, d.isFinite else { return "n/a" }
        return String(format: "%+.2f", d)
    }

    /// Which way each comparison of one seed's runs came out, in words. Lower perplexity is better.
    /// Single runs have no interval, so each quality line says it is not a verdict.
    static func verdicts(_ runs: [CompareResults.Row]) -> [String] {
        guard let full = runs.first(where: { $0.mode == "full" }) else {
            return ["No full fine-tuning run: nothing to compare LoRA against."]
        }
        let loras = runs.filter { $0.mode == "lora" }
        guard let lora = loras.min(by: { ($0.bestDevLoss ?? .infinity) < ($1.bestDevLoss ?? .infinity) }) else {
            return ["No LoRA run."]
        }
        let name = lora.label
        func v(_ x: Double?) -> Double { x ?? .nan }
        var out: [String] = []
        let li = v(lora.inDomainPerplexity), fi = v(full.inDomainPerplexity)
        let single = "One seed, not a verdict: "
        out.append(single + (li >= fi
            ? String(format: "In-domain: the best LoRA (%@) reaches perplexity %.2f against full fine-tuning's %.2f: LoRA behind, as published.", name, li, fi)
            : String(format: "In-domain: the best LoRA (%@) reaches perplexity %.2f against full fine-tuning's %.2f: LoRA ahead, which disagrees with the published result (LoRA slightly behind).", name, li, fi)))
        let lo = v(lora.outOfDomainMean), fo = v(full.outOfDomainMean)
        out.append(single + (lo <= fo
            ? String(format: "Out-of-domain: LoRA %.2f vs full %.2f: LoRA better, as published.", lo, fo)
            : String(format: "Out-of-domain: LoRA %.2f vs full %.2f: full fine-tuning better, which disagrees with the published result (LoRA ahead).", lo, fo)))
        let lf = v(lora.forgetting), ff = v(full.forgetting)
        func moved(_ d: Double) -> String { d >= 0 ? String(format: "rose by %.2f", d) : String(format: "fell by %.2f", -d) }
        let change = "General perplexity \(moved(lf)) under LoRA and \(moved(ff)) under full fine-tuning"
        if lf <= ff {
            out.append(single + "Forgetting: \(change): LoRA forgets less, as published.")
        } else if lf <= 0 {
            out.append(single + "Forgetting: \(change): neither forgot, and full fine-tuning improved general text more, which differs from the published result (LoRA forgets less).")
        } else {
            out.append(single + "Forgetting: \(change): LoRA forgets more, which disagrees with the published result.")
        }
        let lb = Double(lora.exchangeBytesPerStep), fb = Double(full.exchangeBytesPerStep)
        if fb > 0 {
            out.append(String(format: "Cost: LoRA exchanged %@ per step against %@ (%.2f %%), and trained %@ of %@ parameters.",
                              Units.bytes(lb), Units.bytes(fb), 100 * lb / fb,
                              lora.trainableParams.formatted(), full.trainableParams.formatted()))
        }
        return out
    }

    /// QLoRA against the LoRA run with the same rank and targets: what the 4-bit base costs in
    /// quality (before and after training) and what it saves in memory.
    static func qloraVerdicts(_ runs: [CompareResults.Row], base: [String: Double?], domain: String) -> [String] {
        guard let q = runs.first(where: { $0.mode == "qlora" }) else { return [] }
        let twin = runs.first { $0.mode == "lora" && $0.rank == q.rank && $0.targetModules == q.targetModules }
        func v(_ x: Double?) -> Double { x ?? .nan }
        var out: [String] = []
        if let nf4 = q.nf4BasePerplexity, let general = nf4["general"] ?? nil, let inDomain = nf4[domain] ?? nil {
            out.append(String(format: "QLoRA: quantizing the base to NF4 alone, before training, moved perplexity from %.2f to %.2f in domain and from %.2f to %.2f on general text.",
                              v(base[domain] ?? nil), inDomain, v(base["general"] ?? nil), general))
        }
        guard let l = twin else { return out }
        let qm = Double(q.nodeMemoryBytes), lm = Double(l.nodeMemoryBytes)
        out.append(String(format: "QLoRA vs %@: in-domain %.2f vs %.2f, out-of-domain %.2f vs %.2f, forgetting %+.2f vs %+.2f; node memory %@ vs %@, %.3f vs %.3f s / step.",
                          l.label, v(q.inDomainPerplexity), v(l.inDomainPerplexity),
                          v(q.outOfDomainMean), v(l.outOfDomainMean), v(q.forgetting), v(l.forgetting),
                          Units.bytes(qm), Units.bytes(lm), q.secondsPerStep, l.secondsPerStep))
        return out
    }
}
