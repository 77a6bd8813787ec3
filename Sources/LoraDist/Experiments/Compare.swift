import Foundation

/// `lora-dist compare`: LoRA at several ranks and target sets against full
/// fine-tuning, on one base, one domain, the same token budget, with early
/// stopping on dev perplexity and a small learning-rate sweep per mode; then
/// in-domain, out-of-domain and forgetting perplexities of each mode's best run,
/// beside what each cost (bytes exchanged, memory, seconds per step).
public struct CompareOptions {
    public var base = "small"
    public var domain = "technical"
    public var corpora = ""
    public var out = "runs/compare"
    public var ranks = [8, 32]
    public var targetSets = [TrainOptions.attentionTargets, TrainOptions.defaultTargets]
    public var full = true
    public var qlora = true                // QLoRA (NF4 base) at the first rank on all linear layers
    /// Full fine-tuning with compressed gradients beside it (CompareCompression.swift): bf16, and
    /// PowerSGD at each of these ranks.
    public var compressed = true
    public var powerSGDRanks = [4, 16]
    public var steps = 300, batch = 8, seqLen = 128
    public var loraLRs: [Float] = [1e-3, 3e-3]
    public var fullLRs: [Float] = [3e-4, 1e-3]
    public var evalEvery = 25
    /// Early stopping's patience, in evaluations; nil (`--no-early-stopping`): every run trains all
    /// --steps and is measured on its final weights, dev loss still evaluated every --eval-every.
    public var patience: Int? = 3
    public var evalSequences = 32, testSequences = 64
    public var exchange = ExchangeStrategy.hierarchical
    public var reading = CorpusReading()   // how the corpora's files are read (JSON Lines field, invalid UTF-8)
    public var seed: UInt64 = 1234
    public var quick = false
    /// `--seeds N`: every run repeated with seeds seed, seed+1, ..., seed+N−1 (initialisation, data
    /// order, dropout); quality figures are means with 95 % intervals, verdicts drawn from them.
    /// Three by default: a verdict needs an interval, and one run per setting cannot tell a
    /// difference from noise. (`--continual` runs one seed per stage.)
    public var seeds = 3
    /// `--continual`: the domains to adapt to one after another (ContinualCompare); empty: a plain comparison.
    public var continual: [String] = []
    /// `--data-sizes`: training tokens per size, smallest first (DataSizes); empty: a plain comparison.
    public var dataSizes: [Int] = []
    /// `--resume`: continue the compare --out holds (CompareLedger): finished runs reused, the
    /// interrupted one resumed from its checkpoint.
    public var resume = false
    /// compare's configuration as YAML (`compare --print-config`), written by rank 0 as
    /// DIR/config.yaml so that `compare --config DIR/config.yaml` repeats the comparison.
    public var configYAML: String? = nil
    /// The YAML of one training run (`train --print-config` of the flags that make the same
    /// TrainOptions), written as that run's RUN/config.yaml; nil: none.
    public var runConfig: ((TrainOptions) -> String?)? = nil
    public init() {}

    /// --quick: a tiny base pretrained on the spot and small budgets: minutes, not hours.
    public mutating func makeQuick() {
        quick = true
        base = "tiny"
        ranks = [4, 16]
        steps = 120; batch = 4; seqLen = 64
        loraLRs = [1e-2]; fullLRs = [3e-3]
        evalEvery = 20; patience = 2
        evalSequences = 16; testSequences = 24
        if !continual.isEmpty { steps = 40 }   // 4 methods × the stages: keep the whole run short
    }
}

public enum Compare {
    static let general = "general"

    struct Candidate {
        let name: String           // e.g. "lora-r8-attn"
        let label: String          // e.g. "LoRA r=8 (q,k,v,o)"
        let mode: TrainMode
        let lora: LoRAConfig?
        let lrs: [Float]
        var compression = CompressionOptions()
    }

    /// The domains of --corpora (the folders with a train split), sorted, once `wanted` and the
    /// general domain are checked to be there. `flag` opens the missing-domain line ("--continual: ").
    static func corporaDomains(_ o: CompareOptions, wanted: [String], flag: String = "") throws -> [String] {
        let domains = try FileManager.default.contentsOfDirectory(atPath: o.corpora).filter {
            FileManager.default.fileExists(atPath: o.corpora + "/" + $0 + "/train")
        }.sorted()
        for d in wanted where !domains.contains(d) {
            throw LoraDistError("\(flag)domain '\(d)' not found in \(o.corpora) (have: \(domains.joined(separator: ", "))); run tools/fetch-corpora.sh")
        }
        guard domains.contains(general) else { throw LoraDistError("\(o.corpora) has no general domain to measure forgetting on") }
        return domains
    }

    /// Runs everything on every rank of `cluster`; rank 0 writes DIR/report.{md,json} and the charts.
    @discardableResult
    public static func run(_ o: CompareOptions, cluster: Cluster, log: (String) -> Void) throws -> CompareResults {
        let domains = try corporaDomains(o, wanted: [o.domain])
        let start = Date()
        let (base, ledger) = try startOutput(o, cluster: cluster, log: log)
        var candidates: [Candidate] = []
        for r in o.ranks {
            for t in o.targetSets {
                let lora = try LoRAConfig(rank: r, alpha: Float(2 * r), targets: [t])
                let short = t == "all-linear" ? "all" : "attn"
                let what = t == "all-linear" ? "all linear" : t.replacingOccurrences(of: "_proj", with: "")
                candidates.append(Candidate(name: "lora-r\(r)-\(short)", label: "LoRA r=\(r) (\(what))", mode: .lora,
                                            lora: lora, lrs: o.loraLRs))
            }
        }
        if o.qlora, let r = o.ranks.first {
            candidates.append(Candidate(name: "qlora-r\(r)-all", label: "QLoRA r=\(r) (all linear, NF4 base)", mode: .qlora,
                                        lora: try LoRAConfig(rank: r, alpha: Float(2 * r), targets: ["all-linear"]),
                                        lrs: o.loraLRs))
        }
        if o.full { candidates.append(Candidate(name: "full", label: "full fine-tuning", mode: .full, lora: nil, lrs: o.fullLRs)) }
        if o.full && o.compressed { candidates += compressedCandidates(o) }

        var baselines: [UInt64: [String: LoadedModel.Evaluation]] = [:]  // per seed: a built-in base depends on it
        var tests: [String: [Int32]]?  // every run reads text with the base's tokenizer
        var rows: [CompareResults.Row] = []
        var sweep: [CompareResults.SweepPoint] = []
        for c in candidates {
            var best: CompareResults.Row?
            for lr in c.lrs {
                var seedRows: [CompareResults.Row] = []
                for i in 0..<max(o.seeds, 1) {
                    let seed = o.seed &+ UInt64(i)
                    var t = runOptions(o, domain: o.domain, lr: lr, seed: seed)
                    t.mode = c.mode; t.lora = c.lora; t.model = base
                    t.compression = c.compression
                    t.runDir = o.out + "/runs/\(c.name)/lr-\(lr)" + (o.seeds > 1 ? "/seed-\(seed)" : "")
                    t.configYAML = o.runConfig?(t)
                    let what = "\(c.label), lr \(lr)\(o.seeds > 1 ? ", seed \(seed)" : "")"
                    let key = runKey(o, t.runDir)
                    if let row = try ledger.reuseRun(key: key, label: what, seed: seed, baselines: &baselines, log: log) {
                        sweep.append(CompareResults.SweepPoint(run: c.name, lr: lr.shortest, seed: o.seeds > 1 ? seed : nil,
                                                               bestDevLoss: row.bestDevLoss))
                        seedRows.append(row)
                        continue
                    }
                    try ledger.start(&t, label: what, log: log)
                    let trainer = try Trainer(options: t, cluster: cluster)
                    if tests == nil {
                        let (sets, replaced) = try testSets(domains, o: o, tokenizer: trainer.tokenizer)
                        tests = sets
                        if o.reading.replaceInvalidUTF8 {
                            let c = trainer.corpus
                            log("replaced \(c.replacedBytes + replaced.bytes) invalid UTF-8 byte(s) and "
                                + "\(c.replacedSurrogates + replaced.surrogates) lone surrogate escape(s) with U+FFFD in the \(o.domain) and test data")
                        }
                        if !trainer.corpus.skipped.isEmpty {
                            log("not read (neither .txt nor .jsonl): " + trainer.corpus.skipped.joined(separator: ", "))
                        }
                    }
                    if baselines[seed] == nil {
                        // Before training a model is its base (LoRA's B = 0): the reference for forgetting.
                        baselines[seed] = evaluations(trainer, tests: tests!, windows: o.testSequences)
                    }
                    // A QLoRA run starts from the quantized base: what quantization alone costs.
                    let quantized = c.mode.nf4Base ? evaluations(trainer, tests: tests!, windows: o.testSequences) : nil
                    log("\(what): training up to \(o.steps) steps")
                    let outcome = try trainer.run(), s = outcome.summary
                    try ledger.check(outcome, label: what)
                    let evals = evaluations(trainer, tests: tests!, windows: o.testSequences)
                    var row = result(c, lr: lr, outcome: outcome, evals: evals, baseline: baselines[seed]!, domain: o.domain, runDir: t.runDir)
                    row.nf4BasePerplexity = quantized?.mapValues(\.perplexity).finiteValues
                    row.gradCompression = c.compression.method.rawValue
                    sweep.append(CompareResults.SweepPoint(run: c.name, lr: lr.shortest, seed: o.seeds > 1 ? seed : nil,
                                                           bestDevLoss: s.devLoss.finite))
                    try ledger.saveRun(row, seed: seed, baseline: baselines[seed]!, key: key)
                    seedRows.append(row)
                }
                // Over seeds: the means, each seed's figures and the intervals; the lr by mean dev loss.
                let row = o.seeds > 1 ? CompareResults.Row.over(seeds: seedRows, first: o.seed) : seedRows[0]
                if best == nil || (row.bestDevLoss ?? .nan) < (best!.bestDevLoss ?? .nan) { best = row }
            }
            rows.append(best!)
        }
        let report = CompareResults(
            base: base, domain: o.domain, outOfDomain: domains.filter { $0 != o.domain && $0 != general },
            general: general, worldSize: cluster.size, nodes: cluster.nodes, exchange: o.exchange.rawValue,
            budget: .init(steps: o.steps, batch: o.batch, seqLen: o.seqLen, tokens: o.steps * o.batch * o.seqLen),
            earlyStopping: .init(evalEvery: o.evalEvery, patience: o.patience),
            lrGrid: .init(lora: o.loraLRs.map(\.shortest), full: o.fullLRs.map(\.shortest)),
            basePerplexity: (baselines[o.seed] ?? [:]).mapValues(\.perplexity).finiteValues,
            baseAccuracy: (baselines[o.seed] ?? [:]).mapValues(\.accuracy).finiteValues, seeds: o.seeds > 1 ? o.seeds : nil, runs: rows, sweep: sweep, quick: o.quick,
            wallSeconds: Date().timeIntervalSince(start))
        try ledger.finish { try CompareReport.write(report, to: o.out) }
        return report
    }

    /// What every run of a comparison on `domain` shares: its splits, the budget, evaluation, early
    /// stopping, exchange and reading of `o`; the caller adds the model, method and run directory.
    static func runOptions(_ o: CompareOptions, domain: String, lr: Float, seed: UInt64) -> TrainOptions {
        var t = TrainOptions()
        t.data = o.corpora + "/\(domain)/train"; t.devData = o.corpora + "/\(domain)/dev"
        t.steps = o.steps; t.batch = o.batch; t.seqLen = o.seqLen; t.lr = lr
        t.warmup = max(1, o.steps / 20)
        t.evalEvery = o.evalEvery; t.patience = o.patience; t.evalSequences = o.evalSequences
        t.exchange = o.exchange; t.seed = seed; t.keepLast = 1; t.quiet = true
        t.textField = o.reading.textField; t.replaceInvalidUTF8 = o.reading.replaceInvalidUTF8
        return t
    }

    /// A run's key in the ledger: its directory under OUT/runs.
    static func runKey(_ o: CompareOptions, _ runDir: String) -> String { String(runDir.dropFirst((o.out + "/runs/").count)) }

    /// Full training of the base from random initialisation on general text, saved as a Hugging Face directory.
    /// What every comparison does first: --out opened (CompareLedger: refused, resumed or begun),
    /// the recipe into OUT/config.yaml, and under --quick a tiny base pretrained into OUT/base
    /// (reused when a resumed compare finished it). Returns the base the runs start from.
    static func startOutput(_ o: CompareOptions, cluster: Cluster, log: (String) -> Void) throws -> (base: String, ledger: CompareLedger) {
        let ledger = try CompareLedger(o, cluster: cluster, log: log)
        if let yaml = o.configYAML {
            try cluster.agree {
                guard cluster.isRoot else { return }
                try Files.createDirectory(o.out)
                try Files.writeAtomically(Data(yaml.utf8), to: o.out + "/config.yaml")
            }
        }
        guard o.quick else { return (o.base, ledger) }
        let what = "the tiny base"
        if try ledger.reuse([String: String].self, key: "pretrain", label: what, log: log) == nil {
            log("pretraining a tiny base on \(general) text (full training from random initialisation)")
            try pretrain(o, into: o.out + "/base", ledger: ledger, cluster: cluster, log: log)
            try ledger.save(["base": o.out + "/base"], key: "pretrain")
        }
        return (o.out + "/base", ledger)
    }

    static func pretrain(_ o: CompareOptions, into dir: String, ledger: CompareLedger, cluster: Cluster, log: (String) -> Void) throws {
        var t = TrainOptions()
        t.mode = .full; t.model = "tiny"
        t.data = o.corpora + "/\(general)/train"; t.devData = o.corpora + "/\(general)/dev"
        t.steps = 300; t.batch = 8; t.seqLen = o.seqLen; t.lr = 1e-2; t.warmup = 10
        t.evalEvery = 100; t.evalSequences = o.evalSequences; t.quiet = true; t.seed = o.seed; t.keepLast = 1
        t.exchange = o.exchange
        t.textField = o.reading.textField; t.replaceInvalidUTF8 = o.reading.replaceInvalidUTF8
        t.runDir = o.out + "/runs/pretrain"
        t.configYAML = o.runConfig?(t)
        try ledger.start(&t, label: "the tiny base", log: log)
        let trainer = try Trainer(options: t, cluster: cluster)
        try ledger.check(try trainer.run(), label: "the tiny base")
        try cluster.agree { if cluster.isRoot { try HuggingFace.saveMerged(trainer.model, tokenizerOf: trainer.loaded.source, to: dir) } }
    }

    /// Every domain's test tokens, and what --replace-invalid-utf8 replaced in them.
    static func testSets(_ domains: [String], o: CompareOptions,
                         tokenizer: Tokenizer) throws -> ([String: [Int32]], replaced: (bytes: Int, surrogates: Int)) {
        var out: [String: [Int32]] = [:]
        var bytes = 0, surrogates = 0
        for d in domains {
            let c = try Corpus(path: o.corpora + "/\(d)/test", tokenizer: tokenizer, devPercent: 0, reading: o.reading)
            out[d] = c.train + c.dev
            bytes += c.replacedBytes
            surrogates += c.replacedSurrogates
        }
        return (out, (bytes, surrogates))
    }

    /// Loss and top-1 accuracy on every domain's test windows (in domain order: the collectives match on every rank).
    static func evaluations(_ t: Trainer, tests: [String: [Int32]], windows: Int) -> [String: LoadedModel.Evaluation] {
        var out: [String: LoadedModel.Evaluation] = [:]
        for (d, tokens) in tests.sorted(by: { $0.key < $1.key }) { out[d] = t.evaluation(tokens: tokens, windows: windows) }
        return out
    }

    static func mean(_ values: some Collection<Double>) -> Double {
        values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count)
    }

    /// One run's row. Its dev loss is that of the weights it is measured on: the best under early
    /// stopping, the final ones without; its best step is the lowest dev loss's either way.
    static func result(_ c: Candidate, lr: Float, outcome: Trainer.Outcome, evals: [String: LoadedModel.Evaluation],
                       baseline baseEvals: [String: LoadedModel.Evaluation], domain: String, runDir: String) -> CompareResults.Row {
        let s = outcome.summary
        let ppl = evals.mapValues(\.perplexity), baseline = baseEvals.mapValues(\.perplexity)
        let acc = evals.mapValues(\.accuracy)
        let isOOD: (String) -> Bool = { $0 != domain && $0 != general }
        let ood = ppl.filter { isOOD($0.key) }, oodAcc = acc.filter { isOOD($0.key) }
        let oodMean = mean(ood.values)
        let baseOODMean = mean(baseline.filter { isOOD($0.key) }.values)
        let steps = s.stepsDone
        let trainSeconds = Double(s.tokens) / max(s.tokensPerSecond, 1e-9)
        return CompareResults.Row(
            run: c.name, label: c.label, mode: c.mode.rawValue, lr: lr.shortest,
            rank: c.lora?.rank, targetModules: c.lora?.targets,
            trainableParams: s.trainableParams, totalParams: s.baseParams,
            exchangeBytesPerStep: s.exchangeBytesPerStep, fullFTExchangeBytesPerStep: s.fullFTExchangeBytesPerStep,
            nodeMemoryBytes: s.nodeMemoryBytes,
            secondsPerStep: trainSeconds / Double(max(steps, 1)), tokensPerSecond: s.tokensPerSecond,
            stepsDone: steps, bestStep: outcome.bestStep, earlyStopped: s.earlyStopped,
            bestDevLoss: s.devLoss.finite, devPerplexity: Foundation.exp(s.devLoss).finite,
            inDomainPerplexity: ppl[domain]?.finite, baseInDomainPerplexity: baseline[domain]?.finite,
            outOfDomainPerplexity: ood.finiteValues, outOfDomainMean: oodMean.finite, baseOutOfDomainMean: baseOODMean.finite,
            generalPerplexity: ppl[general]?.finite,
            inDomainAccuracy: acc[domain]?.finite, outOfDomainAccuracy: oodAcc.finiteValues,
            outOfDomainAccuracyMean: mean(oodAcc.values).finite, generalAccuracy: acc[general]?.finite,
            forgetting: ((ppl[general] ?? .nan) - (baseline[general] ?? .nan)).finite,
            runDir: runDir)
    }
}
