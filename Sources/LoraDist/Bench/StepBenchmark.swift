import CPUFeatures
import Foundation

/// `lora-dist bench step`: the trainer's own optimizer step (sampling, forward,
/// backward, gradient exchange, clipping, AdamW, publishing the shared weights),
/// timed on every rank, with the time split by kernel family and the achieved
/// FLOP/s set against a plain sgemm measured in the same run on the same ranks.
public struct StepBenchmark {
    public struct Options {
        public var model = "bench"
        public var mode = TrainMode.full
        public var lora: LoRAConfig?
        public var batch = 8, seqLen = 256     // global batch, split over the ranks
        public var steps = 3                   // timed, after one warm-up step
        public var replicas: Int?              // per rank (TrainOptions.replicas)
        public var threads: Int?               // per rank (TrainOptions.threads)
        public var yardstick = true            // also time a 1024³ sgemm (sgemmGflops)
        public var recompute = false           // TrainOptions.recompute
        public var microBatch: Int?            // TrainOptions.microBatch
        public var unfused = false             // q, k, v and gate, up as separate products (LlamaModel.fuseProjections)
        public init() {}
    }

    public var ranks = 1, threads = 1, replicas = 1
    public var unfused = false
    public var tokensPerStep = 0
    public var trainable = 0, total = 0
    public var stepMs = 0.0                    // median over the timed steps (slowest rank)
    public var sections: [(String, Double)] = []  // ms per step on rank 0, by kind of work
    public var flopsPerStep = 0                // sgemm FLOPs of all ranks (Int is 64-bit; summed in Double, exact below 2^53)
    public var sgemmGflops = 0.0               // Σ over ranks of one 1024³ sgemm each, run at once (median of the samples)
    public var sgemmSamples: [Double] = []     // that yardstick before the first timed step and after each
    public var allocatedBytes = 0              // by the kernels during the timed steps
    public var peakRSSBytes = 0.0              // Σ over ranks of each one's peak resident set
    public var nodeMemoryBytes = 0.0           // Σ PSS over the node at the end (shared pages once)
    /// Rank 0's main thread's sgemm calls (and LowRank's products) by shape, per step, slowest in
    /// total first.
    public var gemmShapes: [(shape: Profile.GemmShape, calls: Double, ms: Double)] = []
    /// How many shapes the report and JSON list (the rest are summed in one line).
    public var shownShapes = 12

    public var tokensPerSecond: Double { Double(tokensPerStep) / stepMs * 1000 }
    public var gflops: Double { Double(flopsPerStep) / (stepMs * 1e6) }

    public static func run(_ o: Options, cluster: Cluster) throws -> StepBenchmark {
        // A corpus of random bytes: the bench config has a byte vocabulary, and the speed of a
        // step does not depend on what the tokens say. Its path and content are the same on every
        // rank and in every run of this size, so the ranks share one token file, reused next time.
        var g = SplitMix64(seed: 7)
        let bytes = (0..<max(64 * o.seqLen * 20, 1 << 16)).map { _ in UInt8(32 + g.below(95)) }
        let corpus = NSTemporaryDirectory() + "lora-dist-bench-corpus-\(bytes.count).txt"
        try Files.writeAtomically(Data(bytes), to: corpus)
        var t = TrainOptions()
        t.mode = o.mode; t.lora = o.lora; t.model = o.model; t.data = corpus
        t.batch = o.batch; t.seqLen = o.seqLen; t.steps = o.steps + 1; t.warmup = 1; t.lr = 1e-4
        t.runDir = NSTemporaryDirectory() + "lora-dist-bench-run-\(getpid())"; t.quiet = true
        t.replicas = o.replicas; t.threads = o.threads; t.recompute = o.recompute; t.microBatch = o.microBatch
        LlamaModel.fuseProjections = !o.unfused
        defer { LlamaModel.fuseProjections = true }
        let trainer = try Trainer(options: t, cluster: cluster)

        var r = StepBenchmark()
        r.ranks = cluster.size
        r.unfused = o.unfused
        r.threads = trainer.threads
        r.replicas = trainer.loaded.replicaCount
        r.tokensPerStep = o.batch * o.seqLen
        r.trainable = trainer.model.trainableParams
        r.total = trainer.model.totalParams
        var times: [Double] = [], waits: [Double] = [], flops = 0
        _ = try trainer.step(1)  // warms caches and page-faults the buffers in
        // The yardstick uses all of the rank's threads in one sgemm (outside a step's replica
        // phase the rank's budget gives them all to one model), even when the step ran them as
        // replicas with one BLAS thread each. It is sampled before the first timed step and
        // after each, and its median taken like the steps': on a shared machine whose speed
        // drifts, a yardstick measured once, at another moment, moves the ratio by ±15 %.
        func sampleYardstick() {
            guard o.yardstick else { return }
            cluster.barrier()
            r.sgemmSamples.append(cluster.sum([sgemmGflops(repeats: 3)])[0])
        }
        sampleYardstick()
        Profile.reset()
        for s in 0..<o.steps {
            let f0 = FlopCounter.sgemm
            Profile.enabled = true
            let res = try trainer.step(s + 2)
            Profile.enabled = false
            flops += FlopCounter.sgemm - f0
            times.append(res.seconds)
            waits.append(res.commWait)
            sampleYardstick()
        }
        // The slowest rank sets the pace of a synchronous step. The same median as the
        // yardstick's (before, an even count took the slower middle step: with --steps 2 the
        // slower of the two).
        let slowest = cluster.maximum(times)
        r.stepMs = median(slowest) * 1000
        let per = 1000 / Double(o.steps)
        var named = Profile.Section.allCases.map { ("\($0)", Profile.seconds($0) * per) }
        named.append(("exchange wait", waits.reduce(0, +) * per))
        let mine = times.reduce(0, +) * per
        named.append(("other", max(0, mine - named.reduce(0) { $0 + $1.1 })))
        r.sections = named
        r.allocatedBytes = Profile.allocatedBytes
        r.gemmShapes = Profile.gemms.map { (shape: $0.key, calls: Double($0.value.calls) / Double(o.steps), ms: $0.value.seconds * per) }
            .sorted { ($0.ms, $1.shape) > ($1.ms, $0.shape) }
        r.flopsPerStep = Int(cluster.sum([Double(flops) / Double(o.steps)])[0])
        if !r.sgemmSamples.isEmpty { r.sgemmGflops = median(r.sgemmSamples) }
        r.peakRSSBytes = cluster.sum([peakRSS()])[0]
        r.nodeMemoryBytes = NodeMemory.nodeBytes(cluster)
        try? FileManager.default.removeItem(atPath: t.runDir)
        return r
    }

    /// The middle value (the mean of the two middle ones for an even count).
    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted(), n = s.count
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
    }

    /// This process's peak resident set (getrusage), in bytes.
    static func peakRSS() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_maxrss) * 1024
    }

    public var report: String {
        // Counts go in as %ld (64-bit): %d takes 32 bits of an Int, which is how a real model's
        // FLOPs once printed as "-155189248" (StepBenchmarkTests).
        var s = String(format: "%ld rank(s) × %ld thread(s) (%@), %ld tokens/step, %@ of %@ parameters trainable\n",
                       ranks, threads, replicas > 1 ? "\(replicas) model replicas, 1 BLAS thread each" : "one model",
                       tokensPerStep, trainable.formatted(), total.formatted())
        if unfused { s += "q, k, v and gate, up as separate products (--unfused)\n" }
        s += "OpenBLAS kernels: \(BLASCore.description); element-wise code compiled for \(CPUFeatures.libraryTarget)\n"
        s += "time per step on rank 0, by kind of work:\n"
        let sum = sections.reduce(0) { $0 + $1.1 }
        for (name, ms) in sections {
            s += "  " + name.padding(toLength: 14, withPad: " ", startingAt: 0)
                + String(format: " %8.1f ms  %5.1f %%\n", ms, 100 * ms / max(sum, 1e-9))
        }
        s += String(format: """
            step      %8.1f ms (median, slowest rank)   %.0f tokens/s
            training  %.1f GFLOP/s (%.2f GFLOP/step in sgemm)
            sgemm     %.1f GFLOP/s (1024³ on every rank at once, same run%@)
            ratio     %.0f %% of sgemm
            allocated %ld bytes in the timed steps
            memory    peak RSS %.0f MB (Σ ranks), node PSS %.0f MB
            sgemm FLOPs per step: %ld
            """, stepMs, tokensPerSecond, gflops, Double(flopsPerStep) / 1e9, sgemmGflops, yardstickSpread,
                          100 * gflops / sgemmGflops, allocatedBytes, peakRSSBytes / 1e6, nodeMemoryBytes / 1e6, flopsPerStep)
        s += "\n" + shapeReport
        return s
    }

    /// ", median of N between the steps, lowest-highest" when it was sampled more than once.
    var yardstickSpread: String {
        guard sgemmSamples.count > 1, let lo = sgemmSamples.min(), let hi = sgemmSamples.max() else { return "" }
        return String(format: ", median of %ld between the steps, %.0f-%.0f", sgemmSamples.count, lo, hi)
    }

    /// The yardstick's GFLOP/s for the threads one sgemm call of a step uses (one under replicas).
    var gemmYardstick: Double { sgemmGflops / Double(ranks * threads) * Double(replicas > 1 ? 1 : threads) }

    /// GFLOP/s of `flops` FLOPs in `ms` milliseconds.
    static func gflops(_ flops: Double, ms: Double) -> Double { flops / max(ms * 1e6, 1e-12) }

    /// The shapes where sgemm time goes, against the yardstick: a shape far below it is where
    /// OpenBLAS's overhead (packing, small k or n) and not the arithmetic sets the pace.
    var shapeReport: String {
        let total = gemmShapes.reduce(0) { $0 + $1.ms }
        var s = String(format: "sgemm by shape on rank 0's main thread (m × n × k, op(A) op(B)), per step; yardstick %.1f GFLOP/s per call:\n",
                       gemmYardstick)
        if gemmShapes.contains(where: { $0.shape.kernel != .sgemm }) {
            s += "(lowrank: the adapter's hand kernel, not OpenBLAS; lowrank-mid+dB: s·dy·B of this shape and dB += s·dyᵀ·xa in one pass, both products' FLOPs)\n"
        }
        s += "       ms   share   calls   GFLOP/s  of yardstick  shape\n"
        func line(_ ms: Double, _ calls: Double, _ g: Double, _ name: String) -> String {
            String(format: "  %7.1f  %5.1f %%  %6.0f  %8.1f  %9.0f %%    %@\n", ms, 100 * ms / max(total, 1e-9), calls, g,
                   100 * g / max(gemmYardstick, 1e-9), name)
        }
        for g in gemmShapes.prefix(shownShapes) {
            s += line(g.ms, g.calls, Self.gflops(g.calls * Double(g.shape.flops), ms: g.ms), g.shape.description)
        }
        let rest = gemmShapes.dropFirst(shownShapes)
        if !rest.isEmpty {
            let ms = rest.reduce(0) { $0 + $1.ms }, flops = rest.reduce(0) { $0 + $1.calls * Double($1.shape.flops) }
            s += line(ms, rest.reduce(0) { $0 + $1.calls }, Self.gflops(flops, ms: ms), "\(rest.count) other shapes")
        }
        return s
    }

    /// One line for scripts (tools/bench-vs-pytorch.sh).
    public var json: [String: Any] {
        ["side": "lora-dist", "ranks": ranks, "threads": threads, "replicas": replicas, "tokens_per_step": tokensPerStep,
         "tokens_per_s": tokensPerSecond, "step_ms": stepMs, "training_gflops": gflops, "sgemm_gflops": sgemmGflops,
         "sgemm_ratio": gflops / sgemmGflops, "sgemm_gflops_samples": sgemmSamples, "trainable": trainable, "total": total, "unfused": unfused,
         "peak_rss_bytes": peakRSSBytes, "node_memory_bytes": nodeMemoryBytes, "allocated_bytes": allocatedBytes,
         "sections_ms": Dictionary(uniqueKeysWithValues: sections), "blas_core": BLASCore.name,
         "library_target": CPUFeatures.libraryTarget,
         "sgemm_shapes": gemmShapes.prefix(shownShapes).map {
             ["shape": $0.shape.description, "kernel": $0.shape.kernel.name, "flops": $0.shape.flops, "calls": $0.calls,
              "ms": $0.ms, "gflops": Self.gflops($0.calls * Double($0.shape.flops), ms: $0.ms)] as [String: Any]
         }]
    }

    /// sgemm GFLOP/s on square n × n matrices: the best of a few runs.
    public static func sgemmGflops(n: Int = 1024, repeats: Int = 5) -> Double {
        let a = FloatBuffer(n * n), b = FloatBuffer(n * n), c = FloatBuffer(n * n)
        var g = SplitMix64(seed: 1)
        for i in 0..<(n * n) { a[i] = g.uniform(); b[i] = g.uniform() }
        var best = Double.infinity
        for _ in 0..<repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            sgemm(m: n, n: n, k: n, a: a.ptr, lda: n, b: b.ptr, ldb: n, c: c.ptr, ldc: n)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0))
        }
        return 2 * Double(n * n * n) / best
    }
}
