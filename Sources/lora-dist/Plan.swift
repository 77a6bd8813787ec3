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

    func run() throws {
        guard nodes >= 1, ranksPerNode >= 1, (bandwidth ?? 1) > 0, (latency ?? 0) >= 0 else {
            throw LoraDistError("--nodes and --ranks-per-node must be at least 1, --bandwidth positive, --latency not negative")
        }
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
        var rows: [String] = []
        for n in counts {
            p.nodes = n
            let estimates = try [TrainMode.lora, .full].map { m in (m, try p.estimate(lora: m == .lora)) }
                + methods.map { (TrainMode.full, try p.estimate(full: $0)) }
            for (m, e) in estimates {
                let label = e.mode == m.rawValue ? m.rawValue + (m == mode ? "*" : " ") : e.mode
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
        print("nodes  " + "mode".padding(toLength: width, withPad: " ", startingAt: 0) + "  trainable        compute s  exchange/rank  exchange s  step s   tokens/s   memory/node  exchange-bound at")
        for r in rows { print(r) }
    }
}
