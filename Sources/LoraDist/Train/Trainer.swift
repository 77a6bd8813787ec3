import Foundation

/// What trains: adapters on an fp32 base (lora), adapters on an NF4 base (qlora),
/// or every weight (full). All three exchange gradients the same way.
public enum TrainMode: String, Codable, CaseIterable {
    case lora, qlora, full

    public var hasAdapters: Bool { self != .full }
    public var nf4Base: Bool { self == .qlora }
}

/// Everything a training run needs to know, as the CLI fills it in.
public struct TrainOptions {
    public var mode: TrainMode = .lora
    public var model: String = "small"
    public var data: String = ""
    public var steps: Int = 200
    public var batch: Int = 8              // sequences per optimizer step, over all ranks
    public var microBatch: Int? = nil      // sequences per forward/backward on one rank; default: its share
    public var seqLen: Int = 128
    public var lr: Float = 2e-3
    public var minLRRatio: Float = 0.1     // cosine decays to lr · ratio
    public var warmup: Int = 10
    public var optimizer = AdamWConfig()
    public var lora: LoRAConfig? = TrainOptions.defaultLoRA  // required when mode has adapters (lora, qlora)
    public var runDir: String = "runs/default"
    public var seed: UInt64 = 1234
    public var evalEvery: Int = 50
    public var evalSequences: Int = 32
    public var devPercent: Int = 5
    public var devData: String? = nil      // a dev set of its own (otherwise blocks of --data are held out)
    /// --train-tokens: train on the first N tokens of the training split only (compare --data-sizes).
    public var trainTokens: Int? = nil
    public var textField: String = "text"  // the field of a JSON Lines record that holds its text
    public var replaceInvalidUTF8 = false  // read invalid UTF-8 as U+FFFD instead of refusing the file
    public var patience: Int? = nil        // early stopping: evaluations without a new best dev loss
    public var exchange: ExchangeStrategy = .hierarchical
    public var bucketMB: Double = 4
    /// --grad-compression, --powersgd-rank, --powersgd-start-step
    public var compression = CompressionOptions()
    public var saveEvery: Int? = nil       // also saves at the end, always
    public var keepLast: Int = 3
    public var resume: String? = nil       // "latest", a step, or a checkpoint directory
    public var adapter: String? = nil      // a PEFT adapter directory to continue training
    public var stopAfter: Int? = nil       // rehearse a preemption: save and stop after this step
    public var quiet: Bool = false
    /// Model replicas per rank, each on its own thread with one BLAS thread, splitting the
    /// rank's sequences (data parallel inside the process). nil: one per BLAS thread.
    /// 1: a single model whose sgemm uses every BLAS thread.
    public var replicas: Int? = nil
    /// BLAS threads (and element-wise workers) per rank; nil: LORA_DIST_THREADS, else the
    /// rank's share of its node's cores (Cluster.threads).
    public var threads: Int? = nil
    /// The run's configuration as YAML (the CLI's `train --print-config`), written by rank 0
    /// as RUN/config.yaml so that `train --config RUN/config.yaml` repeats the run; nil: none.
    public var configYAML: String? = nil
    /// Seconds a collective may wait for a rank that stopped responding before the job ends
    /// (CollectiveTimeout); nil: LORA_DIST_COLLECTIVE_TIMEOUT, else 300. Set before MPI starts.
    public var collectiveTimeout: Double? = nil
    /// Activation checkpointing per layer: keep each layer's input and attention output and
    /// recompute the rest of its forward in the backward (less memory, about three quarters of
    /// one more forward's projections; the same gradients). LlamaModel.recompute.
    public var recompute = false
    /// QLoRA replicas share dequantized tiles (LoadedModel.Options.shareTiles); tests turn it off.
    var shareTiles = true

    public init() {}

    /// The adapter of the default job (and `train`'s flags): rank 8, alpha 16, every linear projection.
    public static let defaultTargets = "all-linear"
    /// q_proj,k_proj,v_proj,o_proj: the attention projections (the first four of LoRAConfig.projections).
    public static let attentionTargets = LoRAConfig.projections.prefix(4).joined(separator: ",")
    public static let defaultLoRA = try! LoRAConfig(rank: 8, alpha: 16, dropout: 0, targets: [defaultTargets], useRSLoRA: false)
}

extension TrainOptions {
    /// Every option against its documented range (docs/reliability.md lists them), before
    /// anything is read, allocated or written; each error names the flag. NaN and infinity
    /// fail every range. `lora-dist train` runs this as it parses its arguments (so a
    /// recipe's value out of range is reported at its line); the Trainer runs it again.
    public func validate() throws {
        let o = self
        func int(_ flag: String, _ v: Int, _ r: ClosedRange<Int>) throws {
            guard r.contains(v) else { throw LoraDistError("\(flag) must be in \(r.lowerBound)...\(r.upperBound), got \(v)") }
        }
        func real<F: BinaryFloatingPoint>(_ flag: String, _ v: F, _ lo: Double, _ hi: Double, open: Bool = false) throws {
            let x = Double(v)
            guard x.isFinite, open ? x > lo : x >= lo, x <= hi else {
                throw LoraDistError("\(flag) must be a number in \(open ? "(" : "[")\(String(format: "%.10g", lo)), \(String(format: "%.10g", hi))], got \(v)")
            }
        }
        let million = 1_000_000
        try int("--steps", o.steps, 1...100 * million)
        try int("--batch", o.batch, 1...million)
        try int("--seq", o.seqLen, 1...1 << 20)
        try real("--lr", o.lr, 0, 10, open: true)
        try real("--min-lr-ratio", o.minLRRatio, 0, 1)
        try int("--warmup", o.warmup, 0...100 * million)
        try int("--dev-percent", o.devPercent, 0...50)
        try int("--eval-every", o.evalEvery, 0...100 * million)
        try int("--eval-seqs", o.evalSequences, 1...million)
        try real("--bucket-mb", o.bucketMB, 0, 1_048_576, open: true)
        try real("--weight-decay", o.optimizer.weightDecay, 0, 1)
        try real("--clip", o.optimizer.clipNorm, 0, 1e6)
        try real("AdamW beta1", o.optimizer.beta1, 0, 1)
        try real("AdamW beta2", o.optimizer.beta2, 0, 1)
        try real("AdamW eps", o.optimizer.eps, 0, 1, open: true)
        if let k = o.saveEvery { try int("--save-every", k, 1...100 * million) }
        try int("--keep-last", o.keepLast, 1...10_000)
        if let k = o.patience { try int("--patience", k, 1...million) }
        if let n = o.trainTokens { try int("--train-tokens", n, 2...Int(Int32.max)) }
        if let k = o.stopAfter { try int("--stop-after", k, 1...100 * million) }
        if let m = o.microBatch { try int("--micro-batch", m, 1...o.batch) }
        if let r = o.replicas { try int("--replicas", r, 1...1024) }
        if let t = o.threads { try int("--threads", t, 1...4096) }
        if let t = o.collectiveTimeout { try CollectiveTimeout.check(t, name: "--collective-timeout") }
        try int("--powersgd-rank", o.compression.powerSGDRank, CompressionOptions.rankRange)
        try int("--powersgd-start-step", o.compression.powerSGDStartStep, CompressionOptions.startRange)
    }
}

/// Runs the loop on every rank: sample this rank's share of the global batch →
/// forward → backward (gradient buckets leave as they complete) → clip → AdamW
/// on the owned shard → publish to the node. Rank 0 writes the run directory.
/// The model itself, on the node's shared weights, is a `LoadedModel`.
public final class Trainer {
    public let options: TrainOptions
    public let cluster: Cluster
    /// The model on this node's ranks: weights, ownership, replicas, evaluation.
    public let loaded: LoadedModel
    public let corpus: TrainingCorpus
    let sampler: Sampler
    let optimizer: AdamW
    let exchange: GradientExchange
    let schedule: LRSchedule
    let share: Range<Int>          // this rank's sequences of the global batch
    let micro: Int                 // sequences per forward/backward on this rank
    let readyOffset: [Int]         // per layer: trainable arena [0, x) is final once its backward is done
    let seeds: UnsafeMutablePointer<UInt64>  // dropout seeds of a micro-batch's sequences

    /// This rank's model (its weights are the node's shared window).
    public var model: LlamaModel { loaded.model }
    /// The tokenizer the corpus was read with (the model's, or bytes).
    public var tokenizer: Tokenizer { loaded.tokenizer }
    var window: SharedWindow { loaded.window }
    var replicas: [LlamaModel] { loaded.replicas }
    var threads: Int { loaded.threads }
    /// BLAS threads of each model during a training step's forward and backward.
    public var blasThreadsPerReplica: Int { loaded.blasThreadsPerReplica }

    /// Validates everything and builds the model, before anything is written.
    /// Collective: every rank of `cluster` calls it. Checks that can fail run
    /// first, on every rank, and the ranks agree on the outcome before the first
    /// collective that builds something, so a rank that fails never leaves the
    /// others waiting.
    public convenience init(options o: TrainOptions, cluster: Cluster) throws {
        let prepared = try cluster.agree { try Self.prepare(o, cluster: cluster) }
        try self.init(prepared, cluster: cluster, loaded: try LoadedModel(prepared.plan, cluster: cluster))
    }

    /// What a run reads and checks before anything collective is built: the options, the model
    /// plan, the corpus and its sampler.
    public struct Prepared {
        public let options: TrainOptions
        public let plan: LoadedModel.Plan
        public let corpus: TrainingCorpus
        let sampler: Sampler
        let micro: Int
    }

    /// Checks `o` and reads its model plan and corpus for a run on `cluster`. Collective over the
    /// node's ranks of `cluster` only through the token file (TokenFile, whose every outcome they
    /// agree on); callers run it under `Cluster.agree`.
    public static func prepare(_ o: TrainOptions, cluster: Cluster) throws -> Prepared {
        let maxShare = (o.batch + cluster.size - 1) / cluster.size
        let micro = max(1, min(o.microBatch ?? maxShare, maxShare))
        try validate(o, cluster: cluster)
        let plan = try LoadedModel.Plan(modelOptions(o, maxBatch: micro))
        // The node's ranks tokenise the corpus once, together, into a token file they all map.
        let corpus = try TrainingCorpus(data: o.data, devData: o.devData, devPercent: o.devPercent, tokenizer: plan.source.tokenizer,
                                        reading: o.corpusReading, group: cluster.nodeGroup)
        let train = try o.trainTokens.map { try corpus.firstTrainingTokens($0, data: o.data) } ?? corpus.train
        let sampler = try Sampler(tokens: train, seqLen: o.seqLen, seed: o.seed)
        guard corpus.dev.count > o.seqLen else {
            throw LoraDistError("dev split has \(corpus.dev.count) tokens, fewer than one sequence of \(o.seqLen + 1)")
        }
        return Prepared(options: o, plan: plan, corpus: corpus, sampler: sampler, micro: micro)
    }

    /// The trainer of `p` on a model already loaded on `cluster` (an adapter set builds its
    /// adapters' models on a shared base). Collective over `cluster`.
    public init(_ p: Prepared, cluster: Cluster, loaded: LoadedModel) throws {
        let o = p.options
        options = o
        self.cluster = cluster
        self.corpus = p.corpus
        self.sampler = p.sampler
        self.micro = p.micro
        share = Cluster.shard(o.batch, parts: cluster.size, index: cluster.rank)
        self.loaded = loaded
        let store = loaded.model.store, config = loaded.config
        optimizer = AdamW(config: o.optimizer, store: store, range: loaded.trainableShard)
        exchange = try GradientExchange(strategy: o.exchange, cluster: cluster, grads: store.grads.ptr,
                                        count: store.trainableCount, bucketElements: Int(o.bucketMB * 1_048_576 / 4),
                                        compression: o.compression, shapes: store.trainable.map { ($0.offset, $0.spec.shape) },
                                        seed: o.seed)
        var ready: [Int] = []
        var upTo = 0
        for l in 0..<config.numHiddenLayers {
            let ends = store.trainable.filter { $0.name.hasPrefix("model.layers.\(l).") }.map { $0.offset + $0.count }
            ready.append(ends.max() ?? upTo)
        }
        // Layers finish last to first; offsets before a finished layer are final too.
        for l in stride(from: config.numHiddenLayers - 1, through: 0, by: -1) {
            upTo = max(upTo, ready[l])
            ready[l] = upTo
        }
        readyOffset = ready
        schedule = LRSchedule(lr: o.lr, warmup: min(o.warmup, o.steps), total: o.steps, minLR: o.lr * o.minLRRatio)
        seeds = .allocate(capacity: micro)
    }

    deinit { seeds.deallocate() }

    /// The model a run of `o` trains, `maxBatch` sequences per forward pass.
    static func modelOptions(_ o: TrainOptions, maxBatch: Int) -> LoadedModel.Options {
        var m = LoadedModel.Options()
        m.model = o.model; m.mode = o.mode; m.lora = o.lora; m.adapter = o.adapter
        m.seqLen = o.seqLen; m.maxBatch = maxBatch; m.seed = o.seed
        m.threads = o.threads; m.replicas = o.replicas
        m.training = true
        m.exchange = o.exchange
        m.exchangeFloatsPerTrainable = o.compression.method.extraFloatsPerTrainable
        m.recompute = o.recompute
        m.shareTiles = o.shareTiles
        return m
    }

    /// The training flags' own checks (LoadedModel.Plan checks the model's: sequence length,
    /// replicas, adapters), and what the job's shape allows.
    static func validate(_ o: TrainOptions, cluster: Cluster) throws {
        try o.validate()
        if o.exchange == .hierarchical && !cluster.uniform {
            throw LoraDistError("--exchange hierarchical needs the same number of ranks on every node; use --exchange flat")
        }
    }

    /// Mean cross-entropy over up to `evalSequences` non-overlapping dev windows,
    /// split among the ranks. Collective.
    public func evaluate() -> Double { evaluate(tokens: corpus.dev, windows: options.evalSequences) }

    /// Mean cross-entropy of next-token prediction over up to `windows`
    /// non-overlapping windows of `tokens` (evenly spread over it). Collective.
    public func evaluate<C: RandomAccessCollection>(tokens: C, windows limit: Int) -> Double where C.Element == Int32, C.Index == Int {
        loaded.evaluate(tokens: tokens, windows: limit)
    }

    /// Loss and top-1 next-token accuracy over the same windows. Collective.
    public func evaluation<C: RandomAccessCollection>(tokens: C, windows limit: Int) -> LoadedModel.Evaluation where C.Element == Int32, C.Index == Int {
        loaded.evaluation(tokens: tokens, windows: limit)
    }

    public struct StepResult {
        public var loss: Double, gradNorm: Double, commWait: Double, seconds: Double
        public var stop: Bool  // some rank was asked to stop (SIGTERM)
        /// Bytes this rank's exchange sent in the step, inside its node and to other nodes.
        public var bytes = (intra: 0.0, inter: 0.0)
    }

    /// One optimizer step over the global batch. Collective.
    public func step(_ step: Int) throws -> StepResult {
        let t0 = DispatchTime.now().uptimeNanoseconds
        CollectiveTimeout.phase = "step \(step)"
        let T = options.seqLen
        let store = model.store
        let inputs = loaded.inputs, targets = loaded.targets
        loaded.zeroGradients()
        exchange.begin(step: step)
        var lossSum = 0.0
        let scale = 1 / Float(options.batch * T)  // every position of a sampled sequence is labelled
        var first = share.lowerBound
        while first < share.upperBound {
            let b = min(micro, share.upperBound - first)
            for i in 0..<b {
                sampler.fill(step: step, index: first + i, inputs: inputs + i * T, targets: targets + i * T)
                seeds[i] = sampler.dropoutSeed(step: step, index: first + i)
            }
            let last = first + b == share.upperBound
            if replicas.isEmpty {
                model.forward(ids: inputs, batch: b, dropoutSeeds: seeds)
                lossSum += model.loss(targets: targets, batch: b).sum
                // Buckets leave during the last micro-batch's backward, as layers complete.
                model.backward(ids: inputs, targets: targets, batch: b, scale: scale,
                               afterLayer: last ? { [exchange, readyOffset] l in exchange.ready(upTo: readyOffset[l]) } : nil)
            } else {
                lossSum += loaded.replicated(b, seeds: seeds, scale: scale)
            }
            first += b
        }
        if !replicas.isEmpty {
            loaded.sumReplicaGradients()
            exchange.ready(upTo: store.trainableCount)
        }
        exchange.finish()
        // Time blocked in MPI after the overlap: the exchange's tail, the two
        // scalar reductions and the node barrier that publishes the update.
        var wait = exchange.waitSeconds
        func timed<T>(_ body: () -> T) -> T {
            let t = DispatchTime.now().uptimeNanoseconds
            defer { wait += Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9 }
            return body()
        }
        // The loss sum and the preemption flag travel together: every rank learns both.
        let reduced = timed { cluster.sum([lossSum, Preemption.isRequested ? 1 : 0]) }
        let loss = reduced[0] / Double(options.batch * T)
        // Divergence stops the step before anything is updated, published or saved: the last
        // checkpoint stays the last finite one. Each check is on a reduced value, so every
        // rank stops alike.
        let kept = "nothing was updated; the last checkpoint is unchanged"
        guard loss.isFinite else {
            throw LoraDistError("loss is \(loss) at step \(step) with finite weights: training diverged (try a lower --lr); \(kept)")
        }
        let squares = exchange.shardSquares()
        let norm = timed { exchange.globalNorm(shardSquares: squares) }
        guard norm.isFinite else {
            throw LoraDistError("gradient norm is \(norm) at step \(step): training diverged (try a lower --lr or --clip); \(kept)")
        }
        let clip = GradClip.scale(norm: norm, maxNorm: options.optimizer.clipNorm)
        let finiteHere = optimizer.step(values: store.trainableValues, grads: exchange.shardGrads, lr: schedule.at(step), gradScale: clip)
        guard timed({ cluster.sum([finiteHere ? 0 : 1]) })[0] == 0 else {
            throw LoraDistError("the update of step \(step) made weights non-finite: training diverged (try a lower --lr); it was not published or saved, the last checkpoint is unchanged")
        }
        timed { loaded.publish() }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return StepResult(loss: loss, gradNorm: norm, commWait: wait, seconds: seconds, stop: reduced[1] > 0,
                          bytes: exchange.bytesSent)
    }

    /// What one step moves, for this model and for full fine-tuning of it.
    public var exchangeBytes: (intra: Double, inter: Double) { exchange.bytesPerStep }
    public var fullFineTuningExchangeBytes: Double {
        let b = GradientExchange.bytesPerStep(strategy: options.exchange, elements: model.baseParams,
                                              worldSize: cluster.size, localSize: cluster.node.size, nodes: cluster.nodes)
        return b.intra + b.inter
    }

    public struct Outcome {
        public var summary: RunSummary
        /// Stopped early (SIGTERM or --stop-after) with a checkpoint to resume from.
        public var preempted: Bool
        /// The evaluated step with the lowest dev loss, with or without --patience (summary.json's
        /// best_step is null without it; without it, only steps since a resume count); nil when no
        /// evaluation after step 0 was done.
        public var bestStep: Int? = nil
    }

    /// The whole run, from step 1 or from a checkpoint. Rank 0 writes config.yaml,
    /// metrics.jsonl, the TensorBoard event file, summary.json and the manifests; every
    /// rank its shard.
    @discardableResult
    public func run() throws -> Outcome {
        let r = try start()
        while !r.done { try r.advance() }
        return try r.finish()
    }

    /// A run begun (resumed if asked, files opened, the first evaluation done), advanced a step
    /// at a time: `run()` drives one; an adapter set drives several in turn, round robin.
    /// Collective over the cluster.
    public func start(label: String = "") throws -> Run { try Run(self, label: label) }

    public final class Run {
        let trainer: Trainer
        let first: Int
        var s: Int
        var tokens: Int
        let metrics: MetricsLog?, events: EventFile?
        let progress: Progress
        let start = Date()
        let initialDev: Double
        var devLoss: Double, lastLoss: Double
        var trainSeconds: Double, waitSeconds: Double
        /// Bytes the exchange sent over the run's steps, resumed ones included.
        var bytesTotal: Double
        var preempted = false, earlyStopped = false
        var bestDev: Double, bestStep: Int, evalsSinceBest: Int
        /// No step is left: the last is done, or the run stopped (preempted, early stopping).
        public private(set) var done = false

        init(_ t: Trainer, label: String) throws {
            trainer = t
            let o = t.options
            let root = t.cluster.isRoot
            var first = 1, tokens = 0, state: RunState?
            if let which = o.resume {
                let r = try t.resume(which)
                first = r.step + 1
                tokens = r.tokens
                state = r.state
            }
            var metrics: MetricsLog?, events: EventFile?
            if root {
                do {
                    try Files.createDirectory(o.runDir)
                    if let yaml = o.configYAML { try Files.writeAtomically(Data(yaml.utf8), to: o.runDir + "/config.yaml") }
                    let kept = o.resume == nil ? nil : first - 1
                    metrics = try MetricsLog(path: o.runDir + "/metrics.jsonl", keepingStepsUpTo: kept)
                    events = try EventFile(runDir: o.runDir, keepingStepsUpTo: kept)
                } catch { t.cluster.abort("\(error)") }
            }
            self.first = first
            s = first
            self.tokens = tokens
            self.metrics = metrics
            self.events = events
            progress = Progress(total: o.steps, quiet: o.quiet || !root, label: label)
            initialDev = state?.initialDevLoss ?? t.evaluate()
            devLoss = state?.devLoss ?? initialDev
            lastLoss = state?.finalLoss ?? .nan
            trainSeconds = state?.trainSeconds ?? 0
            waitSeconds = state?.waitSeconds ?? 0
            // Counted as sent; a checkpoint of an older version did not keep them: its steps are
            // counted as fp32 exchanges (the only kind it had).
            let perStep = t.exchangeBytes
            bytesTotal = state?.exchangeBytes ?? Double(first - 1) * (perStep.intra + perStep.inter)
            if o.patience != nil {
                bestDev = state?.bestDevLoss ?? .infinity
                bestStep = state?.bestStep ?? 0
            } else {
                bestDev = state?.lowestDevLoss ?? .infinity
                bestStep = state?.lowestDevStep ?? 0
            }
            evalsSinceBest = state?.evalsSinceBest ?? 0
            done = first > o.steps
            // A checkpoint saved as early stopping ended its run (and a preemption arrived in the
            // same step): resumed, the run ends there too, on its best weights, as it would have.
            if let patience = o.patience, state != nil, evalsSinceBest >= patience, !done {
                earlyStopped = true
                done = true
                s = first - 1
            }
        }

        func runState() -> RunState {
            let o = trainer.options
            // The best step is saved only under --patience, as before it was tracked without it: a run
            // resumed with --patience then never points at a best checkpoint that was not kept.
            let es = o.patience != nil
            return RunState(initialDevLoss: initialDev, devLoss: devLoss, finalLoss: lastLoss, trainSeconds: trainSeconds,
                     waitSeconds: waitSeconds, bestDevLoss: es ? bestDev.finite : nil, bestStep: es ? bestStep : 0,
                     evalsSinceBest: es ? evalsSinceBest : 0,
                     exchangeBytes: bytesTotal, gradCompression: o.compression.method.rawValue,
                     powersgdRank: o.compression.method == .powersgd ? o.compression.powerSGDRank : nil,
                     powersgdState: trainer.exchange.powerSGD?.hasQ,
                     lowestDevLoss: bestDev.finite, lowestDevStep: bestStep)
        }

        /// The next step: forward, backward, exchange, update, its metrics line, an evaluation
        /// and a checkpoint when due. Collective.
        public func advance() throws {
            precondition(!done)
            let t = trainer, o = t.options, model = t.model, cluster = t.cluster
            let r = try t.step(s)
            trainSeconds += r.seconds
            waitSeconds += r.commWait
            tokens += o.batch * o.seqLen
            lastLoss = r.loss
            let bytes = (intra: r.bytes.intra.rounded(), inter: r.bytes.inter.rounded())
            bytesTotal += bytes.intra + bytes.inter
            var rec = MetricsRecord(
                step: s, loss: rounded(r.loss), lr: t.schedule.at(s).shortest, tokens: tokens,
                tokensPerSecond: rounded(Double(o.batch * o.seqLen) / r.seconds, 1), stepSeconds: rounded(r.seconds),
                gradNorm: rounded(r.gradNorm), trainableParams: model.trainableParams, mode: o.mode.rawValue,
                exchangeBytes: Int(bytes.intra + bytes.inter), exchangeBytesIntra: Int(bytes.intra),
                exchangeBytesInter: Int(bytes.inter), exchangedParams: model.trainableParams,
                commWaitSeconds: rounded(r.commWait), computeSeconds: rounded(max(r.seconds - r.commWait, 0)),
                worldSize: cluster.size, exchange: o.exchange.rawValue, gradCompression: o.compression.method.rawValue)
            var newBest = false
            if s % o.evalEvery == 0 || s == o.steps {
                CollectiveTimeout.phase = "the evaluation after step \(s)"
                devLoss = t.evaluate()
                rec.devLoss = rounded(devLoss)
                // The best step is tracked with or without early stopping (compare --no-early-stopping
                // reports it); only under --patience does it stop the run and keep a best checkpoint.
                if devLoss < bestDev { bestDev = devLoss; bestStep = s; evalsSinceBest = 0; newBest = o.patience != nil }
                else { evalsSinceBest += 1 }
                if let patience = o.patience { earlyStopped = evalsSinceBest >= patience }
            }
            if let metrics, let events {
                do { try metrics.append(rec); try events.append(rec) } catch { cluster.abort("\(error)") }
            }
            progress.update(step: s, loss: r.loss, tokensPerSecond: Double(tokens) / max(trainSeconds, 1e-9),
                            secondsPerStep: trainSeconds / Double(s - first + 1), commShare: waitSeconds / max(trainSeconds, 1e-9))
            preempted = r.stop || s == o.stopAfter
            if newBest || preempted || earlyStopped || s == o.steps || (o.saveEvery.map { s % $0 == 0 } ?? false) {
                CollectiveTimeout.phase = "the checkpoint of step \(s)"
                try t.saveCheckpoint(step: s, tokens: tokens, runState: runState(), best: newBest)
            }
            if preempted || earlyStopped || s == o.steps { done = true } else { s += 1 }
        }

        /// Ends the run: back to the best weights under early stopping, summary.json written by
        /// rank 0. `nodeMemory`: the node memory to report (an adapter set measures it once for
        /// all its adapters); nil: measured here over the cluster. Collective.
        public func finish(nodeMemory measured: Double? = nil) throws -> Outcome {
            let t = trainer, o = t.options, model = t.model, cluster = t.cluster
            progress.finish()
            // With early stopping the run ends on its best weights.
            if o.patience != nil, bestStep > 0, bestStep != min(s, o.steps), !preempted {
                _ = try t.resume(CheckpointFiles.stepName(bestStep), continuing: false)
                devLoss = bestDev
            }
            let nodeMemory = measured ?? cluster.largestNodeMemory()
            let wall = Date().timeIntervalSince(start)
            let stepsDone = preempted || earlyStopped ? s : o.steps
            let perStep = (bytesTotal / Double(max(stepsDone, 1))).rounded(), fullPerStep = t.fullFineTuningExchangeBytes
            let summary = RunSummary(
                mode: o.mode.rawValue, model: o.model, steps: o.steps, batch: o.batch, seqLen: o.seqLen, seed: o.seed,
                stepsDone: stepsDone, preempted: preempted, earlyStopped: earlyStopped, bestStep: o.patience != nil ? bestStep : nil,
                tokens: tokens, finalLoss: rounded(lastLoss),
                initialDevLoss: rounded(initialDev), initialDevPerplexity: rounded(Foundation.exp(initialDev), 3),
                devLoss: rounded(devLoss), devPerplexity: rounded(Foundation.exp(devLoss), 3),
                trainableParams: model.trainableParams, totalParams: model.totalParams,
                baseParams: model.baseParams, weightBytes: model.store.valueBytes,
                baseStorage: model.nf4Base ? "nf4" : "fp32", nf4: model.store.nf4Summary,
                tokensPerSecond: rounded(Double(tokens) / max(trainSeconds, 1e-9), 1), wallSeconds: rounded(wall, 3),
                lora: o.mode.hasAdapters ? RunSummary.LoRASummary(o.lora!) : nil, lr: o.lr.shortest,
                worldSize: cluster.size, nodes: cluster.nodes, ranksPerNode: cluster.node.size,
                exchange: o.exchange.rawValue, blasThreads: t.loaded.blasThreadsPerReplica, blasCore: BLASCore.name,
                replicas: t.loaded.replicaCount,
                exchangeBytesPerStep: Int(perStep), fullFTExchangeBytesPerStep: Int(fullPerStep),
                exchangeRatio: fullPerStep > 0 ? rounded(perStep / fullPerStep, 6) : nil,
                exchangeBytesTotal: Int(bytesTotal), gradCompression: o.compression.method.rawValue,
                powersgd: t.exchange.powerSGD.map { p in
                    let n = p.allreducedCounts, compressed = p.matrices.filter { $0.rank > 0 }.count
                    return RunSummary.PowerSGDSummary(rank: p.rank, startStep: o.compression.powerSGDStartStep,
                                                      compressedTensors: compressed, uncompressedTensors: p.matrices.count - compressed,
                                                      floatsPerStep: n.uncompressed + n.p + n.q, gradientFloats: p.count)
                },
                commWaitShare: rounded(waitSeconds / max(trainSeconds, 1e-9), 4),
                nodeMemoryBytes: Int(nodeMemory),
                weightsBytesPerNode: t.loaded.windowBytes,
                checkpoint: t.checkpointRoot + "/" + CheckpointFiles.stepName(stepsDone))
            if cluster.isRoot {
                do { try Files.writeAtomically(try JSONCoding.encode(summary), to: o.runDir + "/summary.json") }
                catch { cluster.abort("\(error)") }
            }
            return Outcome(summary: summary, preempted: preempted, bestStep: bestStep > 0 ? bestStep : nil)
        }
    }
}

/// The progress line on stderr: rewritten in place on a terminal, a line every
/// few seconds otherwise (logs stay short).
final class Progress {
    let total: Int
    let quiet: Bool
    let label: String  // names the adapter of an adapter set ("legal: ")
    let tty = isatty(2) != 0
    var lastPrint = Date.distantPast

    init(total: Int, quiet: Bool, label: String = "") { self.total = total; self.quiet = quiet; self.label = label }

    func update(step: Int, loss: Double, tokensPerSecond: Double, secondsPerStep: Double, commShare: Double) {
        guard !quiet else { return }
        let now = Date()
        guard step == total || now.timeIntervalSince(lastPrint) >= (tty ? 0.2 : 5) else { return }
        lastPrint = now
        let eta = Double(total - step) * secondsPerStep
        let line = label + String(format: "step %ld/%ld  loss %.4f  %.0f tok/s  comm %.0f%%  ETA %@", step, total, loss,
                          tokensPerSecond, 100 * commShare, Units.duration(eta))
        FileHandle.standardError.write(Data(((tty ? "\r\u{1B}[K" : "") + line + (tty ? "" : "\n")).utf8))
    }

    func finish() {
        if tty && !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
