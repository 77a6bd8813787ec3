import Foundation
import Testing
@testable import LoraDist

/// The loop as a whole: optimizer, schedule, accumulation, the trainable set, data.
@Suite(.serialized) struct TrainingTests {
    /// A small real-looking corpus written into a temp folder.
    static func corpus(_ name: String) throws -> String {
        let dir = TestPaths.tempDir(name)
        var text = ""
        let lines = ["The quick brown fox jumps over the lazy dog.", "To be, or not to be, that is the question:",
                     "Whether 'tis nobler in the mind to suffer", "The slings and arrows of outrageous fortune,",
                     "Or to take arms against a sea of troubles", "And by opposing end them. To die: to sleep;"]
        for i in 0..<400 { text += lines[i % lines.count] + " \(i % 7)\n" }
        try text.write(toFile: dir + "/a.txt", atomically: true, encoding: .utf8)
        try String(text.reversed()).write(toFile: dir + "/b.txt", atomically: true, encoding: .utf8)
        return dir
    }

    /// Train and dev text on which fitting the one must raise the other's loss, whatever the
    /// trajectory: the train text is the letters a–h in order, over and over; the dev text holds the
    /// same letters, about as often, in a random order that never puts a letter's successor after it.
    /// Learning which letters occur lowers dev loss (towards ln 8); learning what follows what, the
    /// only other thing the train text teaches, raises it without bound.
    static func opposedCorpus(_ name: String) throws -> (train: String, dev: String) {
        let train = TestPaths.tempDir(name), dev = TestPaths.tempDir(name + "-dev")
        let letters = Array("abcdefgh")
        try String(repeating: String(letters), count: 1200).write(toFile: train + "/train.txt", atomically: true, encoding: .utf8)
        var rng = SplitMix64(seed: 7), i = 0, shuffled = ""
        for _ in 0..<9600 {
            shuffled.append(letters[i])
            i = (i + 2 + rng.below(6)) % 8  // 2 to 7 letters on: never the successor
        }
        try shuffled.write(toFile: dev + "/dev.txt", atomically: true, encoding: .utf8)
        return (train, dev)
    }

    static func options(_ mode: TrainMode, data: String, steps: Int = 40) throws -> TrainOptions {
        var o = TrainOptions()
        o.mode = mode
        o.model = "tiny"
        o.data = data
        o.steps = steps
        o.batch = 4
        o.seqLen = 32
        o.lr = 1e-2
        o.warmup = 2
        o.evalSequences = 8
        o.quiet = true
        o.runDir = TestPaths.tempDir("run-\(mode)")
        o.lora = try LoRAConfig(rank: 4, alpha: 8, targets: ["all-linear"])
        return o
    }

    /// Full fine-tuning from random init learns the corpus; LoRA then adapts that
    /// base (saved and reloaded as a Hugging Face directory) to a shifted domain.
    /// (LoRA on a random base cannot move far: its frozen 0.02-scale head caps the logits.)
    @Test("full fine-tuning learns from scratch, LoRA adapts the result to a new domain")
    func learns() throws {
        let general = try Self.corpus("general")
        let full = try makeTrainer(try Self.options(.full, data: general))
        let s = try full.run().summary
        let before = s.initialDevLoss, after = s.devLoss
        #expect(after < before - 1, "full: dev loss \(before) → \(after)")
        let lines = try String(contentsOfFile: full.options.runDir + "/metrics.jsonl", encoding: .utf8)
            .split(separator: "\n")
        #expect(lines.count == 40)

        let base = TestPaths.tempDir("base")
        try HuggingFace.saveMerged(full.model, tokenizerOf: full.loaded.source, to: base)
        let domain = TestPaths.tempDir("domain")
        var shouted = try String(contentsOfFile: general + "/a.txt", encoding: .utf8).uppercased()
        shouted = shouted.replacingOccurrences(of: " ", with: "_")
        try shouted.write(toFile: domain + "/shout.txt", atomically: true, encoding: .utf8)
        var o = try Self.options(.lora, data: domain)
        o.model = base
        let lora = try makeTrainer(o)
        let l = try lora.run().summary
        let lb = l.initialDevLoss, la = l.devLoss
        #expect(la < lb - 0.5, "lora: dev loss \(lb) → \(la)")
    }

    /// QLoRA on a base whose projections do not fill whole 64-blocks (hidden 36, head dim 18,
    /// intermediate 60): the padding is recorded, the NF4 bytes never change, the adapters
    /// learn, and the merged fp32 export computes the same logits as the QLoRA model.
    @Test("QLoRA adapts a padded NF4 base; its merged export reproduces it")
    func qlora() throws {
        let general = try Self.corpus("q-general")
        let config = ModelConfig(vocabSize: 258, hiddenSize: 36, intermediateSize: 60, numHiddenLayers: 2,
                                 numAttentionHeads: 2, numKeyValueHeads: 1, maxPositionEmbeddings: 64,
                                 bosTokenId: 256, eosTokenId: 257)
        let configDir = TestPaths.tempDir("q-config")
        try Files.writeAtomically(try JSONCoding.object(config.huggingFaceJSON()), to: configDir + "/config.json")
        var o = try Self.options(.full, data: general)
        o.model = configDir + "/config.json"
        let full = try makeTrainer(o)
        try full.run()
        let base = TestPaths.tempDir("q-base")
        try HuggingFace.saveMerged(full.model, tokenizerOf: full.loaded.source, to: base)

        let domain = try writeCorpus("q-domain") { "LINE_\($0):_THE_RAIN_IN_SPAIN_STAYS_MAINLY_IN_THE_PLAIN" }
        var lo = try Self.options(.lora, data: domain, steps: 1)
        lo.model = base
        let loraInitial = try makeTrainer(lo).run().summary.initialDevLoss
        var qo = try Self.options(.qlora, data: domain)
        qo.model = base
        let q = try makeTrainer(qo)
        let frozen = q.model.store.params.filter(\.spec.nf4)
        #expect(frozen.count == 14)  // 2 layers × 7 projections
        let bytes = frozen.map { Array(UnsafeRawBufferPointer(start: $0.value, count: 4 * $0.spec.slots)) }
        let s = try q.run().summary
        #expect(s.baseStorage == "nf4")
        let nf4 = try #require(s.nf4)
        // per layer: q, o 1296 → 21 blocks, 48 padded; k, v 648 → 11 blocks, 56; gate, up, down 2160 → 34 blocks, 16
        // (48 + 56 + 56 + 48 + 3 · 16 = 256)
        #expect(nf4.paddedTensors == 14)
        #expect(nf4.paddingElements == 2 * 256)
        #expect(zip(frozen, bytes).allSatisfy { Array(UnsafeRawBufferPointer(start: $0.0.value, count: 4 * $0.0.spec.slots)) == $0.1 })
        let initial = s.initialDevLoss, final = s.devLoss
        #expect(initial != loraInitial && abs(initial - loraInitial) < 0.05, "NF4 base \(initial) vs fp32 base \(loraInitial)")
        #expect(final < initial - 0.5, "qlora: dev loss \(initial) → \(final)")

        let merged = TestPaths.tempDir("q-merged")
        try HuggingFace.saveMerged(q.model, tokenizerOf: q.loaded.source, to: merged)
        let meta = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: merged + "/config.json"))) as? [String: Any])
        #expect((meta["lora_dist"] as? [String: Any])?["merged_from"] as? String == "qlora")
        var fo = try Self.options(.full, data: domain, steps: 1)
        fo.model = merged
        let plain = try makeTrainer(fo)
        let ids = (0..<32).map { Int32(($0 * 7) % 256) }
        func logits(_ m: LlamaModel) -> [Float] {
            Array(UnsafeBufferPointer(start: m.forward(ids: ids, batch: 1), count: 32 * 258))
        }
        #expect(relativeError(logits(plain.model), logits(q.model)) < 1e-4)
    }

    @Test("LoRA leaves every base weight untouched and trains only the adapters")
    func loraFreezesBase() throws {
        let t = try makeTrainer(try Self.options(.lora, data: try Self.corpus("frozen"), steps: 5))
        let base = t.model.store.params.filter { !$0.name.contains(".lora_") }
        let before = base.map { Array(UnsafeBufferPointer(start: $0.value, count: $0.count)) }
        let loraBefore = t.model.store.trainable.map { Array(UnsafeBufferPointer(start: $0.value, count: $0.count)) }
        try t.run()
        for (p, b) in zip(base, before) {
            #expect(Array(UnsafeBufferPointer(start: p.value, count: p.count)) == b, "\(p.name) changed")
            #expect(p.grad == nil)
        }
        let changed = zip(t.model.store.trainable, loraBefore).filter {
            Array(UnsafeBufferPointer(start: $0.0.value, count: $0.0.count)) != $0.1
        }
        #expect(changed.count == t.model.store.trainable.count)
        #expect(t.model.store.trainable.allSatisfy { $0.name.contains(".lora_") })
        // 2 layers × 7 projections × (A + B)
        #expect(t.model.store.trainable.count == 28)
    }

    @Test("gradient accumulation over micro-batches gives the full batch's gradient")
    func accumulation() throws {
        let data = try Self.corpus("accum")
        var o = try Self.options(.full, data: data, steps: 1)
        let whole = try makeTrainer(o)
        _ = try whole.step(1)
        o.microBatch = 3  // 4 = 3 + 1: an uneven split
        let split = try makeTrainer(o)
        _ = try split.step(1)
        let a = Array(UnsafeBufferPointer(start: whole.model.store.values, count: whole.model.store.totalCount))
        let b = Array(UnsafeBufferPointer(start: split.model.store.values, count: split.model.store.totalCount))
        #expect(relativeError(b, a) < 1e-5)
        let ga = whole.model.store.grads.array, gb = split.model.store.grads.array
        #expect(relativeError(gb, ga) < 1e-5)
    }

    /// Activation checkpointing re-runs each layer's forward from its saved input: the same
    /// operations on the same values, so losses, gradients and weights are identical, bit for bit
    /// (adapter dropout masks come from the same seeds; micro-batches and replicas included).
    @Test("--recompute gives the same losses, gradients and weights, bit for bit", arguments: [TrainMode.full, .lora, .qlora])
    func recompute(mode: TrainMode) throws {
        let data = try Self.corpus("recompute")
        var o = try Self.options(mode, data: data, steps: 3)
        o.lora = try LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targets: ["all-linear"])
        o.microBatch = 3
        var runs: [(losses: [Double], grads: [Float], values: [Float])] = []
        for r in [false, true] {
            o.recompute = r
            o.runDir = TestPaths.tempDir("recompute-\(r)")
            let t = try makeTrainer(o)
            #expect(t.model.recompute == r)
            let losses = try (1...3).map { try t.step($0).loss }
            // the trainable arena (a frozen NF4 arena has padding no one writes)
            runs.append((losses, t.model.store.grads.array,
                         Array(UnsafeBufferPointer(start: t.model.store.values, count: t.model.store.trainableCount))))
        }
        #expect(runs[0].losses == runs[1].losses, "\(runs[0].losses) vs \(runs[1].losses)")
        #expect(runs[0].grads == runs[1].grads && runs[0].grads.contains { $0 != 0 }, "gradients differ")
        #expect(runs[0].values == runs[1].values, "weights differ")
    }

    /// QLoRA with replicas: the replicas dequantize each NF4 tile together into one buffer
    /// (NF4Matmul.TileShare) instead of each its own, and compute the same losses, gradients,
    /// weights and dev loss, bit for bit (micro-batches of 3 + 1: a pass with uneven parts and a
    /// pass of one replica alone; dropout; with and without recompute).
    @Test("QLoRA replicas sharing NF4 tiles train exactly as replicas with their own", arguments: [false, true])
    func sharedTiles(recompute: Bool) throws {
        let data = try Self.corpus("tiles")
        var o = try Self.options(.qlora, data: data, steps: 3)
        o.lora = try LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targets: ["all-linear"])
        o.microBatch = 3
        o.replicas = 2
        o.recompute = recompute
        var runs: [(losses: [Double], grads: [Float], values: [Float], dev: Double)] = []
        for share in [false, true] {
            o.shareTiles = share
            o.runDir = TestPaths.tempDir("tiles-\(share)-\(recompute)")
            let t = try makeTrainer(o)
            #expect(t.replicas.count == 1)
            #expect((t.loaded.tileShare != nil) == share)
            let losses = try (1...3).map { try t.step($0).loss }
            if let s = t.loaded.tileShare { #expect(s.sharedTiles > 0) }
            runs.append((losses, t.model.store.grads.array,
                         Array(UnsafeBufferPointer(start: t.model.store.values, count: t.model.store.trainableCount)),
                         t.evaluate()))
        }
        #expect(runs[0].losses == runs[1].losses, "\(runs[0].losses) vs \(runs[1].losses)")
        #expect(runs[0].grads == runs[1].grads && runs[0].grads.contains { $0 != 0 }, "gradients differ")
        #expect(runs[0].values == runs[1].values, "weights differ")
        #expect(runs[0].dev == runs[1].dev)
    }

    @Test("gradient buckets leave during the backward, not after it")
    func bucketsOverlapBackward() throws {
        var o = try Self.options(.full, data: try Self.corpus("buckets"), steps: 1)
        o.bucketMB = 4.0 * 2048 / 1_048_576  // 2048-element buckets
        let t = try makeTrainer(o)
        // After the last layer (the first the backward finishes) some buckets are final already.
        let layers = t.model.config.numHiddenLayers
        #expect(t.readyOffset.count == layers)
        for l in 1..<layers { #expect(t.readyOffset[l - 1] >= t.readyOffset[l]) }
        #expect(t.readyOffset[layers - 1] >= 2048)
        #expect(t.readyOffset[0] < t.model.store.trainableCount)  // the embedding completes last
        t.exchange.begin()
        t.exchange.ready(upTo: t.readyOffset[layers - 1])
        #expect(t.exchange.launched >= 1)
        #expect(t.exchange.launched < t.exchange.buckets.count)
        t.exchange.finish()
        #expect(t.exchange.launched == t.exchange.buckets.count)
    }

    @Test("early stopping ends on the best dev loss and keeps that checkpoint")
    func earlyStopping() throws {
        let data = try Self.opposedCorpus("early")  // dev loss turns up by construction
        var o = try Self.options(.full, data: data.train, steps: 60)
        o.devData = data.dev
        o.minLRRatio = 1
        o.evalEvery = 4
        o.patience = 2
        let t = try makeTrainer(o)
        let s = try t.run().summary
        let best = try #require(s.bestStep)
        #expect(s.earlyStopped == true)
        let done = s.stepsDone
        #expect(done == best + 2 * 4, "stops two evaluations after the best")
        // the dev losses logged: the best one is the minimum, and the summary reports it
        let devs = try devLosses(runDir: o.runDir)
        let minimum = try #require(devs.min { $0.1 < $1.1 })
        #expect(minimum.0 == best)
        #expect(abs(s.devLoss - minimum.1) < 1e-6)
        // the model holds the best weights again: evaluating now gives the best dev loss
        #expect(abs(t.evaluate() - minimum.1) < 1e-5)
        #expect(CheckpointFiles.pointer(o.runDir + "/checkpoints", CheckpointFiles.bestName) == CheckpointFiles.stepName(best))
    }

    @Test("without --patience the run that early stopping ends trains every step, ends on its final weights and still reports the best step")
    func noEarlyStopping() throws {
        let data = try Self.opposedCorpus("no-early")
        var o = try Self.options(.full, data: data.train, steps: 60)
        o.devData = data.dev
        o.minLRRatio = 1  // a constant rate: what follows what keeps sharpening to the end
        o.evalEvery = 4

        let t = try makeTrainer(o)
        let outcome = try t.run()
        let s = outcome.summary
        let devs = try devLosses(runDir: o.runDir)
        let minimum = try #require(devs.min { $0.1 < $1.1 })
        let last = try #require(devs.last)
        // The premise, not the feature: the dev loss falls, then turns up well before the last step.
        try #require(last.0 == 60 && minimum.0 < 60 && last.1 > minimum.1 + 1 && minimum.1 < s.initialDevLoss - 1,
                     "premise failed, the corpus no longer opposes train and dev: dev curve \(devs)")
        #expect(s.earlyStopped == false && s.stepsDone == 60 && s.bestStep == nil)
        #expect(outcome.bestStep == minimum.0)
        // the weights are the final ones: the summary's and a fresh evaluation's dev loss are the last step's
        #expect(abs(s.devLoss - last.1) < 1e-6)
        #expect(abs(t.evaluate() - last.1) < 1e-5)
        // no best checkpoint is kept without early stopping
        #expect(CheckpointFiles.pointer(o.runDir + "/checkpoints", CheckpointFiles.bestName) == nil)

        // The same run with --patience 2 stops early, on the same best step up to where it stopped.
        var stopping = o
        stopping.patience = 2
        stopping.runDir = o.runDir + "-patience"
        let stopped = try makeTrainer(stopping).run().summary
        #expect(stopped.earlyStopped && stopped.stepsDone < 60, "with --patience 2: \(stopped.stepsDone) steps")
        #expect(stopped.bestStep == devs.filter { $0.0 <= stopped.stepsDone }.min { $0.1 < $1.1 }?.0)
    }

    @Test("AdamW matches torch.optim.AdamW's update rule, no decay on norms")
    func adamw() {
        let specs = [ParamSpec(name: "w", shape: [3], trainable: true, decay: true),
                     ParamSpec(name: "norm.weight", shape: [1], trainable: true, decay: false)]
        let store = ParameterStore(specs: specs)
        var cfg = AdamWConfig()
        cfg.weightDecay = 0.1
        let opt = AdamW(config: cfg, store: store)
        let p0: [Double] = [1, -2, 0.5, 1]
        for i in 0..<4 { store.values[i] = Float(p0[i]) }
        let grads: [[Double]] = [[0.1, -0.2, 0.3, 0.4], [-0.5, 0.1, 0.0, 0.2]]
        // Reference in double: p ← p(1 − lr·wd); m, v moments; p ← p − lr·m̂/(√v̂ + eps)
        var p = p0, m = [Double](repeating: 0, count: 4), v = m
        let lr = 0.01
        for (t, g) in grads.enumerated() {
            for i in 0..<4 { store.grads[i] = Float(g[i]) }
            opt.step(values: store.values, grads: store.grads.ptr, lr: Float(lr))
            for i in 0..<4 {
                if i < 3 { p[i] *= 1 - lr * 0.1 }
                m[i] = 0.9 * m[i] + 0.1 * g[i]
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i]
                let mh = m[i] / (1 - pow(0.9, Double(t + 1))), vh = v[i] / (1 - pow(0.999, Double(t + 1)))
                p[i] -= lr * mh / (vh.squareRoot() + 1e-8)
            }
        }
        for i in 0..<4 { #expect(abs(Double(store.values[i]) - p[i]) < 1e-6, "element \(i)") }
    }

    @Test("AdamW's 8-lane body and scalar tail give the scalar formula's bits, on one worker or three, and report a non-finite update wherever it lands")
    func adamwVectorised() {
        // Two parts of at least 2¹⁶ elements with three workers, and a tail of 5 after the last 8.
        let n = 2 * 65_536 + 8 * 3 + 5
        let specs = [ParamSpec(name: "w", shape: [n], trainable: true, decay: true)]
        var g = SplitMix64(seed: 11)
        let w0 = (0..<n).map { _ in g.normal() }, grads = [(0..<n).map { _ in g.normal() }, (0..<n).map { _ in g.normal() }]
        var cfg = AdamWConfig()
        cfg.weightDecay = 0.01
        let lr: Float = 0.003, scale: Float = 0.7
        func run(workers: Int, poison: Int? = nil) -> (values: [Float], finite: [Bool]) {
            let store = ParameterStore(specs: specs)
            for i in 0..<n { store.values[i] = w0[i] }
            let opt = AdamW(config: cfg, store: store)
            let saved = Parallel.workers
            Parallel.workers = workers
            defer { Parallel.workers = saved }
            var finite: [Bool] = []
            for (t, gs) in grads.enumerated() {
                for i in 0..<n { store.grads[i] = gs[i] }
                if t == 1, let poison { store.grads[poison] = .infinity }
                finite.append(opt.step(values: store.values, grads: store.grads.ptr, lr: lr, gradScale: scale))
            }
            return ((0..<n).map { store.values[$0] }, finite)
        }
        // The reference: torch's rule in Float, one element at a time, in the kernel's order.
        var p = w0, m = [Float](repeating: 0, count: n), v = m
        for (t, gs) in grads.enumerated() {
            let bc1 = 1 - Foundation.pow(Float(0.9), Float(t + 1)), bc2 = 1 - Foundation.pow(Float(0.999), Float(t + 1))
            let stepSize = lr / bc1, invSqrtBc2 = 1 / bc2.squareRoot()
            for i in 0..<n {
                p[i] *= 1 - lr * cfg.weightDecay
                let gi = gs[i] * scale
                m[i] = 0.9 * m[i] + (1 - 0.9) * gi
                v[i] = 0.999 * v[i] + (1 - 0.999) * gi * gi
                p[i] -= stepSize * m[i] / (v[i].squareRoot() * invSqrtBc2 + 1e-8)
            }
        }
        let one = run(workers: 1), three = run(workers: 3)
        #expect(one.values == p, "one worker: \(zip(one.values, p).filter { $0 != $1 }.count) elements differ from the scalar formula")
        #expect(three.values == p, "three workers")
        #expect(one.finite == [true, true] && three.finite == [true, true])
        // an infinite gradient makes its weight NaN: in the first part's body, the second part, the tail
        for at in [3, 65_536 + 17, n - 1] {
            for workers in [1, 3] {
                #expect(run(workers: workers, poison: at).finite == [true, false], "poisoned at \(at), \(workers) workers")
            }
        }
    }

    @Test("Σ g² in 8 lanes: within float rounding of a double sum, the same bits on one worker or three")
    func sumSquaresVectorised() {
        let n = 70 * 4096 + 13  // more than the 64 blocks a worker takes, and a short last block
        var g = SplitMix64(seed: 12)
        let x = FloatBuffer((0..<n).map { _ in g.normal() })
        let exact = (0..<n).reduce(0.0) { $0 + Double(x[$1]) * Double(x[$1]) }
        let saved = Parallel.workers
        defer { Parallel.workers = saved }
        Parallel.workers = 1
        let one = GradClip.sumSquares(x.ptr, count: n)
        Parallel.workers = 3
        let three = GradClip.sumSquares(x.ptr, count: n)
        #expect(one == three)
        #expect(abs(one - exact) < 1e-5 * exact, "\(one) against \(exact)")
    }

    @Test func schedule() {
        let s = LRSchedule(lr: 1, warmup: 10, total: 110, minLR: 0.1)
        #expect(s.at(1) == 0.1)
        #expect(s.at(10) == 1)
        #expect(abs(s.at(60) - 0.55) < 1e-6)   // half way through the cosine
        #expect(abs(s.at(110) - 0.1) < 1e-6)
        #expect(s.at(30) > s.at(40))
    }

    @Test func clipping() {
        #expect(GradClip.scale(norm: 0.5, maxNorm: 1) == 1)
        #expect(abs(GradClip.scale(norm: 4, maxNorm: 1) - 0.25) < 1e-6)
        #expect(GradClip.scale(norm: 4, maxNorm: 0) == 1)
    }

    @Test("the corpus split is deterministic, disjoint and covers every block")
    func corpusSplit() throws {
        let dir = try Self.corpus("split")
        let a = try Corpus(path: dir, tokenizer: ByteTokenizer(), devPercent: 20)
        let b = try Corpus(path: dir, tokenizer: ByteTokenizer(), devPercent: 20)
        #expect(a.train == b.train && a.dev == b.dev)
        #expect(!a.dev.isEmpty && !a.train.isEmpty)
        #expect(a.train.count + a.dev.count == a.bytes + 2 * a.documents)  // bytes + BOS/EOS per file
    }

    @Test("the batch of a step is fixed by seed and step, not by who asks")
    func sampler() throws {
        let s = try Sampler(tokens: (0..<1000).map { Int32($0 % 250) }, seqLen: 16, seed: 9)
        var x1 = [Int32](repeating: 0, count: 16), y1 = x1, x2 = x1, y2 = x1
        s.fill(step: 3, index: 5, inputs: &x1, targets: &y1)
        s.fill(step: 3, index: 5, inputs: &x2, targets: &y2)
        #expect(x1 == x2 && y1 == y2)
        #expect(Array(x1[1...]) == Array(y1[..<15]))  // targets are the next tokens
        s.fill(step: 4, index: 5, inputs: &x2, targets: &y2)
        #expect(x1 != x2)
    }

    @Test("a tensor slice survives a protobuf-c round trip; corrupt bytes are refused")
    func protoSlice() throws {
        let r = TensorSliceRecord(name: "model.norm.weight", shape: [4, 3], start: 2, values: [1, -2.5, 3e-7, 0])
        let bytes = r.encoded()
        #expect(try TensorSliceRecord(decoding: bytes) == r)
        #expect(throws: LoraDistError.self) { try TensorSliceRecord(decoding: Data([0xFF, 0xFF, 0xFF])) }
    }

    @Test func byteTokenizer() {
        let t = ByteTokenizer()
        let s = "naïve café — ok"
        #expect(t.decode(t.encode(s)) == s)
        #expect(t.encode("A") == [65])
    }
}
