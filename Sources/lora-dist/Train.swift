import ArgumentParser
import Foundation
import LoraDist

extension TrainMode: ExpressibleByArgument {}
extension ExchangeStrategy: ExpressibleByArgument {}

/// The library's defaults are the flags' defaults.
private let defaults = TrainOptions()
private let loraDefaults = TrainOptions.defaultLoRA

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a model (the default job when no subcommand is given).")

    @Option(help: "lora: train low-rank adapters on a frozen base; qlora: the same on a base stored as 4-bit NF4; full: train every weight.")
    var mode: TrainMode = defaults.mode
    @Option(help: "Built-in config (tiny, small, bench), a config.json, or a Hugging Face model directory (config.json + model.safetensors).")
    var model: String = defaults.model
    @Option(help: "A text file, a JSON Lines file (.jsonl: one JSON object per line, the text under --text-field), or a folder of .txt and .jsonl files. Default: the corpus tools/fetch-corpus.sh installs.")
    var data: String?
    @Option(help: "Optimizer steps.") var steps: Int = defaults.steps
    @Option(help: "Sequences per optimizer step (the global batch).") var batch: Int = defaults.batch
    @Option(name: .customLong("micro-batch"), help: "Sequences per forward/backward pass; gradients accumulate over batch / micro-batch passes. Default: the whole batch.")
    var microBatch: Int?
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
    @Flag(name: .customLong("rslora"), help: "Scale the adapter by alpha / sqrt(r) (rank-stabilised LoRA).") var rsLoRA = loraDefaults.useRSLoRA
    @Option(name: .customLong("run-dir"), help: "Where metrics.jsonl and summary.json go.") var runDir: String = defaults.runDir
    @Option(help: "Seed for initialisation, sampling and dropout.") var seed: UInt64 = defaults.seed
    @Option(name: .customLong("eval-every"), help: "Evaluate dev loss every this many steps.") var evalEvery: Int = defaults.evalEvery
    @Option(name: .customLong("eval-seqs"), help: "Dev sequences per evaluation.") var evalSequences: Int = defaults.evalSequences
    @Option(name: .customLong("dev-percent"), help: "Share of corpus blocks held out for dev.") var devPercent: Int = defaults.devPercent
    @Option(help: "Gradient exchange: hierarchical (reduce-scatter in the node, allreduce across nodes) or flat (one world allreduce, the DDP baseline).")
    var exchange: ExchangeStrategy = defaults.exchange
    @Option(name: .customLong("bucket-mb"), help: "Gradient bucket size in MiB; each bucket is sent as soon as the backward completes it.")
    var bucketMB: Double = defaults.bucketMB
    @Option(help: "OpenBLAS threads per rank (default: the rank's cores shared among the node's ranks; env LORA_DIST_THREADS).")
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
    @Option(name: .customLong("text-field"), help: "The field of each JSON Lines record that holds its text.")
    var textField: String = defaults.textField
    @Flag(name: .customLong("replace-invalid-utf8"), help: "Read bytes that are not UTF-8 (and lone surrogate escapes in JSON Lines) as U+FFFD instead of refusing the file.")
    var replaceInvalidUTF8 = defaults.replaceInvalidUTF8
    @Option(help: "Early stopping: stop after this many evaluations without a new best dev loss, and end on the best weights (kept as checkpoints/best).")
    var patience: Int?
    @Flag(help: "No progress line.") var quiet = false
    @Option(help: "Model replicas per rank (default: one per thread, each with one BLAS thread, splitting the rank's sequences; 1: one model whose sgemm uses every thread).")
    var replicas: Int?

    func run() throws {
        var o = TrainOptions()
        o.mode = mode
        o.model = model
        o.data = data ?? CacheFolders.defaultCorpus
        if data == nil, !FileManager.default.fileExists(atPath: o.data) {
            throw LoraDistError("default corpus not found at \(o.data): run tools/fetch-corpus.sh, or pass --data PATH")
        }
        o.steps = steps; o.batch = batch; o.microBatch = microBatch; o.seqLen = seqLen
        o.lr = lr; o.minLRRatio = minLRRatio; o.warmup = warmup
        o.optimizer.weightDecay = weightDecay; o.optimizer.clipNorm = clipNorm
        if let adapter {
            guard mode.hasAdapters else { throw LoraDistError("--adapter continues a LoRA adapter: use --mode lora or qlora") }
            let path = adapter + "/adapter_config.json"
            guard let json = FileManager.default.contents(atPath: path) else { throw LoraDistError("cannot read \(path)") }
            o.lora = try LoRAConfig.fromPEFT(json: json, source: path)
            o.adapter = adapter
        } else if mode.hasAdapters {
            o.lora = try LoRAConfig(rank: rank, alpha: alpha, dropout: loraDropout, targets: [targets], useRSLoRA: rsLoRA)
        }
        o.runDir = runDir; o.seed = seed; o.evalEvery = max(evalEvery, 1); o.evalSequences = evalSequences
        o.devPercent = devPercent; o.quiet = quiet
        o.exchange = exchange; o.bucketMB = bucketMB
        o.saveEvery = saveEvery; o.keepLast = keepLast; o.resume = resume; o.stopAfter = stopAfter
        o.devData = devData; o.patience = patience; o.replicas = replicas
        o.textField = textField; o.replaceInvalidUTF8 = replaceInvalidUTF8
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
                \(cluster.size) rank(s) on \(cluster.nodes) node(s), \(exchange.rawValue) exchange, \(trainer.blasThreadsPerReplica) BLAS thread(s) per rank
                corpus \(o.data): \(trainer.corpus.train.count.formatted()) train / \(trainer.corpus.dev.count.formatted()) dev tokens

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
            do { try HuggingFace.saveMerged(trainer.model, to: exportMerged) } catch { cluster.abort("\(error)") }
        }
        print(Report.closing(s))
        print("run directory: \(runDir) (metrics.jsonl, summary.json)")
    }
}

/// Rank 0's lines on how a corpus was read: with --replace-invalid-utf8, how much was
/// replaced; data files a folder held that were not read.
func corpusNotes(_ c: Corpus, reading: CorpusReading) -> String {
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
