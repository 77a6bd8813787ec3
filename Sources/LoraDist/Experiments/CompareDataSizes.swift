import Foundation

/// `lora-dist compare --data-sizes 5k,50k,500k`: the data-scarcity test. For each size, LoRA (the first
/// of --ranks and --targets) and full fine-tuning train on the first N tokens of the domain's training
/// split, everything else fixed: up to --steps steps (as many passes over the small data as that takes),
/// early stopping on the same dev set, the same test sets. Then in-domain, out-of-domain and forgetting
/// against data size, with 95 % intervals over --seeds.
///
/// The subset is a prefix in file order, the same for every seed: sizes nest (5k ⊂ 50k ⊂ 500k), so
/// only the amount of data changes between sizes, and the seeds vary initialisation, data order and
/// dropout over the same text.
public enum DataSizes {
    /// "5k,50k,500k" → [5000, 50000, 500000], smallest first. A size is a whole number of tokens,
    /// optionally with a k (thousand) or M (million) suffix; anything else is refused naming it.
    public static func parse(_ text: String) throws -> [Int] {
        var sizes: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let item = part.trimmingCharacters(in: .whitespaces)
            guard let n = tokens(item), n > 0 else {
                throw LoraDistError("--data-sizes: '\(item)' is not a token count (give e.g. 5k,50k,500k: whole tokens, k or M suffix)")
            }
            guard !sizes.contains(n) else { throw LoraDistError("--data-sizes: \(item) is given twice") }
            sizes.append(n)
        }
        return sizes.sorted()
    }

    /// One size: digits (a decimal point allowed before k or M) and an optional k/K or M suffix; nil
    /// unless it makes a whole number of tokens.
    static func tokens(_ s: String) -> Int? {
        var digits = Substring(s), scale = 1.0
        if let last = s.last, "kKM".contains(last) {
            digits = digits.dropLast()
            scale = last == "M" ? 1e6 : 1e3
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              digits.filter({ $0 == "." }).count <= (scale > 1 ? 1 : 0),
              let v = Double(digits) else { return nil }
        // 1.1k is 1100.0000000000002 in binary floating point: whole within rounding.
        let n = v * scale, whole = n.rounded()
        guard n.isFinite, n < 1e12, abs(n - whole) <= 1e-9 * max(1, whole) else { return nil }
        return Int(whole)
    }

    /// 5000 → "5k", 1500 → "1.5k", 2000000 → "2M", 300 → "300": how sizes are named in reports and paths.
    public static func label(_ n: Int) -> String {
        func trim(_ v: Double) -> String {
            v == v.rounded() ? String(Int(v)) : String(format: "%g", v)
        }
        if n >= 1_000_000 && n % 10_000 == 0 { return trim(Double(n) / 1e6) + "M" }
        if n >= 1_000 && n % 10 == 0 { return trim(Double(n) / 1e3) + "k" }
        return String(n)
    }

    @discardableResult
    public static func run(_ o: CompareOptions, cluster: Cluster, log: (String) -> Void) throws -> DataSizesResults {
        let general = Compare.general
        let domains = try Compare.corporaDomains(o, wanted: [o.domain])
        let sizes = o.dataSizes
        guard let smallest = sizes.first, let largest = sizes.last else { throw LoraDistError("--data-sizes: no size given") }
        guard smallest > o.seqLen + 1 else {
            throw LoraDistError("--data-sizes: \(label(smallest)) tokens is not more than one sequence of --seq \(o.seqLen) + 1")
        }
        // Every size must fit the domain's training split, checked before anything is written. The
        // built-in bases and a --quick base read bytes; a model directory or GGUF its own tokenizer.
        let trainPath = o.corpora + "/\(o.domain)/train", devPath = o.corpora + "/\(o.domain)/dev"
        let available = try cluster.agree { () throws -> Int in
            let tokenizer = try ModelSource(o.base).tokenizer
            return try TrainingCorpus(data: trainPath, devData: devPath, devPercent: 0, tokenizer: tokenizer,
                                      reading: o.reading, group: cluster.nodeGroup).train.count
        }
        guard largest <= available else {
            throw LoraDistError("--data-sizes: \(label(largest)) is more than the \(available) training tokens of \(o.domain)")
        }

        let start = Date()
        let (base, ledger) = try Compare.startOutput(o, cluster: cluster, log: log)
        let rank = o.ranks[0], targets = o.targetSets[0]
        let short = targets == "all-linear" ? "all" : "attn"
        let what = targets == "all-linear" ? "all linear" : targets.replacingOccurrences(of: "_proj", with: "")
        var candidates = [Compare.Candidate(name: "lora-r\(rank)-\(short)", label: "LoRA r=\(rank) (\(what))", mode: .lora,
                                            lora: try LoRAConfig(rank: rank, alpha: Float(2 * rank), targets: [targets]),
                                            lrs: [o.loraLRs[0]])]
        if o.full {
            candidates.append(Compare.Candidate(name: "full", label: "full fine-tuning", mode: .full, lora: nil, lrs: [o.fullLRs[0]]))
        }

        var baselines: [UInt64: [String: LoadedModel.Evaluation]] = [:]
        var tests: [String: [Int32]]?
        var results: [DataSizesResults.Size] = []
        for size in sizes {
            var rows: [CompareResults.Row] = []
            for c in candidates {
                let lr = c.lrs[0]
                var seedRows: [CompareResults.Row] = []
                for i in 0..<max(o.seeds, 1) {
                    let seed = o.seed &+ UInt64(i)
                    var t = Compare.runOptions(o, domain: o.domain, lr: lr, seed: seed)
                    t.mode = c.mode; t.lora = c.lora; t.model = base; t.trainTokens = size
                    t.runDir = o.out + "/runs/\(label(size))/\(c.name)" + (o.seeds > 1 ? "/seed-\(seed)" : "")
                    t.configYAML = o.runConfig?(t)
                    let what = "\(label(size)) tokens, \(c.label), lr \(lr)\(o.seeds > 1 ? ", seed \(seed)" : "")"
                    let key = Compare.runKey(o, t.runDir)
                    if let row = try ledger.reuseRun(key: key, label: what, seed: seed, baselines: &baselines, log: log) {
                        seedRows.append(row)
                        continue
                    }
                    try ledger.start(&t, label: what, log: log)
                    let trainer = try Trainer(options: t, cluster: cluster)
                    if tests == nil { tests = try Compare.testSets(domains, o: o, tokenizer: trainer.tokenizer).0 }
                    if baselines[seed] == nil {
                        baselines[seed] = Compare.evaluations(trainer, tests: tests!, windows: o.testSequences)
                    }
                    log("\(what): training up to \(o.steps) steps")
                    let outcome = try trainer.run()
                    try ledger.check(outcome, label: what)
                    let evals = Compare.evaluations(trainer, tests: tests!, windows: o.testSequences)
                    let row = Compare.result(c, lr: lr, outcome: outcome, evals: evals, baseline: baselines[seed]!,
                                             domain: o.domain, runDir: t.runDir)
                    try ledger.saveRun(row, seed: seed, baseline: baselines[seed]!, key: key)
                    seedRows.append(row)
                }
                rows.append(o.seeds > 1 ? CompareResults.Row.over(seeds: seedRows, first: o.seed) : seedRows[0])
            }
            results.append(.init(tokens: size, label: label(size), runs: rows))
        }
        let report = DataSizesResults(
            base: base, domain: o.domain, outOfDomain: domains.filter { $0 != o.domain && $0 != general },
            general: general, worldSize: cluster.size, nodes: cluster.nodes, exchange: o.exchange.rawValue,
            budget: .init(steps: o.steps, batch: o.batch, seqLen: o.seqLen, tokens: o.steps * o.batch * o.seqLen),
            earlyStopping: .init(evalEvery: o.evalEvery, patience: o.patience),
            lr: .init(lora: [o.loraLRs[0].shortest], full: o.full ? [o.fullLRs[0].shortest] : []),
            domainTrainTokens: available, selection: DataSizesResults.prefixSelection,
            basePerplexity: (baselines[o.seed] ?? [:]).mapValues(\.perplexity).finiteValues,
            baseAccuracy: (baselines[o.seed] ?? [:]).mapValues(\.accuracy).finiteValues,
            seeds: o.seeds > 1 ? o.seeds : nil, sizes: results, quick: o.quick, wallSeconds: Date().timeIntervalSince(start))
        try ledger.finish { try DataSizesReport.write(report, to: o.out) }
        return report
    }
}
