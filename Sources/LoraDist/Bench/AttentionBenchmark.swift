import CPUFeatures
import Foundation

/// `lora-dist bench attention`: Attention.forward and Attention.backward alone, on random
/// inputs of one shape, laid out and threaded as a training step runs them: q, k, v (and dq,
/// dk, dv) are the column blocks of one fused projection output per layer (DecoderLayer), and
/// one model on `threads` threads spreads the work units over `threads` lanes with that many
/// BLAS threads (ThreadBudget without replicas). A step is the forward of `layers` layers, each
/// with its own inputs, output and log-sum-exp, then their backward in reverse order (the
/// gradients' buffers shared, as a model's backward scratch is).
///
/// FLOPs are counted two ways: as run (what went to sgemm, FlopCounter: the forward's two
/// products and the backward's five, the rebuilt Q·Kᵀ included, over the keys of a query's
/// block of 64: from the first its first query sees to the block's end) and useful (the count figures for PyTorch's SDPA use: forward two
/// products, backward four, over the keys each query sees).
public struct AttentionBenchmark {
    public struct Options {
        public var batch = 4, seqLen = 512
        public var heads = 9, kvHeads = 3, headDim = 64      // SmolLM2-135M
        public var window: Int?
        public var threads = 1
        public var steps = 3                                  // timed, after one warm-up step
        public var layers = 1
        public init() {}

        /// Every value against its range, naming the flag; then whether the buffers fit in the
        /// memory the node has available.
        public func validate() throws {
            func int(_ flag: String, _ v: Int, _ r: ClosedRange<Int>) throws {
                guard r.contains(v) else { throw LoraDistError("\(flag) must be in \(r.lowerBound)...\(r.upperBound), got \(v)") }
            }
            try int("--batch", batch, 1...100_000)
            try int("--seq", seqLen, 1...1 << 20)
            try int("--heads", heads, 1...1024)
            try int("--kv-heads", kvHeads, 1...1024)
            try int("--head-dim", headDim, 1...1024)
            if let window { try int("--window", window, 1...1 << 20) }
            try int("--threads", threads, 1...1024)
            try int("--steps", steps, 1...100_000)
            try int("--layers", layers, 1...1000)
            guard heads % kvHeads == 0 else {
                throw LoraDistError("--heads \(heads) must be a multiple of --kv-heads \(kvHeads) (each key/value head serves a group of query heads)")
            }
            if let available = NodeMemory.availableBytes(), bufferBytes + scratchBytes > available {
                throw LoraDistError(String(format: "bench attention needs %.1f GB for this shape, the node has %.1f GB available",
                                           (bufferBytes + scratchBytes) / 1e9, available / 1e9))
            }
        }

        /// The shape as a training step runs it: lanes = threads, q, k, v rows `width` apart.
        public var shape: Attention.Shape {
            var s = Attention.Shape(batch: batch, seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim,
                                    window: window, lanes: threads)
            s.qLD = width; s.kLD = width; s.vLD = width
            return s
        }
        /// Columns of the fused q, k, v projection output.
        var width: Int { (heads + 2 * kvHeads) * headDim }
        var rows: Int { batch * seqLen }
        /// Bytes of the inputs and outputs: per layer q, k, v, the output and the log-sum-exp;
        /// once the upstream gradient and dq, dk, dv.
        public var bufferBytes: Double {
            let n = Double(rows), qd = Double(heads * headDim), w = Double(width)
            let perLayer = n * w + n * qd + Double(batch * heads) * Double(seqLen)
            return 4 * (Double(layers) * perLayer + n * qd + n * w)
        }
        /// Attention's own scratch (Shape.scratchFloats), in bytes.
        public var scratchBytes: Double { 4 * shape.scratchFloats }
    }

    public var options = Options()
    public var blasThreads = 1
    /// Per step, each timed step's: forward, backward (all layers), milliseconds.
    public var forwardMs: [Double] = [], backwardMs: [Double] = []
    /// FLOPs per step sent to sgemm (measured) and useful (counted from the shape).
    public var asRunForward = 0, asRunBackward = 0
    public var usefulForward = 0.0, usefulBackward = 0.0
    /// The main thread's time per step (Profile): attention's own work and its sgemm calls. With
    /// several lanes the units run on worker threads, which Profile does not follow.
    public var attentionOwnMs = 0.0, sgemmMs = 0.0
    public var startRSSBytes = 0.0, peakRSSBytes = 0.0

    public var medianForwardMs: Double { StepBenchmark.median(forwardMs) }
    public var medianBackwardMs: Double { StepBenchmark.median(backwardMs) }
    /// The median of the steps' totals (not the sum of the two medians).
    public var medianTotalMs: Double { StepBenchmark.median(zip(forwardMs, backwardMs).map { $0 + $1 }) }
    public var asRun: Int { asRunForward + asRunBackward }
    public var useful: Double { usefulForward + usefulBackward }

    /// Σ over sequences, query heads and queries of the keys the query sees.
    public static func visiblePairs(_ s: Attention.Shape) -> Double {
        var perHead = 0.0
        for t in 0..<s.seqLen { perHead += Double(t + 1 - s.firstKey(t)) }
        return perHead * Double(s.batch) * Double(s.heads)
    }

    /// Useful FLOPs of one layer: 2·D per (query, visible key) per product; two products
    /// forward (Q·Kᵀ, P·V), four backward (dO·Vᵀ, Pᵀ·dO, dS·K, dSᵀ·Q).
    public static func usefulFlops(_ s: Attention.Shape) -> (forward: Double, backward: Double) {
        let perProduct = 2 * Double(s.headDim) * visiblePairs(s)
        return (2 * perProduct, 4 * perProduct)
    }

    public static func run(_ o: Options) throws -> AttentionBenchmark {
        try o.validate()
        var r = AttentionBenchmark()
        r.options = o
        BLAS.setThreads(o.threads)
        r.blasThreads = BLAS.threads
        r.startRSSBytes = residentBytes()
        let s = o.shape, n = o.rows, w = o.width, qd = o.heads * o.headDim, kvd = o.kvHeads * o.headDim
        // Random inputs in [-1, 1): each layer's fused q, k, v; one upstream gradient.
        var g = SplitMix64(seed: 11)
        func random(_ count: Int) -> FloatBuffer {
            let b = FloatBuffer(count)
            for i in 0..<count { b[i] = 2 * g.uniform() - 1 }
            return b
        }
        let qkv = (0..<o.layers).map { _ in random(n * w) }
        let out = (0..<o.layers).map { _ in FloatBuffer(n * qd) }
        let lse = (0..<o.layers).map { _ in FloatBuffer(s.lseCount) }
        let dout = random(n * qd), dqkv = FloatBuffer(n * w), scratch = FloatBuffer(s.scratchCount)

        func forward() {
            for l in 0..<o.layers {
                let p = qkv[l].ptr
                Attention.forward(out: out[l].ptr, lse: lse[l].ptr, q: p, k: p + qd, v: p + qd + kvd, scratch: scratch.ptr, s)
            }
        }
        func backward() {
            for l in (0..<o.layers).reversed() {
                let p = qkv[l].ptr, d = dqkv.ptr
                Attention.backward(dq: d, dk: d + qd, dv: d + qd + kvd, dout: dout.ptr, out: out[l].ptr, lse: lse[l].ptr,
                                   q: p, k: p + qd, v: p + qd + kvd, scratch: scratch.ptr, s)
            }
        }
        forward(); backward()                       // warms caches and page-faults the buffers in
        Profile.reset()
        Profile.enabled = true
        var fFlops = 0, bFlops = 0
        for _ in 0..<o.steps {
            let f0 = FlopCounter.sgemm, t0 = Profile.now()
            forward()
            let f1 = FlopCounter.sgemm, t1 = Profile.now()
            backward()
            let t2 = Profile.now()
            fFlops += f1 - f0; bFlops += FlopCounter.sgemm - f1
            r.forwardMs.append((t1 - t0) * 1000)
            r.backwardMs.append((t2 - t1) * 1000)
        }
        Profile.enabled = false
        r.asRunForward = fFlops / o.steps
        r.asRunBackward = bFlops / o.steps
        let u = usefulFlops(s)
        r.usefulForward = Double(o.layers) * u.forward
        r.usefulBackward = Double(o.layers) * u.backward
        r.attentionOwnMs = Profile.seconds(.attention) * 1000 / Double(o.steps)
        r.sgemmMs = Profile.seconds(.sgemm) * 1000 / Double(o.steps)
        r.peakRSSBytes = StepBenchmark.peakRSS()
        return r
    }

    /// This process's resident set now (/proc/self/status VmRSS), in bytes; 0 where unknown.
    static func residentBytes() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb * 1024
    }

    public var report: String {
        let o = options, total = medianTotalMs
        let window = o.window.map { ", sliding window \($0)" } ?? ""
        var s = String(format: "attention %ld × %ld, %ld heads over %ld key/value heads, head dim %ld, causal%@; %ld layer(s) per step\n",
                       o.batch, o.seqLen, o.heads, o.kvHeads, o.headDim, window, o.layers)
        s += "\(o.threads) thread(s): \(options.shape.lanes) lane(s), \(blasThreads) BLAS thread(s) (one model, as train runs it without replicas)\n"
        s += "OpenBLAS kernels: \(BLASCore.description); element-wise code compiled for \(CPUFeatures.libraryTarget)\n"
        s += String(format: "per step, median of %ld after 1 warm-up:\n", o.steps)
        s += "              ms   GFLOP as run  GFLOP useful  GFLOP/s as run  GFLOP/s useful\n"
        func line(_ name: String, _ ms: Double, _ run: Double, _ use: Double) -> String {
            name.padding(toLength: 9, withPad: " ", startingAt: 0)
                + String(format: " %8.1f  %12.3f  %12.3f  %14.1f  %14.1f\n", ms, run / 1e9, use / 1e9,
                         StepBenchmark.gflops(run, ms: ms), StepBenchmark.gflops(use, ms: ms))
        }
        s += line("forward", medianForwardMs, Double(asRunForward), usefulForward)
        s += line("backward", medianBackwardMs, Double(asRunBackward), usefulBackward)
        s += line("total", total, Double(asRun), useful)
        let main = attentionOwnMs + sgemmMs
        s += String(format: "main thread's time per step: attention's own %.1f ms (%.0f %%), its sgemm calls %.1f ms (%.0f %%)%@\n",
                    attentionOwnMs, 100 * attentionOwnMs / max(main, 1e-9), sgemmMs, 100 * sgemmMs / max(main, 1e-9),
                    options.shape.lanes > 1 ? "\n  (several lanes: worker threads run the units, the main thread Profile follows may run few or none and its waiting counts as attention's own; take the split from --threads 1)" : "")
        s += String(format: "scratch %.1f MB (Shape.scratchFloats · 4), inputs and outputs %.1f MB; peak RSS %.1f MB (%.1f MB before the buffers)\n",
                    o.scratchBytes / 1e6, o.bufferBytes / 1e6, peakRSSBytes / 1e6, startRSSBytes / 1e6)
        s += "sgemm FLOPs per step: \(asRun)"
        return s
    }

    /// One line for tools/bench-attention-vs-pytorch.sh (the keys tools/bench_attention_torch.py prints too).
    public var json: [String: Any] {
        let o = options
        return ["side": "lora-dist", "batch": o.batch, "seq": o.seqLen, "heads": o.heads, "kv_heads": o.kvHeads,
                "head_dim": o.headDim, "window": o.window.map { $0 as Any } ?? NSNull(), "threads": o.threads, "lanes": o.shape.lanes,
                "blas_threads": blasThreads, "layers": o.layers, "steps": o.steps,
                "forward_ms": medianForwardMs, "backward_ms": medianBackwardMs, "total_ms": medianTotalMs,
                "forward_ms_all": forwardMs, "backward_ms_all": backwardMs,
                "flops_as_run_forward": asRunForward, "flops_as_run_backward": asRunBackward, "flops_as_run": asRun,
                "flops_useful_forward": usefulForward, "flops_useful_backward": usefulBackward, "flops_useful": useful,
                "gflops_as_run": StepBenchmark.gflops(Double(asRun), ms: medianTotalMs),
                "gflops_useful": StepBenchmark.gflops(useful, ms: medianTotalMs),
                "attention_own_ms": attentionOwnMs, "sgemm_ms": sgemmMs,
                "scratch_bytes": o.scratchBytes, "buffer_bytes": o.bufferBytes,
                "start_rss_bytes": startRSSBytes, "peak_rss_bytes": peakRSSBytes,
                "blas_core": BLASCore.name, "library_target": CPUFeatures.libraryTarget]
    }
}
