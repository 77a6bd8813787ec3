import ArgumentParser
import Foundation
import LoraDist

extension TrainMode: ExpressibleByArgument {}
extension ExchangeStrategy: ExpressibleByArgument {}
extension GradCompression: ExpressibleByArgument {}

/// The library's defaults are the flags' defaults.
private let defaults = TrainOptions()
private let loraDefaults = TrainOptions.defaultLoRA

struct Train: Configurable {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a model (the default job when no subcommand is given).",
        discussion: "Every option can also come from a YAML recipe (--config FILE: each option under its flag's name, e.g. lr: 0.001); flags on the command line override the recipe. --print-config prints the effective configuration as such a recipe; every run directory gets its own config.yaml.")

    @Option(help: ArgumentHelp("A YAML recipe: train options under their flag names (lr: 0.001, rslora: true); flags on the command line override it (recipes/ has examples).", valueName: "file"),
            completion: .file(extensions: ["yaml", "yml"]))
    var config: String?
    @Flag(name: .customLong("print-config"), help: "Print the effective configuration (every option, defaults included) as a recipe, and exit.")
    var printConfig = false

    @Option(help: "lora: train low-rank adapters on a frozen base; qlora: the same on a base stored as 4-bit NF4; full: train every weight.")
    var mode: TrainMode = defaults.mode
    @Option(help: "Built-in config (tiny, small, bench), a config.json, or a Hugging Face model directory (config.json + model.safetensors).")
    var model: String = defaults.model
    @Option(name: .customLong("adapter-set"), help: ArgumentHelp("Train several adapters in one job on one base held once per node: NAME=DATA,NAME=DATA,... (no --data). The ranks split into groups, one per adapter (a rank trains several in turn when there are fewer ranks); every other flag is shared, unless --adapter-option sets it for one adapter. Each adapter's run goes to RUN/adapters/NAME, with its PEFT adapter in RUN/adapters/NAME/adapter.", valueName: "name=data,..."))
    var adapterSet: String?
    @Option(name: .customLong("adapter-option"), help: ArgumentHelp("With --adapter-set: one flag for one adapter, over the shared value, e.g. legal:rank=16 or medical:lr=5e-4 (repeatable; rslora takes true or false). Flags an adapter may set: \(AdapterSet.Override.flags.joined(separator: ", ")).", valueName: "name:flag=value"))
    var adapterOptions: [String] = []
    @Option(help: "A text file, a JSON Lines file (.jsonl: one JSON object per line, the text under --text-field), or a folder of .txt and .jsonl files. Default: the corpus tools/fetch-corpus.sh installs.")
    var data: String?
    @Option(help: "Optimizer steps.") var steps: Int = defaults.steps
    @Option(help: "Sequences per optimizer step (the global batch).") var batch: Int = defaults.batch
    @Option(name: .customLong("micro-batch"), help: "Sequences per forward/backward pass; gradients accumulate over batch / micro-batch passes. Default: the whole batch.")
    var microBatch: Int?
    @Flag(inversion: .prefixedNo, help: "Activation checkpointing per layer: keep each layer's input and attention output and recompute the rest of its forward in the backward (less memory, more compute, the same gradients).")
    var recompute = defaults.recompute
    @Option(name: .customLong("seq"), help: "Tokens per sequence.") var seqLen: Int = defaults.seqLen
    @Option(help: "Peak learning rate.") var lr: Float = defaults.lr
    @Option(name: .customLong("min-lr-ratio"), help: "Cosine decay ends at lr × this.") var minLRRatio: Float = defaults.minLRRatio
    @Option(help: "Linear warmup steps.") var warmup: Int = defaults.warmup
    @Option(name: .customLong("weight-decay"), help: "AdamW decoupled weight decay (not applied to norms).") var weightDecay: Float = defaults.optimizer.weightDecay
    @Option(name: .customLong("clip"), help: "Clip the global gradient norm to this (0: off).") var clipNorm: Float = defaults.optimizer.clipNorm
    @Option(help: "LoRA rank r.") var rank: Int = loraDefaults.rank
    @Option(help: "LoRA alpha; the adapter is scaled by alpha / r.") var alpha: Float = loraDefaults.alpha
    @Option(name: .customLong("lora-dropout"), help: "Dropout on the adapter's input.") var loraDropout: Float = loraDefaults.dropout
    @Option(help: "LoRA target modules: a comma-separated list of \(LoRAConfig.projections.joined(separator: ",")), or all-linear.")
    var targets: String = TrainOptions.defaultTargets
    @Flag(name: .customLong("rslora"), inversion: .prefixedNo, help: "Scale the adapter by alpha / sqrt(r) (rank-stabilised LoRA).") var rsLoRA = loraDefaults.useRSLoRA
    @Option(name: .customLong("run-dir"), help: "Where metrics.jsonl and summary.json go.") var runDir: String = defaults.runDir
    @Option(help: "Seed for initialisation, sampling and dropout.") var seed: UInt64 = defaults.seed
    @Option(name: .customLong("eval-every"), help: "Evaluate dev loss every this many steps.") var evalEvery: Int = defaults.evalEvery
    @Option(name: .customLong("eval-seqs"), help: "Dev sequences per evaluation.") var evalSequences: Int = defaults.evalSequences
    @Option(name: .customLong("dev-percent"), help: "Share of corpus blocks held out for dev.") var devPercent: Int = defaults.devPercent
    @Option(help: "Gradient exchange: hierarchical (reduce-scatter in the node, allreduce across nodes) or flat (one world allreduce, the DDP baseline).")
    var exchange: ExchangeStrategy = defaults.exchange
    @Option(name: .customLong("bucket-mb"), help: "Gradient bucket size in MiB; each bucket is sent as soon as the backward completes it.")
    var bucketMB: Double = defaults.bucketMB
    @Option(name: .customLong("grad-compression"), help: "How gradients travel: none (fp32), bf16 or fp16 (16-bit words, summed in fp32), or powersgd (low-rank factors with error feedback, from --powersgd-start-step on). Flat exchange compresses the world's exchange; hierarchical what crosses nodes (bf16/fp16) or the whole sum (powersgd).")
    var gradCompression: GradCompression = defaults.compression.method
    @Option(name: .customLong("powersgd-rank"), help: "PowerSGD's rank: each compressed tensor travels as rows × r + cols × r floats.")
    var powerSGDRank: Int = defaults.compression.powerSGDRank
    @Option(name: .customLong("powersgd-start-step"), help: "PowerSGD starts at this step; the steps before exchange plain fp32 gradients.")
    var powerSGDStartStep: Int = defaults.compression.powerSGDStartStep
    @Option(help: "OpenBLAS threads per rank (default: env LORA_DIST_THREADS, else Slurm's SLURM_CPUS_PER_TASK, else the rank's cores shared among the node's ranks).")
    var threads: Int?
    @Option(name: .customLong("export-merged"), help: "At the end, write the trained model (adapters folded in) as a Hugging Face directory here.")
    var exportMerged: String?
    @Option(name: .customLong("save-every"), help: "Save a checkpoint every K steps (the end of the run always saves one).")
    var saveEvery: Int?
    @Option(name: .customLong("keep-last"), help: "Keep the newest N checkpoints.") var keepLast: Int = defaults.keepLast
    @Option(help: "A PEFT adapter directory (adapter_config.json, adapter_model.safetensors) to continue training; its config sets rank, alpha, dropout and targets.")
    var adapter: String?
    @Option(help: "Resume from a checkpoint: latest, best or a step number of --run-dir, or a path: a step directory, a checkpoints folder, a run directory, or a latest/best pointer file.")
    var resume: String?
    @Option(name: .customLong("stop-after"), help: "Rehearse a preemption: after step K save a checkpoint and exit with status 75, as on SIGTERM.")
    var stopAfter: Int?
    @Option(name: .customLong("dev-data"), help: "A dev set of its own (file or folder); otherwise --dev-percent of --data's blocks are held out.")
    var devData: String?
    @Option(name: .customLong("train-tokens"), help: "Train on the first N tokens of --data's training split only (the rest is not read by the sampler; dev is unchanged).")
    var trainTokens: Int?
    @Option(name: .customLong("text-field"), help: "The field of each JSON Lines record that holds its text.")
    var textField: String = defaults.textField
    @Flag(name: .customLong("replace-invalid-utf8"), inversion: .prefixedNo, help: "Read bytes that are not UTF-8 (and lone surrogate escapes in JSON Lines) as U+FFFD instead of refusing the file.")
    var replaceInvalidUTF8 = defaults.replaceInvalidUTF8
    @Option(help: "Early stopping: stop after this many evaluations without a new best dev loss, and end on the best weights (kept as checkpoints/best).")
    var patience: Int?
    @Flag(inversion: .prefixedNo, help: "No progress line.") var quiet = false
    @Option(help: "Model replicas per rank (default: one per thread, each with one BLAS thread, splitting the rank's sequences; 1: one model whose sgemm uses every thread).")
    var replicas: Int?
    @Option(name: .customLong("collective-timeout"), help: "Seconds a collective waits for a rank that stopped responding (stopped, hung, its node unreachable) before the job ends with a line naming it; 0: wait forever. Default: env LORA_DIST_COLLECTIVE_TIMEOUT, else \(Int(CollectiveTimeout.defaultSeconds)).")
    var collectiveTimeout: Double?

    /// Left out of RUN/config.yaml: they describe one invocation, not the run.
    static let perInvocationKeys: Set<String> = ["resume", "stop-after"]

    /// Types and ranges, as the arguments are parsed (a recipe's bad value is reported at its line).
    func validate() throws {
        let o = try options()
        try o.validate()
        if let adapterSet {
            try AdapterSet.check(o)
            if data != nil { throw LoraDistError("--data with --adapter-set: each adapter names its data (NAME=DATA)") }
            if exportMerged != nil {
                throw LoraDistError("--export-merged with --adapter-set: each adapter is exported as PEFT to RUN/adapters/NAME/adapter; fold them with export --format merged")
            }
            let specs = try AdapterSet.Spec.parse(adapterSet)
            _ = try perAdapterOptions(specs, shared: o)
        } else if let first = adapterOptions.first {
            throw LoraDistError("--adapter-option \(first) without --adapter-set")
        }
    }

    /// Each adapter's options: the shared flags, then its --adapter-option flags, parsed by the
    /// same parser as the command line (so a bad value is refused as it would be there), then its
    /// data and run directory.
    func perAdapterOptions(_ specs: [AdapterSet.Spec], shared: TrainOptions) throws -> [TrainOptions] {
        let overrides = try adapterOptions.map { try AdapterSet.Override.parse($0, names: specs.map(\.name)) }
        // The shared flags without the set itself (whose validation would come back here).
        var base: [String] = [], i = 0
        let args = Invocation.current.arguments.first == "train" ? Array(Invocation.current.arguments.dropFirst()) : Invocation.current.arguments
        while i < args.count {
            let a = args[i]
            if a == "--adapter-set" || a == "--adapter-option" { i += 2; continue }
            if !a.hasPrefix("--adapter-set=") && !a.hasPrefix("--adapter-option=") { base.append(a) }
            i += 1
        }
        return try specs.map { spec in
            let mine = overrides.filter { $0.adapter == spec.name }
            var o = shared
            if !mine.isEmpty {
                do { o = try Train.parse(base + mine.flatMap(\.arguments)).options() } catch let e as LoraDistError {
                    throw LoraDistError("adapter '\(spec.name)': \(e.message)")
                } catch {
                    let line = Train.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
                    throw LoraDistError("--adapter-option for '\(spec.name)': \(line)")
                }
                try o.validate()
            }
            var a = AdapterSet.options(o, for: spec)
            a.configYAML = Train.configYAML(for: a)
            return a
        }
    }

    func run() throws {
        if printConfig {
            if Invocation.speaks { print(Invocation.current.yaml(header: Self.printHeader), terminator: "") }
            return
        }
        if let adapterSet { return try runAdapterSet(adapterSet) }
        var o = try options()
        o.data = data ?? CacheFolders.defaultCorpus
        if data == nil, !FileManager.default.fileExists(atPath: o.data) {
            throw LoraDistError("default corpus not found at \(o.data): run tools/fetch-corpus.sh, or pass --data PATH")
        }
        o.configYAML = Invocation.current.yaml(header: Self.runHeader(runDir), omitting: Self.perInvocationKeys)
        // Settled when MPI starts (Cluster()): an invalid value ends every rank there, with one line.
        CollectiveTimeout.requested = collectiveTimeout
        Preemption.install()
        let cluster = Cluster()
        o.threads = try cluster.threads(requested: threads)
        let trainer = try Trainer(options: o, cluster: cluster)
        // A checkpoint that cannot be resumed fails here, before the header is printed.
        if let resume { _ = try cluster.agree { try trainer.resumable(resume) } }
        let m = trainer.model
        if cluster.isRoot {
            FileHandle.standardError.write(Data("""
                lora-dist: \(mode.rawValue) on \(model), \(m.trainableParams.formatted()) of \(m.baseParams.formatted()) parameters trainable \
                (\(String(format: "%.2f", 100 * Double(m.trainableParams) / Double(m.baseParams)))%)
                \(cluster.size) rank(s) on \(cluster.nodes) node(s), \(exchange.rawValue) exchange\(Self.compressionNote(o.compression)), \(trainer.blasThreadsPerReplica) BLAS thread(s) per rank
                corpus \(o.data): \(o.trainTokens.map { "the first \($0.formatted()) of " } ?? "")\(trainer.corpus.train.count.formatted()) train / \(trainer.corpus.dev.count.formatted()) dev tokens \
                (token file \(trainer.corpus.files.map { "\($0.reused ? "reused" : "built"): \($0.path)" }.joined(separator: ", ")))

                """.utf8))
            FileHandle.standardError.write(Data(corpusNotes(trainer.corpus, reading: o.corpusReading).utf8))
        }
        let outcome = try cluster.agree { try trainer.run() }
        let s = outcome.summary
        if outcome.preempted {
            if cluster.isRoot {
                FileHandle.standardError.write(Data("lora-dist: stopped after step \(s.stepsDone), checkpoint \(s.checkpoint); resume with --resume latest\n".utf8))
            }
            Foundation.exit(Preemption.exitCode)
        }
        guard cluster.isRoot else { return }
        if let exportMerged {
            do { try HuggingFace.saveMerged(trainer.model, tokenizerOf: trainer.loaded.source, to: exportMerged) } catch { cluster.abort("\(error)") }
        }
        print(Report.closing(s))
        print("run directory: \(runDir) (config.yaml, metrics.jsonl, TensorBoard events, summary.json)")
    }

    /// `--adapter-set`: K trainers on one shared base (AdapterSet). Each adapter's config.yaml is
    /// the `train` recipe of that adapter alone, so `train --config RUN/adapters/NAME/config.yaml`
    /// repeats it by itself; RUN/config.yaml is the set's.
    func runAdapterSet(_ text: String) throws {
        let shared = try options()
        let specs = try AdapterSet.Spec.parse(text)
        let perAdapter = try perAdapterOptions(specs, shared: shared)
        CollectiveTimeout.requested = collectiveTimeout
        Preemption.install()
        let cluster = Cluster()
        let set = try AdapterSet(specs: specs, options: perAdapter, cluster: cluster)
        if let resume {
            _ = try cluster.agree { try set.trainers.map { try $0.resumable(resume) } }
        }
        if cluster.isRoot {
            try Files.createDirectory(runDir)
            try Files.writeAtomically(Data(Invocation.current.yaml(header: Self.runHeader(runDir), omitting: Self.perInvocationKeys).utf8),
                                      to: runDir + "/config.yaml")
            let m = set.trainers[0].model
            let layout = AdapterSet.groups(ranks: cluster.size, adapters: specs.count)
            FileHandle.standardError.write(Data("""
                lora-dist: adapter set of \(specs.count) (\(specs.map(\.name).joined(separator: ", "))), \(mode.rawValue) on \(model), \
                \(m.trainableParams.formatted()) of \(m.baseParams.formatted()) parameters trainable per adapter, one base per node
                \(cluster.size) rank(s) on \(cluster.nodes) node(s) in \(layout.count) group(s), \(exchange.rawValue) exchange within each group

                """.utf8))
        }
        let outcome = try set.run(runDir: runDir)
        if outcome.preempted {
            if cluster.isRoot {
                FileHandle.standardError.write(Data("lora-dist: stopped; each adapter saved a checkpoint in \(runDir)/adapters/NAME/checkpoints; resume with --resume latest\n".utf8))
            }
            Foundation.exit(Preemption.exitCode)
        }
        guard cluster.isRoot else { return }
        for a in outcome.record.adapters {
            print(String(format: "%@: %ld steps, final loss %.4f, dev loss %.4f, %.0f tokens/s on %ld rank(s); PEFT adapter in %@",
                         a.name, a.stepsDone, a.finalLoss, a.devLoss, a.tokensPerSecond, a.worldSize, "\(runDir)/\(a.runDir)/\(AdapterSet.peftFolder)"))
        }
        print("run directory: \(runDir) (adapter-set.json; adapters/NAME: config.yaml, metrics.jsonl, TensorBoard events, summary.json, checkpoints, adapter)")
    }

    /// The options the flags describe (without --data's default and the thread count, which
    /// need the machine). Reads --adapter's adapter_config.json.
    func options() throws -> TrainOptions {
        var o = TrainOptions()
        o.mode = mode
        o.model = model
        o.data = data ?? ""
        o.steps = steps; o.batch = batch; o.microBatch = microBatch; o.seqLen = seqLen; o.recompute = recompute
        o.lr = lr; o.minLRRatio = minLRRatio; o.warmup = warmup
        o.optimizer.weightDecay = weightDecay; o.optimizer.clipNorm = clipNorm
        if let adapter {
            guard mode.hasAdapters else { throw LoraDistError("--adapter continues a LoRA adapter: use --mode lora or qlora") }
            let path = adapter + "/adapter_config.json"
            guard let json = FileManager.default.contents(atPath: path) else { throw LoraDistError("--adapter: cannot read \(path)") }
            o.lora = try LoRAConfig.fromPEFT(json: json, source: path)
            o.adapter = adapter
        } else if mode.hasAdapters {
            o.lora = try Self.lora(rank: rank, alpha: alpha, dropout: loraDropout, targets: targets, rsLoRA: rsLoRA)
        }
        o.runDir = runDir; o.seed = seed; o.evalEvery = max(evalEvery, 1); o.evalSequences = evalSequences
        o.devPercent = devPercent; o.quiet = quiet
        o.exchange = exchange; o.bucketMB = bucketMB
        o.compression.method = gradCompression
        o.compression.powerSGDRank = powerSGDRank; o.compression.powerSGDStartStep = powerSGDStartStep
        o.saveEvery = saveEvery; o.keepLast = keepLast; o.resume = resume; o.stopAfter = stopAfter
        o.devData = devData; o.patience = patience; o.replicas = replicas; o.trainTokens = trainTokens
        o.textField = textField; o.replaceInvalidUTF8 = replaceInvalidUTF8
        o.collectiveTimeout = collectiveTimeout
        return o
    }

    /// The adapter the LoRA flags describe; an error names the flag at fault.
    static func lora(rank: Int, alpha: Float, dropout: Float, targets: String, rsLoRA: Bool) throws -> LoRAConfig {
        do {
            return try LoRAConfig(rank: rank, alpha: alpha, dropout: dropout, targets: [targets], useRSLoRA: rsLoRA)
        } catch let e as LoraDistError {
            let d = TrainOptions.defaultLoRA, t = [TrainOptions.defaultTargets]
            let alone: [(String, () throws -> LoRAConfig)] = [
                ("--rank", { try LoRAConfig(rank: rank, alpha: d.alpha, dropout: d.dropout, targets: t, useRSLoRA: false) }),
                ("--alpha", { try LoRAConfig(rank: d.rank, alpha: alpha, dropout: d.dropout, targets: t, useRSLoRA: false) }),
                ("--lora-dropout", { try LoRAConfig(rank: d.rank, alpha: d.alpha, dropout: dropout, targets: t, useRSLoRA: false) }),
                ("--targets", { try LoRAConfig(rank: d.rank, alpha: d.alpha, dropout: d.dropout, targets: [targets], useRSLoRA: false) }),
            ]
            for (flag, make) in alone where (try? make()) == nil { throw LoraDistError("\(flag): \(e.message)") }
            throw e
        }
    }

    /// The header's words for --grad-compression (nothing for none).
    static func compressionNote(_ c: CompressionOptions) -> String {
        switch c.method {
        case .none: ""
        case .bf16, .fp16: " (\(c.method.rawValue) gradients)"
        case .powersgd: " (PowerSGD rank \(c.powerSGDRank) from step \(c.powerSGDStartStep))"
        }
    }

    static var printHeader: [String] {
        ["The effective configuration of `lora-dist train` (\(BuildInfo.banner)): every option under",
         "its flag's name, defaults included; null: not set (the option's own default applies).",
         "Use it as a recipe: lora-dist train --config FILE (flags on the command line override it)."]
    }

    static func runHeader(_ runDir: String) -> [String] {
        ["The configuration of the run in \(runDir) (\(BuildInfo.banner)): every option of",
         "`lora-dist train` under its flag's name; null: not set. resume and stop-after are left out.",
         "Repeat the run: lora-dist train --config \(runDir)/config.yaml --run-dir ANOTHER_DIR"]
    }

    /// Flags that make `o` (the inverse of options()): how compare's runs get their config.yaml.
    static func arguments(for o: TrainOptions) -> [String] {
        var a = ["--mode=\(o.mode.rawValue)", "--model=\(o.model)", "--data=\(o.data)", "--steps=\(o.steps)", "--batch=\(o.batch)",
                 "--seq=\(o.seqLen)", "--lr=\(o.lr)", "--min-lr-ratio=\(o.minLRRatio)", "--warmup=\(o.warmup)",
                 "--weight-decay=\(o.optimizer.weightDecay)", "--clip=\(o.optimizer.clipNorm)", "--run-dir=\(o.runDir)",
                 "--seed=\(o.seed)", "--eval-every=\(o.evalEvery)", "--eval-seqs=\(o.evalSequences)", "--dev-percent=\(o.devPercent)",
                 "--exchange=\(o.exchange.rawValue)", "--bucket-mb=\(o.bucketMB)", "--keep-last=\(o.keepLast)",
                 "--grad-compression=\(o.compression.method.rawValue)", "--powersgd-rank=\(o.compression.powerSGDRank)",
                 "--powersgd-start-step=\(o.compression.powerSGDStartStep)",
                 "--text-field=\(o.textField)", o.replaceInvalidUTF8 ? "--replace-invalid-utf8" : "--no-replace-invalid-utf8",
                 o.quiet ? "--quiet" : "--no-quiet", o.recompute ? "--recompute" : "--no-recompute"]
        if let l = o.lora, o.adapter == nil {
            a += ["--rank=\(l.rank)", "--alpha=\(l.alpha)", "--lora-dropout=\(l.dropout)",
                  "--targets=\(l.targets.joined(separator: ","))", l.useRSLoRA ? "--rslora" : "--no-rslora"]
        }
        let optional: [(String, String?)] = [
            ("micro-batch", o.microBatch.map { "\($0)" }), ("threads", o.threads.map { "\($0)" }),
            ("save-every", o.saveEvery.map { "\($0)" }), ("adapter", o.adapter), ("resume", o.resume),
            ("stop-after", o.stopAfter.map { "\($0)" }), ("dev-data", o.devData), ("patience", o.patience.map { "\($0)" }),
            ("replicas", o.replicas.map { "\($0)" }), ("collective-timeout", o.collectiveTimeout.map { "\($0)" }),
            ("train-tokens", o.trainTokens.map { "\($0)" }),
        ]
        for case let (k, v?) in optional { a.append("--\(k)=\(v)") }
        return a
    }

    /// RUN/config.yaml of a run with options `o`; nil if the flags do not parse back (a bug).
    static func configYAML(for o: TrainOptions) -> String? {
        let args = arguments(for: o)
        guard (try? Train.parse(args)) != nil else { return nil }
        let invocation = Invocation(arguments: args, schema: ConfigSchema(Train.self), recipe: nil, commandLine: args)
        return invocation.yaml(header: runHeader(o.runDir), omitting: perInvocationKeys)
    }
}

/// Rank 0's lines on how a corpus was read: with --replace-invalid-utf8, how much was
/// replaced; data files a folder held that were not read.
func corpusNotes(_ c: CorpusCounts, reading: CorpusReading) -> String {
    var s = ""
    if reading.replaceInvalidUTF8 {
        let surrogates = c.replacedSurrogates > 0 ? " and \(c.replacedSurrogates.formatted()) lone surrogate escape(s)" : ""
        s += "lora-dist: replaced \(c.replacedBytes.formatted()) invalid UTF-8 byte(s)\(surrogates) with U+FFFD\n"
    }
    if !c.skipped.isEmpty {
        let shown = c.skipped.prefix(5).joined(separator: ", ") + (c.skipped.count > 5 ? ", ..." : "")
        s += "lora-dist: not read (neither .txt nor .jsonl): \(c.skipped.count) file(s): \(shown)\n"
    }
    return s
}
