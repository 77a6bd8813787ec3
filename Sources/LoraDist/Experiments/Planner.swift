import Foundation

/// What `lora-dist bench` measured on this machine, kept for `lora-dist plan`.
public struct Calibration: Codable {
    public struct Compute: Codable {
        public var gflopsPerCore: Double   // training FLOP/s of a step (sgemm FLOPs / step time) per BLAS thread
        public var model: String
        public var threads: Int
        public var measured: String
        /// What measured it when not `lora-dist bench step` (plan's quick calibration).
        public var source: String?
        public init(gflopsPerCore: Double, model: String, threads: Int, measured: String, source: String? = nil) {
            self.gflopsPerCore = gflopsPerCore; self.model = model; self.threads = threads; self.measured = measured
            self.source = source
        }
    }
    public var compute: [String: Compute] = [:]     // "full", "lora"
    public var intraBandwidthGBs: Double?           // node allreduce bus bandwidth at ≥ 1 MiB
    public var intraLatencyUs: Double?              // node allreduce latency at 4 KiB
    /// What a node's link delivered to the cross-node allreduces (every local rank's at once),
    /// bytes/s of bus bandwidth × ranks per node, and their latency: the network as MPI sees it.
    public var interBandwidthGBs: Double?
    public var interLatencyUs: Double?
    public init() {}

    public static var path: String {
        let env = ProcessInfo.processInfo.environment
        return env["LORA_DIST_CALIBRATION"] ?? ((env["HOME"] ?? ".") + "/.cache/lora-dist/calibration.json")
    }

    public static func load(path: String = Calibration.path) -> Calibration {
        guard let d = FileManager.default.contents(atPath: path), let c = try? JSONDecoder().decode(Calibration.self, from: d) else {
            return Calibration()
        }
        return c
    }

    /// The calibration file, nil when there is none; an error when it exists but cannot be read.
    public static func loadIfPresent(path: String = Calibration.path) throws -> Calibration? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let d = FileManager.default.contents(atPath: path) else { throw LoraDistError("cannot read the calibration \(path)") }
        do { return try JSONDecoder().decode(Calibration.self, from: d) } catch {
            throw LoraDistError("the calibration \(path) is not readable (\(error)); remove it or run `lora-dist bench step` again")
        }
    }

    /// One line on where the compute rates come from, for plan's output.
    public var computeSummary: String {
        let rates = ["full", "lora"].compactMap { m in compute[m].map { String(format: "%@ %.1f", m, $0.gflopsPerCore) } }
        guard !rates.isEmpty else { return "no compute rate" }
        let sources = Set(compute.values.map { c in
            (c.source ?? "lora-dist bench step --model \(c.model) --threads \(c.threads)") + ", " + String(c.measured.prefix(10)) })
        return rates.joined(separator: ", ") + " GFLOP/s per core (" + sources.sorted().joined(separator: "; ") + ")"
    }

    public func save() throws {
        try Files.createDirectory((Self.path as NSString).deletingLastPathComponent)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try Files.writeAtomically(try enc.encode(self), to: Self.path)
    }
}

/// `lora-dist plan`: a step's time, bytes and memory on N nodes of L ranks, for LoRA
/// and full fine-tuning side by side, from the model's shapes, this machine's
/// calibration and an alpha-beta model of the network.
public struct Planner {
    public var config: ModelConfig
    public var lora: LoRAConfig
    public var nodes = 1, ranksPerNode = 1, coresPerNode = 1
    public var batch = 8, seqLen = 128
    public var bandwidthGbit: Double?, latencyUs: Double?   // nil: the calibrated network, else 25 Gbit/s, 10 µs
    public var exchange = ExchangeStrategy.hierarchical
    public var bucketMB = 4.0
    public var calibration = Calibration()
    /// Sequences per forward/backward pass of a rank (train --micro-batch); nil: its whole share.
    public var microBatch: Int?
    /// Activation checkpointing per layer (train --recompute).
    public var recompute = false
    /// Bytes a node has for the job (--node-memory); nil: no fit is proposed.
    public var nodeMemory: Double?

    public init(config: ModelConfig, lora: LoRAConfig) { self.config = config; self.lora = lora }

    public struct Estimate {
        public var mode: String
        public var trainable = 0, total = 0
        public var flopsPerStep = 0.0
        public var computeSeconds = 0.0
        public var exchangeBytes = 0.0          // per rank and step (intra + inter)
        public var exchangeSeconds = 0.0
        public var stepSeconds: Double { computeSeconds + exchangeSeconds }
        public var memoryPerNode = 0.0
        public var gflopsPerCore = 0.0
        public var exchangeBoundAt: Int?        // nodes at which exchange time reaches compute time
        public var microBatch = 1               // sequences per pass of a rank, as planned
        /// With nodeMemory: the largest micro-batch that fits (without recompute when one does,
        /// else with it); nil when nothing fits, not even one sequence per pass with recompute.
        public var fit: Fit?
    }

    public struct Fit: Equatable {
        public var microBatch: Int
        public var recompute: Bool
        public var memoryPerNode: Double
    }

    /// Sequences each rank computes per step on `N` nodes (its share of the batch, rounded up).
    func share(nodes N: Int) -> Int { (batch + N * ranksPerNode - 1) / (N * ranksPerNode) }

    /// Training FLOPs of one step over the global batch (the matrix products; what bench counts).
    public func flops(lora: Bool) -> Double { flops(lora: lora, recompute: recompute) }

    public func flops(lora: Bool, recompute: Bool) -> Double {
        let c = config, tokens = Double(batch * seqLen)
        let q = Double(c.numAttentionHeads * c.headDim), kv = Double(c.numKeyValueHeads * c.headDim)
        let C = Double(c.hiddenSize), I = Double(c.intermediateSize)
        let perLayer = C * q + 2 * C * kv + q * C + 3 * C * I
        let matmul = 2 * tokens * (Double(c.numHiddenLayers) * perLayer + C * Double(c.vocabSize))
        // causal attention in blocks of rows: a query block multiplies the keys up to its end
        // (from the window's start under a sliding window: Attention.Shape.blockCost)
        let shape = Attention.Shape(batch: 1, seqLen: seqLen, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                                    headDim: c.headDim, window: c.slidingWindow)
        let pairs = (0..<shape.blocks).reduce(0) { $0 + shape.blockCost($1) }
        // per block the forward multiplies Q·Kᵀ and P·V; the backward recomputes Q·Kᵀ (no T×T
        // matrix is kept) and forms dP, dV, dQ and dK: 2 and 5 products of 2·rows·keys·D FLOPs
        let attention = 2 * 2 * Double(batch * pairs) * q * Double(c.numHiddenLayers)
        let forward = matmul + attention
        var adapters = 0.0, adapterUps = 0.0  // adapterUps: the B products of all but down_proj
        if lora {
            for (name, out, inp) in LlamaModel.projections(c, q: Int(q), kv: Int(kv)) where self.lora.targets.contains(name) {
                adapters += 2 * tokens * Double(self.lora.rank) * Double(out + inp) * Double(c.numHiddenLayers)
                if name != "down_proj" { adapterUps += 2 * tokens * Double(self.lora.rank) * Double(out) * Double(c.numHiddenLayers) }
            }
        }
        // recompute: the backward runs every layer's forward again but the last one's (no head),
        // without attention (its output is kept), the down projection (its output is the next
        // layer's input) and the adapters' A products (kept): DecoderLayer.recompute
        let L = Double(c.numHiddenLayers)
        let again = recompute ? (L - 1) / L * (2 * tokens * L * (perLayer - I * C) + adapterUps) : 0
        if !lora { return forward + 2 * matmul + 2.5 * attention + again }  // backward: input and weight gradients
        // backward: input gradients only through frozen weights, attention's five products, adapters three times;
        // none into the first layer's q, k, v input, which only the frozen embedding and norm would read
        // (LlamaModel.firstLayerInputGradient): neither its base product nor its adapters' share of it
        var firstLayerInput = 2 * tokens * C * (q + 2 * kv)
        for (name, _, inp) in LlamaModel.projections(c, q: Int(q), kv: Int(kv))
        where LlamaModel.projectionGroups[0].contains(name) && self.lora.targets.contains(name) {  // q, k, v: the first norm's readers
            firstLayerInput += 2 * tokens * Double(self.lora.rank) * Double(inp)
        }
        return forward + (matmul + 2.5 * attention) + 3 * adapters + again - firstLayerInput
    }

    func exchangeSeconds(bytes n: Double, nodes N: Int) -> Double {
        let L = Double(ranksPerNode), W = Double(N * ranksPerNode)
        let alpha = (latencyUs ?? calibration.interLatencyUs ?? 10) * 1e-6
        let beta = bandwidthGbit.map { $0 * 1e9 / 8 } ?? (calibration.interBandwidthGBs.map { $0 * 1e9 } ?? 25e9 / 8)
        let alphaIntra = (calibration.intraLatencyUs ?? 20) * 1e-6, betaIntra = (calibration.intraBandwidthGBs ?? 2) * 1e9
        let buckets = max(1, (n / (bucketMB * 1_048_576)).rounded(.up))
        switch exchange {
        case .hierarchical:
            let intra = ranksPerNode > 1 ? buckets * (L - 1) * alphaIntra + (L - 1) / L * n / betaIntra : 0
            // the node's L shard allreduces share its link: one gradient per node crosses it
            let inter = N > 1 ? buckets * 2 * Double(N - 1) * alpha + 2 * Double(N - 1) / Double(N) * n / beta : 0
            return intra + inter
        case .flat:
            guard W > 1 else { return 0 }
            if N == 1 { return buckets * 2 * (W - 1) * alphaIntra + 2 * (W - 1) / W * n / betaIntra }
            // a world ring: the links between nodes are the slowest of its links
            return buckets * 2 * (W - 1) * alpha + 2 * (W - 1) / W * n / beta
        }
    }

    /// Memory of one node: what `train` checks against the node before it allocates
    /// (MemoryNeed), for this plan's share of the batch per rank and the trainer's default of
    /// one model replica per thread (the node's cores shared among its ranks).
    func memoryPerNode(lora isLoRA: Bool, nodes N: Int) throws -> Double {
        try memoryPerNode(lora: isLoRA, micro: min(microBatch ?? share(nodes: N), share(nodes: N)), recompute: recompute)
    }

    func memoryPerNode(lora isLoRA: Bool, micro: Int, recompute: Bool) throws -> Double {
        try MemoryNeed(config: config, lora: isLoRA ? lora : nil, ranksPerNode: ranksPerNode, maxBatch: micro,
                       replicas: max(1, coresPerNode / ranksPerNode), seqLen: seqLen, training: true, recompute: recompute,
                       threads: max(1, coresPerNode / ranksPerNode), exchange: exchange).perNode
    }

    /// The largest micro-batch (at most the rank's share) whose memory fits `nodeMemory`: without
    /// recompute if one does, else with it. nil when none does or no node memory is given.
    public func largestFit(lora isLoRA: Bool, nodes N: Int) throws -> Fit? {
        guard let room = nodeMemory else { return nil }
        for recompute in [false, true] {
            // memory grows with the micro-batch: the largest that fits, by bisection
            var lo = 0, hi = share(nodes: N)
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if try memoryPerNode(lora: isLoRA, micro: mid, recompute: recompute) <= room { lo = mid } else { hi = mid - 1 }
            }
            if lo > 0 { return Fit(microBatch: lo, recompute: recompute, memoryPerNode: try memoryPerNode(lora: isLoRA, micro: lo, recompute: recompute)) }
        }
        return nil
    }

    public func estimate(lora isLoRA: Bool) throws -> Estimate {
        let specs = try LlamaModel.specs(config: config, lora: isLoRA ? lora : nil)
        var e = Estimate(mode: isLoRA ? "lora" : "full")
        e.trainable = specs.filter(\.trainable).reduce(0) { $0 + $1.count }
        e.total = specs.reduce(0) { $0 + $1.count }
        e.flopsPerStep = flops(lora: isLoRA)
        guard let cal = calibration.compute[e.mode] ?? calibration.compute.values.first else {
            throw LoraDistError("no compute rate in the calibration: `lora-dist plan` measures one, or run `lora-dist bench step --mode full` and `--mode lora`")
        }
        e.gflopsPerCore = cal.gflopsPerCore
        func compute(_ N: Int) -> Double {
            e.flopsPerStep / Double(N * ranksPerNode) / (cal.gflopsPerCore * 1e9 * Double(coresPerNode) / Double(ranksPerNode))
        }
        e.computeSeconds = compute(nodes)
        let n = 4 * Double(e.trainable)
        let b = GradientExchange.bytesPerStep(strategy: exchange, elements: e.trainable, worldSize: nodes * ranksPerNode,
                                              localSize: ranksPerNode, nodes: nodes)
        e.exchangeBytes = b.intra + b.inter
        e.exchangeSeconds = exchangeSeconds(bytes: n, nodes: nodes)
        e.memoryPerNode = try memoryPerNode(lora: isLoRA, nodes: nodes)
        e.microBatch = min(microBatch ?? share(nodes: nodes), share(nodes: nodes))
        e.fit = try largestFit(lora: isLoRA, nodes: nodes)
        e.exchangeBoundAt = (1...4096).first { exchangeSeconds(bytes: n, nodes: $0) >= compute($0) }
        return e
    }
}
