import Foundation

public enum TrainMode: String, Codable, CaseIterable {
    case lora, full
}

/// Everything a training run needs to know, as the CLI fills it in.
public struct TrainOptions {
    public var mode: TrainMode = .lora
    public var model: String = "small"
    public var data: String = ""
    public var steps: Int = 200
    public var batch: Int = 8              // sequences per optimizer step (the global batch)
    public var microBatch: Int? = nil      // sequences per forward/backward; default: the batch
    public var seqLen: Int = 128
    public var lr: Float = 1e-3
    public var minLRRatio: Float = 0.1     // cosine decays to lr · ratio
    public var warmup: Int = 10
    public var optimizer = AdamWConfig()
    public var lora: LoRAConfig? = nil     // required when mode == .lora
    public var runDir: String = "runs/default"
    public var seed: UInt64 = 1234
    public var evalEvery: Int = 50
    public var evalSequences: Int = 32
    public var devPercent: Int = 5
    public var quiet: Bool = false

    public init() {}
}

/// Runs the loop: sample → forward → backward → clip → AdamW, with evaluation
/// on the dev split and one metrics record per optimizer step.
public final class Trainer {
    public let options: TrainOptions
    public let model: LlamaModel
    public let corpus: Corpus
    let sampler: Sampler
    let optimizer: AdamW
    let schedule: LRSchedule
    let micro: Int
    // Batch buffers, sized once.
    let inputs: UnsafeMutablePointer<Int32>
    let targets: UnsafeMutablePointer<Int32>
    let seeds: UnsafeMutablePointer<UInt64>

    /// Validates everything and builds the model, before anything is written.
    public init(options o: TrainOptions) throws {
        guard o.steps >= 1 else { throw LoraDistError("--steps must be at least 1, got \(o.steps)") }
        guard o.batch >= 1 else { throw LoraDistError("--batch must be at least 1, got \(o.batch)") }
        guard o.seqLen >= 2 else { throw LoraDistError("--seq must be at least 2, got \(o.seqLen)") }
        guard o.lr > 0, o.lr.isFinite else { throw LoraDistError("--lr must be positive, got \(o.lr)") }
        guard o.warmup >= 0 else { throw LoraDistError("--warmup must not be negative") }
        guard (0...50).contains(o.devPercent) else { throw LoraDistError("--dev-percent must be in 0...50") }
        if let m = o.microBatch, m < 1 { throw LoraDistError("--micro-batch must be at least 1, got \(m)") }
        if o.mode == .lora && o.lora == nil { throw LoraDistError("LoRA mode needs a LoRA config") }
        options = o
        micro = min(o.microBatch ?? o.batch, o.batch)
        let config = try ModelConfig.load(o.model)
        let tokenizer = ByteTokenizer()
        guard config.vocabSize >= tokenizer.vocabSize else {
            throw LoraDistError("model vocabulary \(config.vocabSize) is smaller than the byte tokenizer's \(tokenizer.vocabSize)")
        }
        corpus = try Corpus(path: o.data, tokenizer: tokenizer, devPercent: o.devPercent)
        sampler = try Sampler(tokens: corpus.train, seqLen: o.seqLen, seed: o.seed)
        guard corpus.dev.count > o.seqLen else {
            throw LoraDistError("dev split has \(corpus.dev.count) tokens, fewer than one sequence of \(o.seqLen + 1)")
        }
        model = try LlamaModel(config: config, lora: o.mode == .lora ? o.lora : nil, maxBatch: micro, seqLen: o.seqLen)
        model.initialize(seed: o.seed)
        if let weights = HuggingFace.weightsFile(modelPath: o.model) {
            try HuggingFace.loadBase(model, from: try SafeTensors(path: weights))
        }
        optimizer = AdamW(config: o.optimizer, store: model.store)
        schedule = LRSchedule(lr: o.lr, warmup: min(o.warmup, o.steps), total: o.steps, minLR: o.lr * o.minLRRatio)
        inputs = .allocate(capacity: micro * o.seqLen)
        targets = .allocate(capacity: micro * o.seqLen)
        seeds = .allocate(capacity: micro)
    }

    deinit {
        inputs.deallocate(); targets.deallocate(); seeds.deallocate()
    }

    /// Mean cross-entropy over up to `evalSequences` non-overlapping dev windows.
    public func evaluate() -> Double {
        let T = options.seqLen
        let windows = max(1, min(options.evalSequences, (corpus.dev.count - 1) / T))
        var sum = 0.0, count = 0
        var w = 0
        while w < windows {
            let b = min(micro, windows - w)
            for i in 0..<b {
                let start = (w + i) * T
                for t in 0..<T {
                    inputs[i * T + t] = corpus.dev[start + t]
                    targets[i * T + t] = corpus.dev[start + t + 1]
                }
            }
            model.forward(ids: inputs, batch: b)
            let l = model.loss(targets: targets, batch: b)
            sum += l.sum
            count += l.count
            w += b
        }
        return sum / Double(max(count, 1))
    }

    /// One optimizer step over the global batch; returns (mean loss, gradient norm).
    public func step(_ step: Int) throws -> (loss: Double, gradNorm: Double) {
        let T = options.seqLen, B = options.batch
        model.store.grads.zero()
        var lossSum = 0.0
        let scale = 1 / Float(B * T)  // every position of a sampled sequence is labelled
        var first = 0
        while first < B {
            let b = min(micro, B - first)
            for i in 0..<b {
                sampler.fill(step: step, index: first + i, inputs: inputs + i * T, targets: targets + i * T)
                seeds[i] = sampler.dropoutSeed(step: step, index: first + i)
            }
            model.forward(ids: inputs, batch: b, dropoutSeeds: seeds)
            lossSum += model.loss(targets: targets, batch: b).sum
            model.backward(ids: inputs, targets: targets, batch: b, scale: scale)
            first += b
        }
        let loss = lossSum / Double(B * T)
        guard loss.isFinite else { throw LoraDistError("loss is \(loss) at step \(step): training diverged (try a lower --lr)") }
        let norm = GradClip.sumSquares(model.store.grads.ptr, count: model.store.trainableCount).squareRoot()
        let clip = GradClip.scale(norm: norm, maxNorm: options.optimizer.clipNorm)
        optimizer.step(values: model.store.trainableValues, grads: model.store.grads.ptr,
                       lr: schedule.at(step), gradScale: clip)
        return (loss, norm)
    }

    /// The whole run: writes metrics.jsonl and summary.json into the run directory.
    @discardableResult
    public func run() throws -> [String: Any] {
        let o = options
        try RunFiles.createDirectory(o.runDir)
        let metrics = try MetricsLog(path: o.runDir + "/metrics.jsonl")
        let progress = Progress(total: o.steps, quiet: o.quiet)
        let start = Date()
        let initialDev = evaluate()
        var devLoss = initialDev
        var tokens = 0, lastLoss = 0.0
        var trainSeconds = 0.0
        for s in 1...o.steps {
            let t0 = Date()
            let (loss, norm) = try step(s)
            let dt = Date().timeIntervalSince(t0)
            trainSeconds += dt
            tokens += o.batch * o.seqLen
            lastLoss = loss
            var rec: [String: Any] = [
                "step": s, "loss": rounded(loss), "lr": Double(schedule.at(s)), "tokens": tokens,
                "tokens_per_s": rounded(Double(o.batch * o.seqLen) / dt, 1), "step_s": rounded(dt),
                "grad_norm": rounded(norm), "trainable_params": model.trainableParams, "mode": o.mode.rawValue,
            ]
            if s % o.evalEvery == 0 || s == o.steps {
                devLoss = evaluate()
                rec["dev_loss"] = rounded(devLoss)
            }
            try metrics.append(rec)
            progress.update(step: s, loss: loss, tokensPerSecond: Double(tokens) / trainSeconds,
                            secondsPerStep: trainSeconds / Double(s))
        }
        progress.finish()
        let wall = Date().timeIntervalSince(start)
        let summary: [String: Any] = [
            "mode": o.mode.rawValue, "model": o.model, "steps": o.steps, "batch": o.batch, "seq_len": o.seqLen,
            "tokens": tokens, "final_loss": rounded(lastLoss),
            "initial_dev_loss": rounded(initialDev), "initial_dev_perplexity": rounded(Foundation.exp(initialDev), 3),
            "dev_loss": rounded(devLoss), "dev_perplexity": rounded(Foundation.exp(devLoss), 3),
            "trainable_params": model.trainableParams, "total_params": model.totalParams,
            "base_params": model.baseParams,
            "tokens_per_s": rounded(Double(tokens) / trainSeconds, 1), "wall_s": rounded(wall, 3),
            "lora": o.mode == .lora ? loraJSON(o.lora!) : NSNull(), "lr": Double(o.lr), "seed": o.seed,
        ]
        try RunFiles.writeAtomically(try RunFiles.json(summary), to: o.runDir + "/summary.json")
        return summary
    }

    func loraJSON(_ l: LoRAConfig) -> [String: Any] {
        ["r": l.rank, "alpha": Double(l.alpha), "dropout": Double(l.dropout), "target_modules": l.targets,
         "use_rslora": l.useRSLoRA]
    }
}

/// The progress line on stderr: rewritten in place on a terminal, a line every
/// few steps otherwise (logs stay short).
final class Progress {
    let total: Int
    let quiet: Bool
    let tty = isatty(2) != 0
    var lastPrint = Date.distantPast

    init(total: Int, quiet: Bool) { self.total = total; self.quiet = quiet }

    func update(step: Int, loss: Double, tokensPerSecond: Double, secondsPerStep: Double) {
        guard !quiet else { return }
        let now = Date()
        guard step == total || now.timeIntervalSince(lastPrint) >= (tty ? 0.2 : 5) else { return }
        lastPrint = now
        let eta = Double(total - step) * secondsPerStep
        let line = String(format: "step %d/%d  loss %.4f  %.0f tok/s  ETA %@", step, total, loss, tokensPerSecond,
                          formatDuration(eta))
        FileHandle.standardError.write(Data(((tty ? "\r\u{1B}[K" : "") + line + (tty ? "" : "\n")).utf8))
    }

    func finish() {
        if tty && !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
