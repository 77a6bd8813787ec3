import Foundation

/// `lora-dist bench step`: where the time of one training step goes, and how
/// the achieved FLOP/s compare with a plain sgemm measured in the same run.
public struct StepBenchmark {
    public var forwardMs = 0.0, backwardMs = 0.0, optimizerMs = 0.0
    public var flopsPerStep = 0
    public var sgemmGflops = 0.0
    public var tokensPerStep = 0
    public var trainable = 0, total = 0
    public var threads = 0

    public var stepMs: Double { forwardMs + backwardMs + optimizerMs }
    public var gflops: Double { Double(flopsPerStep) / (stepMs * 1e6) }

    public var report: String {
        String(format: """
            threads %d, %d tokens/step, %@ of %@ parameters trainable
            forward   %8.1f ms
            backward  %8.1f ms
            optimizer %8.1f ms
            step      %8.1f ms   %.0f tokens/s
            training  %.1f GFLOP/s (%.2f GFLOP/step in sgemm)
            sgemm     %.1f GFLOP/s (1024³, same run)
            ratio     %.0f %% of sgemm
            sgemm FLOPs per step: %d
            """, threads, tokensPerStep, trainable.formatted(), total.formatted(), forwardMs, backwardMs, optimizerMs,
                   stepMs, Double(tokensPerStep) / stepMs * 1000, gflops, Double(flopsPerStep) / 1e9, sgemmGflops,
                   100 * gflops / sgemmGflops, flopsPerStep)
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

    public static func run(model name: String, lora: LoRAConfig?, batch: Int, seqLen: Int, steps: Int) throws -> StepBenchmark {
        let config = try ModelConfig.load(name)
        let model = try LlamaModel(config: config, lora: lora, maxBatch: batch, seqLen: seqLen)
        model.initialize(seed: 1)
        let opt = AdamW(config: AdamWConfig(), store: model.store)
        let ids = UnsafeMutablePointer<Int32>.allocate(capacity: batch * seqLen)
        let tg = UnsafeMutablePointer<Int32>.allocate(capacity: batch * seqLen)
        defer { ids.deallocate(); tg.deallocate() }
        var g = SplitMix64(seed: 2)
        for i in 0..<(batch * seqLen) { ids[i] = Int32(g.below(config.vocabSize)); tg[i] = Int32(g.below(config.vocabSize)) }
        var r = StepBenchmark()
        r.tokensPerStep = batch * seqLen
        r.trainable = model.trainableParams
        r.total = model.totalParams
        r.threads = BLAS.threads
        func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }
        var fw = [Double](), bw = [Double](), op = [Double]()
        for s in 0...steps {
            model.store.grads.zero()
            let f0 = FlopCounter.sgemm
            let t0 = now()
            model.forward(ids: ids, batch: batch)
            _ = model.loss(targets: tg, batch: batch)
            let t1 = now()
            model.backward(ids: ids, targets: tg, batch: batch, scale: 1 / Float(batch * seqLen))
            let t2 = now()
            opt.step(values: model.store.trainableValues, grads: model.store.grads.ptr, lr: 1e-4)
            let t3 = now()
            if s > 0 {  // step 0 warms caches and page-faults the buffers in
                fw.append(t1 - t0); bw.append(t2 - t1); op.append(t3 - t2)
                r.flopsPerStep = FlopCounter.sgemm - f0
            }
        }
        func median(_ x: [Double]) -> Double { x.sorted()[x.count / 2] }
        r.forwardMs = median(fw); r.backwardMs = median(bw); r.optimizerMs = median(op)
        r.sgemmGflops = sgemmGflops()
        return r
    }
}
