import ArgumentParser
import Foundation
import LoraDist

struct CompareCommand: Configurable {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "LoRA (several ranks and target sets) against full fine-tuning on one base and domain: quality, forgetting and cost, as DIR/report.md with charts and DIR/report.json.",
        discussion: "Every option can also come from a YAML recipe (--config FILE, each option under its flag's name); flags on the command line override it. DIR/config.yaml holds compare's configuration, and each run's directory under DIR/runs its own train config.yaml and TensorBoard event file (tensorboard --logdir DIR/runs shows the runs side by side).")

    @Option(help: ArgumentHelp("A YAML recipe: compare options under their flag names (ranks: 8,32); flags on the command line override it (recipes/ has examples).", valueName: "file"),
            completion: .file(extensions: ["yaml", "yml"]))
    var config: String?
    @Flag(name: .customLong("print-config"), help: "Print the effective configuration (every option, defaults included) as a recipe, and exit.")
    var printConfig = false

    @Option(help: "The base: a built-in config, a Hugging Face model directory, or a GGUF file.") var base: String = "small"
    @Option(help: "The domain to adapt to (a folder of the corpora: technical, legal, medical).") var domain: String = "technical"
    @Option(help: "Where tools/fetch-corpora.sh put the corpora (default: $LORA_DIST_DATA/corpora or ~/.cache/lora-dist/data/corpora).")
    var corpora: String?
    @Option(help: "Output directory.") var out: String = "runs/compare"
    @Option(help: "LoRA ranks, comma-separated.") var ranks: String?
    @Option(help: "LoRA target sets, separated by ';' (each a comma-separated list or all-linear).") var targets: String?
    @Flag(inversion: .prefixedNo, help: "Full fine-tuning as a candidate (--no-full: skip it).") var full = true
    @Flag(inversion: .prefixedNo, help: "QLoRA as a candidate: NF4 base, first rank, all linear layers (--no-qlora: skip it).") var qlora = true
    @Flag(inversion: .prefixedNo, help: "Full fine-tuning with compressed gradients as candidates: bf16, and PowerSGD at each --powersgd-ranks (--no-compressed: skip them; with --no-full they are skipped too). Under hierarchical exchange on one node bf16 has nothing to compress (nothing crosses a wire): use --exchange flat there.")
    var compressed = true
    @Option(name: .customLong("powersgd-ranks"), help: "PowerSGD ranks of the compressed candidates, comma-separated.") var powerSGDRanks: String?
    @Option(help: "Optimizer steps per run (the token budget, with --batch and --seq).") var steps: Int?
    @Option(help: "Sequences per step.") var batch: Int?
    @Option(name: .customLong("seq"), help: "Tokens per sequence.") var seqLen: Int?
    @Option(name: .customLong("lr-lora"), help: "LoRA learning rates to sweep, comma-separated.") var lrLoRA: String?
    @Option(name: .customLong("lr-full"), help: "Full fine-tuning learning rates to sweep, comma-separated.") var lrFull: String?
    @Option(name: .customLong("eval-every"), help: "Evaluate dev loss every this many steps.") var evalEvery: Int?
    @Option(help: "Early stopping patience, in evaluations.") var patience: Int?
    @Flag(name: .customLong("early-stopping"), inversion: .prefixedNo, help: "Early stopping on dev loss, each run ending on its best weights (--no-early-stopping: every run trains all --steps and is measured on its final weights; dev loss is still evaluated every --eval-every and the best step reported; not with --patience or --continual).")
    var earlyStopping = true
    @Option(name: .customLong("eval-seqs"), help: "Dev windows per evaluation (early stopping).") var evalSequences: Int?
    @Option(name: .customLong("test-seqs"), help: "Test windows per domain for the final perplexities.") var testSequences: Int?
    @Option(help: "Repeat every run with this many seeds (1234, 1235, ...: initialisation, data order, dropout); quality figures are means with 95 % intervals and the verdicts follow the intervals. Default 3 (--continual: 1); with 1 the report has no intervals and no verdicts.")
    var seeds: Int?
    @Option(help: "Gradient exchange strategy.") var exchange: ExchangeStrategy = .hierarchical
    @Option(name: .customLong("text-field"), help: "The field of each JSON Lines record (.jsonl files in the corpora) that holds its text.")
    var textField: String = "text"
    @Flag(name: .customLong("replace-invalid-utf8"), inversion: .prefixedNo, help: "Read bytes that are not UTF-8 (and lone surrogate escapes in JSON Lines) as U+FFFD instead of refusing the file.")
    var replaceInvalidUTF8 = false
    @Flag(inversion: .prefixedNo, help: "A tiny base pretrained on the spot and small budgets: a few minutes.") var quick = false
    @Flag(name: .customLong("render-only"), inversion: .prefixedNo, help: "Only render report.md and the charts again from --out's report.json.")
    var renderOnly = false
    @Option(help: ArgumentHelp("Continual adaptation instead: train on these domains one after another (comma-separated, e.g. technical,legal,medical) with full fine-tuning continued, one LoRA adapter continued, one adapter per domain switched, and an adapter merged after each stage; report perplexity and accuracy on every domain so far and general text after each stage, forgetting and cost. Uses the first of --ranks, --targets, --lr-lora and --lr-full; --full and --qlora do not apply.", valueName: "domains"))
    var continual: String?
    @Option(name: .customLong("data-sizes"), help: ArgumentHelp("Data scarcity instead: for each size (training tokens, comma-separated, k/M suffixes: 5k,50k,500k) LoRA (the first of --ranks, --targets, --lr-lora) and full fine-tuning (the first of --lr-full) train on the first N tokens of the domain's training split, the same for every seed, up to --steps steps with early stopping on dev loss; report in-domain, out-of-domain and forgetting against size, and quality_vs_data_size.svg. QLoRA and compressed candidates are not run.", valueName: "sizes"))
    var dataSizes: String?
    @Flag(help: "Continue the compare --out holds, stopped by a signal or a crash: give its options again. Finished runs are reused, the interrupted run resumes from its latest checkpoint (or starts again when it saved none); the report is the one an uninterrupted compare writes.")
    var resume = false

    static let perInvocationKeys: Set<String> = ["render-only", "resume"]

    func run() throws {
        if printConfig {
            if Invocation.speaks {
                print(Invocation.current.yaml(header: [
                    "The effective configuration of `lora-dist compare` (\(BuildInfo.banner)): every option",
                    "under its flag's name, defaults included; null: not set (the option's own default applies).",
                    "Use it as a recipe: lora-dist compare --config FILE (flags on the command line override it)."]), terminator: "")
            }
            return
        }
        if renderOnly {
            guard !resume else { throw LoraDistError("--resume with --render-only: give one of them (--render-only trains nothing)") }
            if continual != nil { try ContinualReport.rerender(out) }
            else if dataSizes != nil { try DataSizesReport.rerender(out) }
            else { try CompareReport.rerender(out) }
            print("rendered \(out)/report.md")
            return
        }
        var o = CompareOptions()
        if let continual {
            let stages = continual.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            if let bad = stages.first(where: { $0.isEmpty || $0.contains("/") }) {
                throw LoraDistError("--continual: '\(bad)' is not a domain name (give comma-separated domains, e.g. technical,legal,medical)")
            }
            if let twice = stages.first(where: { d in stages.filter { $0 == d }.count > 1 }) {
                throw LoraDistError("--continual: domain '\(twice)' is given twice")
            }
            if stages.contains("general") { throw LoraDistError("--continual: general is the held-out text forgetting is measured on, not a stage") }
            o.continual = stages
        }
        if let dataSizes {
            guard continual == nil else { throw LoraDistError("--data-sizes with --continual is not implemented (give one of them)") }
            o.dataSizes = try DataSizes.parse(dataSizes)
        }
        if quick { o.makeQuick() }
        o.base = quick ? "tiny" : base
        o.domain = domain
        o.corpora = corpora ?? CacheFolders.corpora
        o.out = out
        func list<T>(_ s: String?, _ parse: (String) -> T?, _ what: String) throws -> [T]? {
            guard let s else { return nil }
            let items = s.split(separator: ",").map { parse($0.trimmingCharacters(in: .whitespaces)) }
            guard !items.isEmpty, items.allSatisfy({ $0 != nil }) else { throw LoraDistError("--\(what): cannot read '\(s)'") }
            return items.map { $0! }
        }
        if let r = try list(ranks, { Int($0) }, "ranks") { o.ranks = r }
        if let t = targets { o.targetSets = t.split(separator: ";").map(String.init) }
        if let l = try list(lrLoRA, { Float($0) }, "lr-lora") { o.loraLRs = l }
        if let l = try list(lrFull, { Float($0) }, "lr-full") { o.fullLRs = l }
        o.full = full
        o.qlora = qlora
        o.compressed = compressed
        if let r = try list(powerSGDRanks, { Int($0) }, "powersgd-ranks") {
            guard r.allSatisfy({ CompressionOptions.rankRange.contains($0) }) else {
                throw LoraDistError("--powersgd-ranks must be in \(CompressionOptions.rankRange.lowerBound)...\(CompressionOptions.rankRange.upperBound), got \(powerSGDRanks!)")
            }
            o.powerSGDRanks = r
        }
        if let steps { o.steps = steps }
        if let batch { o.batch = batch }
        if let seqLen { o.seqLen = seqLen }
        if let evalEvery { o.evalEvery = evalEvery }
        if let patience { o.patience = patience }
        if !earlyStopping {
            guard patience == nil else { throw LoraDistError("--no-early-stopping with --patience: give one of them (--patience sets early stopping's patience)") }
            guard continual == nil else { throw LoraDistError("--no-early-stopping with --continual is not implemented (each stage stops early)") }
            o.patience = nil
        }
        if let evalSequences { o.evalSequences = evalSequences }
        if let testSequences { o.testSequences = testSequences }
        if let seeds {
            guard (1...100).contains(seeds) else { throw LoraDistError("--seeds must be in 1...100, got \(seeds)") }
            guard o.continual.isEmpty || seeds == 1 else { throw LoraDistError("--seeds with --continual is not implemented (one seed per stage)") }
            o.seeds = seeds
        }
        o.exchange = exchange
        o.resume = resume
        o.reading = CorpusReading(textField: textField, replaceInvalidUTF8: replaceInvalidUTF8)
        o.configYAML = Invocation.current.yaml(header: [
            "The configuration of the comparison in \(out) (\(BuildInfo.banner)): every option of",
            "`lora-dist compare` under its flag's name; null: not set. Each run under \(out)/runs has its own config.yaml.",
            "Repeat it: lora-dist compare --config \(out)/config.yaml --out ANOTHER_DIR"], omitting: Self.perInvocationKeys)
        o.runConfig = { Train.configYAML(for: $0) }
        guard FileManager.default.fileExists(atPath: o.corpora) else {
            throw LoraDistError("corpora not found at \(o.corpora): run tools/fetch-corpora.sh, or pass --corpora DIR")
        }
        // SIGTERM and SIGINT stop the run in progress at the end of its step, with a checkpoint
        // (as in train); the compare then ends on every rank, to be continued with --resume.
        Preemption.install()
        let cluster = Cluster()
        let log: (String) -> Void = { if cluster.isRoot { FileHandle.standardError.write(Data("compare: \($0)\n".utf8)) } }
        // A compare stopped by a signal exits with Preemption.exitCode on every rank, saying how to continue it.
        func stoppable<T>(_ run: () throws -> T) throws -> T? {
            var stopped: CompareLedger.Stopped?
            let result = try cluster.agree { () throws -> T? in
                do { return try run() } catch let s as CompareLedger.Stopped { stopped = s; return nil }
            }
            if let stopped {
                log(stopped.message)
                Foundation.exit(Preemption.exitCode)
            }
            return result
        }
        // --continual and --data-sizes take one setting per method; their reports print alike.
        func single(_ flag: String, _ run: () throws -> Double) throws {
            if o.ranks.count > 1 || o.targetSets.count > 1 || o.loraLRs.count > 1 || o.fullLRs.count > 1 {
                log("\(flag) uses one setting per method: LoRA r=\(o.ranks[0]) on \(o.targetSets[0]), lr \(o.loraLRs[0]); full fine-tuning lr \(o.fullLRs[0]) (the first of each list)")
            }
            guard let wall = try stoppable(run) else { return }
            guard cluster.isRoot else { return }
            print((try? String(contentsOfFile: o.out + "/report.md", encoding: .utf8)) ?? "")
            print("report: \(o.out)/report.md, \(o.out)/report.json (\(String(format: "%.0f", wall)) s)")
        }
        if !o.continual.isEmpty { return try single("--continual") { try ContinualCompare.run(o, cluster: cluster, log: log).wallSeconds } }
        if !o.dataSizes.isEmpty { return try single("--data-sizes") { try DataSizes.run(o, cluster: cluster, log: log).wallSeconds } }
        guard let report = try stoppable({ try Compare.run(o, cluster: cluster, log: log) }) else { return }
        guard cluster.isRoot else { return }
        print((try? String(contentsOfFile: o.out + "/report.md", encoding: .utf8)) ?? "")
        print("report: \(o.out)/report.md, \(o.out)/report.json (\(String(format: "%.0f", report.wallSeconds)) s)")
    }
}
