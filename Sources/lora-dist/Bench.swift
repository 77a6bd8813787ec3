import ArgumentParser
import Foundation
import LoraDist

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed.", subcommands: [BenchStep.self, BenchAttention.self, BenchAllreduce.self, BenchCheckpoint.self, BenchTokenizer.self])
}

struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "step",
        abstract: "Time the trainer's optimizer step, split by kind of work; compare its FLOP/s with sgemm's (run under mpirun for several ranks).")

    @Option(help: "Model config.") var model: String = "bench"
    @Option(help: "lora, qlora or full.") var mode: TrainMode = .full
    @Option(help: "LoRA targets (lora, qlora).") var targets: String = TrainOptions.attentionTargets
    @Option(help: "LoRA rank.") var rank: Int = 8
    @Option(help: "Sequences per step, over all ranks.") var batch: Int = 8
    @Option(name: .customLong("seq"), help: "Tokens per sequence.") var seqLen: Int = 256
    @Option(help: "Timed steps (after one warm-up step).") var steps: Int = 3
    @Option(help: "OpenBLAS threads per rank (default: the cores of the node shared by its ranks).") var threads: Int?
    @Option(help: "Model replicas per rank (default: one per thread, each with one BLAS thread; 1: one model on all threads).")
    var replicas: Int?
    @Flag(help: "Print one JSON object as the last line (for tools/bench-vs-pytorch.sh).") var json = false
    @Flag(help: "Activation checkpointing per layer (train --recompute).") var recompute = false
    @Option(name: .customLong("micro-batch"), help: "Sequences per forward/backward pass of a rank (train --micro-batch).") var microBatch: Int?
    @Flag(help: "Run q, k, v and gate, up as separate products, as before they were fused: the reference that measures what fusing gains (not saved as the calibration).")
    var unfused = false
    @Option(help: "sgemm shapes listed, the slowest in total first (the rest are summed in one line).") var shapes: Int = 12

    func run() throws {
        guard steps >= 1 else { throw LoraDistError("--steps must be at least 1, got \(steps)") }
        guard shapes >= 0 else { throw LoraDistError("--shapes must be at least 0, got \(shapes)") }
        let cluster = Cluster()
        var o = StepBenchmark.Options()
        o.model = model; o.mode = mode; o.batch = batch; o.seqLen = seqLen; o.steps = steps; o.replicas = replicas
        o.recompute = recompute; o.microBatch = microBatch; o.unfused = unfused
        o.threads = try cluster.threads(requested: threads)
        if mode.hasAdapters { o.lora = try LoRAConfig(rank: rank, alpha: Float(2 * rank), targets: [targets]) }
        var r = try StepBenchmark.run(o, cluster: cluster)
        r.shownShapes = shapes
        guard cluster.isRoot else { return }
        print(r.report)
        // `lora-dist plan` predicts from this machine's measured rate (per core of one rank), which
        // is the fused step's: an --unfused run does not replace it.
        if !unfused {
            var cal = Calibration.load()
            cal.compute[mode.rawValue] = Calibration.Compute(gflopsPerCore: r.gflops / Double(max(r.threads * r.ranks, 1)), model: model,
                                                             threads: r.threads, measured: ISO8601DateFormatter().string(from: Date()))
            try cal.save()
            print("calibration saved to \(Calibration.path)")
        }
        if json { print(String(decoding: try JSONSerialization.data(withJSONObject: r.json, options: [.sortedKeys]), as: UTF8.self)) }
    }
}

struct BenchAttention: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Time attention's forward and backward alone on random inputs of one shape, threaded as train runs one model (for tools/bench-attention-vs-pytorch.sh).")

    @Option(help: "Sequences.") var batch: Int = 4
    @Option(name: .customLong("seq"), help: "Tokens per sequence.") var seqLen: Int = 512
    @Option(help: "Query heads (default: SmolLM2-135M's).") var heads: Int = 9
    @Option(name: .customLong("kv-heads"), help: "Key/value heads; --heads must be a multiple.") var kvHeads: Int = 3
    @Option(name: .customLong("head-dim"), help: "Floats per head.") var headDim: Int = 64
    @Option(help: "Sliding window: query i sees keys i - window + 1 ... i (default: all earlier keys).") var window: Int?
    @Option(help: "Threads: attention's lanes and BLAS threads, as train gives one model without replicas (default: the cores of the node).")
    var threads: Int?
    @Option(help: "Timed steps (after one warm-up step).") var steps: Int = 3
    @Option(help: "Layers per step: forward of each, then backward of each in reverse, every layer with its own inputs.") var layers: Int = 1
    @Flag(help: "Print one JSON object as the last line.") var json = false

    func run() throws {
        var o = AttentionBenchmark.Options()
        o.batch = batch; o.seqLen = seqLen; o.heads = heads; o.kvHeads = kvHeads; o.headDim = headDim
        o.window = window; o.steps = steps; o.layers = layers
        // The default as bench step's, from the node (Cluster); a value given is checked with the others.
        o.threads = try threads ?? Cluster().threads(requested: nil)
        let r = try AttentionBenchmark.run(o)
        print(r.report)
        if json { print(String(decoding: try JSONSerialization.data(withJSONObject: r.json, options: [.sortedKeys]), as: UTF8.self)) }
    }
}

struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Allreduce bus bandwidth and latency by message size on the world, node and cross-node communicators (run under mpirun).")

    @Option(name: .customLong("sizes"), help: "Message sizes in bytes, comma-separated.")
    var sizes: String = "4096,65536,262144,1048576,16777216,67108864"
    @Option(name: .customLong("min-seconds"), help: "Measure each size for at least this long.")
    var minSeconds: Double = 0.2
    @Option(name: .customLong("grad-compression"), help: "bf16 or fp16: also measure train's 16-bit exchange (on the world and cross-node communicators), beside fp32.")
    var gradCompression: GradCompression = .none
    @Option(help: ArgumentHelp("With bf16/fp16: instead of measuring, exchange --dump-count seeded values once and write each rank's input and result to DIR/rank-R.f32 (for the tests).", valueName: "dir"))
    var dump: String?
    @Option(name: .customLong("dump-count"), help: "Values --dump exchanges.") var dumpCount: Int = 1000

    func validate() throws {
        guard gradCompression == .none || gradCompression.half != nil else {
            throw LoraDistError("bench allreduce --grad-compression: none, bf16 or fp16 (PowerSGD is measured by train), got \(gradCompression.rawValue)")
        }
        if dump != nil {
            guard gradCompression.half != nil else { throw LoraDistError("--dump needs --grad-compression bf16 or fp16") }
            guard (1...100_000_000).contains(dumpCount) else { throw LoraDistError("--dump-count must be in 1...100000000, got \(dumpCount)") }
        }
    }

    func run() throws {
        let parsed = sizes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parsed.allSatisfy({ ($0 ?? 0) >= 4 }) else { throw LoraDistError("--sizes must be byte counts of at least 4, got \(sizes)") }
        let cluster = Cluster()
        if let dump, let half = gradCompression.half {
            try cluster.agree { if cluster.isRoot { try Files.createDirectory(dump) } }
            try AllreduceBenchmark.dumpHalf(cluster: cluster, format: half, count: dumpCount, seed: 7, dir: dump)
            return
        }
        var rows = AllreduceBenchmark.run(cluster: cluster, sizes: parsed.map { $0! }, minSeconds: minSeconds)
        if let half = gradCompression.half {
            rows += AllreduceBenchmark.runHalf(cluster: cluster, format: half, sizes: parsed.map { $0! }, minSeconds: minSeconds)
        }
        guard cluster.isRoot else { return }
        print(AllreduceBenchmark.table(rows, cluster: cluster), terminator: "")
        // The node communicator's figures calibrate `lora-dist plan`.
        let node = rows.filter { $0.communicator == "node" }
        var cal = Calibration.load()
        if let small = node.min(by: { $0.bytes < $1.bytes }), let big = node.filter({ $0.bytes >= 1 << 20 }).max(by: { $0.busGBs < $1.busGBs }) {
            cal.intraLatencyUs = small.seconds * 1e6
            cal.intraBandwidthGBs = big.busGBs
        }
        // Every local rank ran its cross-node allreduce at once, sharing the node's link.
        let cross = rows.filter { $0.communicator == "cross-node" }
        if let small = cross.min(by: { $0.bytes < $1.bytes }), let big = cross.max(by: { $0.bytes < $1.bytes }) {
            cal.interLatencyUs = small.seconds * 1e6
            cal.interBandwidthGBs = big.busGBs * Double(cluster.node.size)
        }
        try cal.save()
        print("calibration saved to \(Calibration.path)")
    }
}

struct BenchCheckpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Checkpoint save and load MB/s next to a plain sequential write and read of the same size on the same disk.")

    @Option(help: "Model config.") var model: String = "bench"
    @Option(help: "lora or full (full saves every weight).") var mode: TrainMode = .full
    @Option(help: "Folder to write in (removed afterwards).") var dir: String = "runs/bench-checkpoint"
    @Option(help: "Repetitions (the median is reported).") var repeats: Int = 3

    func run() throws {
        let cluster = Cluster()
        let r = try cluster.agree { try CheckpointBenchmark.run(model: model, mode: mode, dir: dir, cluster: cluster, repeats: repeats) }
        guard cluster.isRoot else { return }
        print(String(format: """
            %@ checkpoint of %@ on %ld rank(s): %.1f MB of values and Adam moments
            save   %7.3f s  %7.0f MB/s    plain write + fsync  %7.3f s  %7.0f MB/s   (%.0f%%)
            load   %7.3f s  %7.0f MB/s    plain read           %7.3f s  %7.0f MB/s   (%.0f%%)
            """, mode.rawValue, model, cluster.size, r.bytes / 1e6,
            r.saveSeconds, r.mbps(r.saveSeconds), r.plainWriteSeconds, r.mbps(r.plainWriteSeconds), 100 * r.plainWriteSeconds / r.saveSeconds,
            r.loadSeconds, r.mbps(r.loadSeconds), r.plainReadSeconds, r.mbps(r.plainReadSeconds), 100 * r.plainReadSeconds / r.loadSeconds))
    }
}


struct BenchTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Our BPE against Hugging Face tokenizers: one thread each, the same text and tokenizer.json, rounds alternating.")

    @Option(help: "A tokenizer.json (for SmolLM2: tools/smollm2-tokenizer-json.py writes one).") var tokenizer: String
    @Option(help: "A text file or a folder of .txt files (default: the corpora tools/fetch-corpora.sh installs).")
    var text: String = CacheFolders.corpora
    @Option(help: "Megabytes of the text to encode.") var megabytes: Double = 20
    @Option(help: "Rounds (each side once per round; the best is reported).") var rounds: Int = 3
    @Option(help: "The Python with the tokenizers package.") var python: String = "python3"

    func run() throws {
        guard rounds >= 1, megabytes > 0 else { throw LoraDistError("--rounds must be at least 1 and --megabytes above 0") }
        let r = try TokenizerBenchmark.run(tokenizerJSON: tokenizer, text: text, megabytes: megabytes, rounds: rounds, python: python)
        print(r.report)
        if !r.identical { throw LoraDistError("the two tokenizers gave different ids") }
    }
}
