import ArgumentParser
import Foundation
import LoraDist

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict step time, bytes exchanged and memory per node for LoRA and full fine-tuning on N nodes, from this machine's `lora-dist bench` calibration (measured in a few seconds on first use when there is none) and an alpha-beta network model.")

    @Option(help: "A built-in config (tiny, small, bench, llama-7b), a config.json, a model directory or a GGUF file.")
    var model: String = "small"
    @Option(help: "Which mode the plan is for (both are shown; this one is marked).") var mode: TrainMode = .lora
    @Option(help: "Nodes.") var nodes: Int = 1
    @Option(name: .customLong("ranks-per-node"), help: "Ranks per node.") var ranksPerNode: Int = 1
    @Option(name: .customLong("cores-per-node"), help: "Cores per node (default: this machine's).") var coresPerNode: Int?
    @Option(help: "Network bandwidth per node, Gbit/s (default: what `bench allreduce` measured across nodes here, else 25).")
    var bandwidth: Double?
    @Option(help: "Network latency, microseconds (default: measured across nodes here, else 10).") var latency: Double?
    @Option(help: "LoRA rank.") var rank: Int = 8
    @Option(help: "LoRA target modules.") var targets: String = "all-linear"
    @Option(help: "Sequences per step (global batch).") var batch: Int = 8
    @Option(name: .customLong("seq"), help: "Tokens per sequence.") var seqLen: Int = 128
    @Option(help: "Gradient exchange strategy.") var exchange: ExchangeStrategy = .hierarchical
    @Option(name: .customLong("bucket-mb"), help: "Gradient bucket size in MiB.") var bucketMB: Double = 4
    @Option(name: .customLong("node-counts"), help: "Also tabulate these node counts, comma-separated (e.g. 8,16,32,64).")
    var nodeCounts: String?
    @Flag(help: "Also model full fine-tuning with compressed gradients (train --grad-compression): bf16 (fp16 sends the same bytes) and PowerSGD at each --powersgd-ranks.")
    var compressed = false
    @Option(name: .customLong("powersgd-ranks"), help: "PowerSGD ranks for --compressed, comma-separated.") var powerSGDRanks: String = "4,16"
    @Option(name: .customLong("micro-batch"), help: "Sequences per forward/backward pass of a rank (default: its whole share of the batch).")
    var microBatch: Int?
    @Flag(help: "Activation checkpointing per layer (train --recompute).") var recompute = false
    @Option(name: .customLong("node-memory"), help: "Memory of a node for the job, e.g. 256G or 512GiB (binary units), or bytes; the plan proposes the largest micro-batch that fits. Default: what this machine has available.")
    var nodeMemory: String?

    func run() throws {
        guard nodes >= 1, ranksPerNode >= 1, (bandwidth ?? 1) > 0, (latency ?? 0) >= 0 else {
            throw LoraDistError("--nodes and --ranks-per-node must be at least 1, --bandwidth positive, --latency not negative")
        }
        if let m = microBatch, m < 1 { throw LoraDistError("--micro-batch must be at least 1, got \(m)") }
        let room = try nodeMemory.map { try Self.bytes($0) } ?? NodeMemory.availableBytes()
        let counts = try nodeCounts.map { s in try s.split(separator: ",").map { guard let n = Int($0), n >= 1 else {
            throw LoraDistError("--node-counts: cannot read '\(s)'") }; return n } } ?? [nodes]
        let psgdRanks = try powerSGDRanks.split(separator: ",").map { s -> Int in
            guard let r = Int(s), CompressionOptions.rankRange.contains(r) else { throw LoraDistError("--powersgd-ranks: cannot read '\(powerSGDRanks)' (ranks in 1...1024)") }
            return r
        }
        var methods: [CompressionOptions] = []
        if compressed {
            var c = CompressionOptions()
            c.method = .bf16
            methods.append(c)
            for r in psgdRanks { c.method = .powersgd; c.powerSGDRank = r; methods.append(c) }
        }
        let width = compressed ? 12 : 5
        let source = try ModelSource(model)
        var p = Planner(config: source.config, lora: try LoRAConfig(rank: rank, alpha: Float(2 * rank), targets: [targets]))
        p.nodes = nodes; p.ranksPerNode = ranksPerNode
        p.coresPerNode = coresPerNode ?? ProcessInfo.processInfo.activeProcessorCount
        p.batch = batch; p.seqLen = seqLen; p.bandwidthGbit = bandwidth; p.latencyUs = latency
        p.exchange = exchange; p.bucketMB = bucketMB
        p.microBatch = microBatch; p.recompute = recompute; p.nodeMemory = room
        // A fresh machine has no calibration: measure one now (a few seconds) and keep it.
        var calibrated: String?
        var cal = try Calibration.loadIfPresent() ?? Calibration()
        if cal.compute.isEmpty {
            let t0 = Date()
            cal = try QuickCalibration.run(into: cal, lora: p.lora, cluster: Cluster())
            try cal.save()
            calibrated = String(format: "no calibration at %@: calibrated itself in %.1f s (`lora-dist %@`, full and lora; saved). "
                                + "`lora-dist bench step` on the planned model measures a closer rate.",
                                Calibration.path, Date().timeIntervalSince(t0), QuickCalibration.command)
        }
        p.calibration = cal
        // Every row is computed before anything is printed: an error prints nothing else.
        var rows: [String] = [], fits: [String] = []
        for n in counts {
            p.nodes = n
            let estimates = try [TrainMode.lora, .full].map { m in (m, try p.estimate(lora: m == .lora)) }
                + methods.map { (TrainMode.full, try p.estimate(full: $0)) }
            for (m, e) in estimates {
                let label = e.mode == m.rawValue ? m.rawValue + (m == mode ? "*" : " ") : e.mode
                if e.mode == m.rawValue { fits.append(Self.fitLine(e, nodes: n, room: room)) }
                rows.append(String(format: "%5d  %@ %12@  %11.3f  %13@  %10.3f  %7.3f  %9.0f  %11@  %@",
                                   n, label.padding(toLength: width, withPad: " ", startingAt: 0),
                                   e.trainable.formatted(), e.computeSeconds, Units.bytes(e.exchangeBytes), e.exchangeSeconds,
                                   e.stepSeconds, Double(batch * seqLen) / e.stepSeconds, Units.bytes(e.memoryPerNode),
                                   e.exchangeBoundAt.map { "\($0) nodes" } ?? "never (≤ 4096)"))
            }
        }
        let net = bandwidth.map { "\($0) Gbit/s" } ?? cal.interBandwidthGBs.map { String(format: "%.2f Gbit/s measured", $0 * 8) } ?? "25 Gbit/s (default)"
        let lat = latency.map { "\($0) µs" } ?? cal.interLatencyUs.map { String(format: "%.0f µs measured", $0) } ?? "10 µs (default)"
        let intra = cal.intraBandwidthGBs == nil ? "; within a node 2 GB/s, 20 µs (defaults: `mpirun -n 2 lora-dist bench allreduce` measures them)" : ""
        if let calibrated { print(calibrated) }
        print("\(model): \(batch) × \(seqLen) tokens per step, \(ranksPerNode) rank(s) and \(p.coresPerNode) core(s) per node, "
              + "\(exchange.rawValue) exchange, network \(net), \(lat)\(ranksPerNode > 1 ? intra : "")")
        print("compute: \(cal.computeSummary), from \(Calibration.path)")
        let pass = "\(microBatch.map { "micro-batch \($0)" } ?? "micro-batch = each rank's share")\(recompute ? ", --recompute" : "")"
        print("memory/node at \(pass); node memory \(room.map { Units.bytes($0) } ?? "unknown")"
              + (nodeMemory == nil && room != nil ? " (available on this machine; --node-memory to plan for another)" : ""))
        print("nodes  " + "mode".padding(toLength: width, withPad: " ", startingAt: 0) + "  trainable        compute s  exchange/rank  exchange s  step s   tokens/s   memory/node  exchange-bound at")
        for r in rows { print(r) }
        if room != nil { for f in fits { print(f) } }
    }

    /// "256G", "512GiB", "1.5T", "1e12": bytes (K, M, G, T are powers of 1024).
    static func bytes(_ s: String) throws -> Double {
        var t = s.trimmingCharacters(in: .whitespaces).uppercased()
        for suffix in ["IB", "B"] where t.hasSuffix(suffix) { t.removeLast(suffix.count); break }
        var scale = 1.0
        if let last = t.last, let power = ["K": 1.0, "M": 2, "G": 3, "T": 4][String(last)] {
            scale = pow(1024, power)
            t.removeLast()
        }
        guard let v = Double(t), v.isFinite, v > 0 else { throw LoraDistError("--node-memory: cannot read '\(s)' (e.g. 256G, 512GiB or a byte count)") }
        return v * scale
    }

    /// What fits a node: the plan as given, or the largest micro-batch that does.
    static func fitLine(_ e: Planner.Estimate, nodes: Int, room: Double?) -> String {
        let head = "\(nodes) node(s), \(e.mode):"
        guard let room else { return head + " node memory unknown" }
        let largest = e.fit.map { "micro-batch \($0.microBatch)\($0.recompute ? " with --recompute" : "") (\(Units.bytes($0.memoryPerNode)))" }
        if e.memoryPerNode <= room {
            return "\(head) fits (\(Units.bytes(e.memoryPerNode)) of \(Units.bytes(room))); the largest that fits: \(largest ?? "-")"
        }
        guard let f = e.fit else {
            return "\(head) does not fit \(Units.bytes(room)) even at micro-batch 1 with --recompute: more nodes, a shorter sequence or fewer ranks per node"
        }
        return "\(head) needs \(Units.bytes(e.memoryPerNode)), more than \(Units.bytes(room)): --micro-batch \(f.microBatch)\(f.recompute ? " --recompute" : "") fits (\(Units.bytes(f.memoryPerNode)))"
    }
}
