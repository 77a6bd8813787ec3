import Foundation

/// `lora-dist compare --continual D1,D2,...`: adaptation in stages, one domain after another,
/// by four methods, each stage starting from what the previous one left (a model directory or
/// a PEFT adapter exported at its end):
///   (a) full     full fine-tuning continued stage by stage (stage k starts from stage k−1's weights);
///   (b) lora     one LoRA adapter continued stage by stage on the frozen base;
///   (c) switch   a fresh adapter per stage on the frozen base, kept and switched in by domain:
///                each domain is evaluated with its own adapter, general text with the base alone;
///   (d) merge    the adapter folded into the weights after each stage, a fresh one trained on top.
/// After each stage every method is evaluated (perplexity and top-1 next-token accuracy) on the
/// test split of every domain trained so far and of general text. Forgetting of a domain is its
/// perplexity after the last stage minus its perplexity right after its own stage.
public enum ContinualCompare {
    public enum Method: String, CaseIterable, Codable {
        case full, lora, switched = "switch", merged = "merge"

        var label: String {
            switch self {
            case .full: return "(a) full fine-tuning, continued"
            case .lora: return "(b) one LoRA adapter, continued"
            case .switched: return "(c) one adapter per domain, switched"
            case .merged: return "(d) adapter merged after each stage, new one on top"
            }
        }
    }

    /// What one stage of one method starts from.
    struct Start {
        var model: String          // base or a model directory exported by the previous stage
        var adapter: String?       // (b): the previous stage's adapter
    }

    @discardableResult
    public static func run(_ o: CompareOptions, cluster: Cluster, log: (String) -> Void) throws -> ContinualResults {
        let stages = o.continual
        let general = Compare.general
        _ = try Compare.corporaDomains(o, wanted: stages, flag: "--continual: ")
        let rank = o.ranks[0], targets = o.targetSets[0]
        let lora = try LoRAConfig(rank: rank, alpha: Float(2 * rank), targets: [targets])
        let loraLR = o.loraLRs[0], fullLR = o.fullLRs[0]
        let start = Date()
        let (base, ledger) = try Compare.startOutput(o, cluster: cluster, log: log)

        // The base once: its test tokens (every model here reads text with its tokenizer) and scores.
        let evalDomains = stages + [general]
        let basePlan = try cluster.agree { () throws -> LoadedModel.Plan in
            var m = LoadedModel.Options.base(base)
            m.seqLen = o.seqLen; m.maxBatch = evalBatch(o, cluster); m.seed = o.seed
            return try LoadedModel.Plan(m)
        }
        let tests = try cluster.agree { try Compare.testSets(evalDomains, o: o, tokenizer: basePlan.source.tokenizer).0 }
        let baseScores = try { () throws -> [String: LoadedModel.Evaluation] in
            let model = try LoadedModel(basePlan, cluster: cluster)
            return scores(evalDomains, tests: tests, windows: o.testSequences) { model.evaluation(tokens: $0, windows: $1) }
        }()

        var methods: [ContinualResults.MethodResult] = []
        for method in Method.allCases {
            var from = Start(model: base, adapter: nil)
            var adapters: [String] = []     // (c): every stage's adapter so far
            var done: [ContinualResults.Stage] = []
            // What the next stage starts from once a stage has saved its export in `dir`.
            func chain(from dir: String) {
                switch method {
                case .full, .merged: from = Start(model: dir + "/model", adapter: nil)
                case .lora, .switched:
                    if method == .lora { from = Start(model: base, adapter: dir + "/adapter") }
                    adapters.append(dir + "/adapter")
                }
            }
            for (k, domain) in stages.enumerated() {
                let dir = o.out + "/runs/\(method.rawValue)/\(k + 1)-\(domain)"
                // One seed: a built-in base is the same model at every stage.
                var t = Compare.runOptions(o, domain: domain, lr: method == .full ? fullLR : loraLR, seed: o.seed)
                t.mode = method == .full ? .full : .lora
                t.lora = method == .full ? nil : lora
                t.model = from.model; t.adapter = from.adapter
                t.runDir = dir + "/run"
                t.configYAML = o.runConfig?(t)
                let what = "\(method.label), stage \(k + 1) (\(domain))", key = Compare.runKey(o, t.runDir)
                // A finished stage is reused, its export (saved before its record) the next stage's start.
                if let stage = try ledger.reuse(ContinualResults.Stage.self, key: key, label: what, log: log) {
                    chain(from: dir)
                    done.append(stage)
                    continue
                }
                try ledger.start(&t, label: what, log: log)
                log("\(what): training up to \(o.steps) steps")
                let seen = Array(stages[...k]) + [general]
                var stage: ContinualResults.Stage
                // The trainer lives in this closure, so its weights are freed before the next model loads.
                let (summary, trainedScores) = try { () throws -> (RunSummary, [String: LoadedModel.Evaluation]?) in
                    let trainer = try Trainer(options: t, cluster: cluster)
                    let outcome = try trainer.run()
                    try ledger.check(outcome, label: what)
                    let s = outcome.summary
                    let model = trainer.model
                    switch method {
                    case .full, .merged:
                        // The next stage starts from these weights (adapters folded in), saved as a model directory.
                        try cluster.agree {
                            // with the base's tokenizer, so the next stage reads text as the base does
                            if cluster.isRoot { try HuggingFace.saveMerged(model, tokenizerOf: basePlan.source, to: dir + "/model") }
                        }
                    case .lora, .switched:
                        try cluster.agree { if cluster.isRoot { try HuggingFace.savePEFT(model, baseModel: base, to: dir + "/adapter") } }
                    }
                    chain(from: dir)
                    guard method != .switched else { return (s, nil) }
                    return (s, scores(seen, tests: tests, windows: o.testSequences) { trainer.evaluation(tokens: $0, windows: $1) })
                }()
                let evals = try trainedScores ?? switchedScores(adapters: adapters, domains: stages, base: base,
                                                                  baseScores: baseScores, tests: tests, o: o, cluster: cluster)
                stage = ContinualResults.Stage(summary: summary, stage: k + 1, domain: domain, runDir: t.runDir,
                                                scores: evals.mapValues(ContinualResults.Score.init))
                try ledger.save(stage, key: key)
                done.append(stage)
            }
            methods.append(ContinualResults.MethodResult(method: method, stages: done, general: general,
                                                          base: baseScores.mapValues(ContinualResults.Score.init)))
        }
        let report = ContinualResults(
            base: base, stages: stages, general: general, worldSize: cluster.size, nodes: cluster.nodes,
            exchange: o.exchange.rawValue,
            budget: .init(steps: o.steps, batch: o.batch, seqLen: o.seqLen, tokens: o.steps * o.batch * o.seqLen),
            earlyStopping: .init(evalEvery: o.evalEvery, patience: o.patience),
            lora: .init(rank: rank, alpha: Double(2 * rank), targets: lora.targets, lr: loraLR.shortest), fullLR: fullLR.shortest,
            testWindows: o.testSequences, baseScores: baseScores.mapValues(ContinualResults.Score.init),
            methods: methods, quick: o.quick, wallSeconds: Date().timeIntervalSince(start))
        try ledger.finish { try ContinualReport.write(report, to: o.out) }
        return report
    }

    /// Sequences per forward pass when evaluating: the batch shared among the ranks.
    static func evalBatch(_ o: CompareOptions, _ cluster: Cluster) -> Int { (o.batch + cluster.size - 1) / cluster.size }

    /// Loss and accuracy on each of `domains` (in this order on every rank: the evaluations are collective).
    static func scores(_ domains: [String], tests: [String: [Int32]], windows: Int,
                       _ evaluate: ([Int32], Int) -> LoadedModel.Evaluation) -> [String: LoadedModel.Evaluation] {
        var out: [String: LoadedModel.Evaluation] = [:]
        for d in domains { out[d] = evaluate(tests[d]!, windows) }
        return out
    }

    /// (c) after a stage: the base loaded once with slots for the adapters, each domain trained so far
    /// evaluated with its own adapter (read back from its export), general text with the base alone
    /// (the scores measured on the base before any stage: no adapter is switched in for it).
    static func switchedScores(adapters dirs: [String], domains: [String], base: String,
                               baseScores: [String: LoadedModel.Evaluation], tests: [String: [Int32]],
                               o: CompareOptions, cluster: Cluster) throws -> [String: LoadedModel.Evaluation] {
        let (plan, set) = try cluster.agree { () throws -> (LoadedModel.Plan, [PEFTAdapter]) in
            let set = try dirs.enumerated().map { try PEFTAdapter(name: domains[$0.offset], dir: $0.element) }
            var m = LoadedModel.Options.base(base)
            m.lora = try AdapterSwitching.layout(set)
            m.seed = o.seed; m.seqLen = o.seqLen; m.maxBatch = evalBatch(o, cluster)
            return (try LoadedModel.Plan(m), set)
        }
        let model = try LoadedModel(plan, cluster: cluster)
        var out: [String: LoadedModel.Evaluation] = [Compare.general: baseScores[Compare.general]!]
        for (adapter, domain) in zip(set, domains) {
            try model.use(adapter)
            out[domain] = model.evaluation(tokens: tests[domain]!, windows: o.testSequences)
        }
        return out
    }
}
