import Foundation

/// `train --adapter-set legal=DATA1,medical=DATA2,...`: K LoRA (or QLoRA) adapters trained in
/// one job on one base, held once per node. It is K `Trainer`s over a shared base, not a second
/// loop:
///
/// - The world splits into G = min(ranks, K) groups of contiguous ranks (`Cluster.group`);
///   group g trains adapters g, g + G, g + 2G, ... Each adapter's trainer sees its group as
///   its world, so its gradients are exchanged, its loss summed and its checkpoints written
///   within the group alone. With fewer ranks than adapters a group is one rank that trains
///   its adapters in turn, a step of each, round robin.
/// - The frozen base is one `SharedBase` window over every rank of the node; each adapter's
///   model maps it and holds only its trainable arena in a window of its group's ranks.
/// - Each adapter runs as if trained alone with the same flags and its own data: run directory
///   RUN/adapters/NAME (config.yaml, metrics.jsonl, events, summary.json, checkpoints/), the
///   same losses as `train --data DATA --run-dir ...` (any world size), and its PEFT export in
///   RUN/adapters/NAME/adapter. RUN/adapter-set.json lists the adapters and the node's memory.
public final class AdapterSet {
    /// One adapter of the set: its name and its data.
    public struct Spec: Equatable {
        public let name: String
        public let data: String

        /// Names become directory names and PEFT adapter names: letters, digits, '_' and '-',
        /// starting with a letter or digit, at most 64 characters.
        public static func checkName(_ name: String) throws {
            let allowed = name.unicodeScalars.allSatisfy { ($0.isASCII && CharacterSet.alphanumerics.contains($0)) || $0 == "_" || $0 == "-" }
            guard !name.isEmpty, name.count <= 64, allowed, let f = name.unicodeScalars.first, f != "_", f != "-" else {
                throw LoraDistError("--adapter-set: adapter name '\(name)' must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
            }
        }

        /// `legal=DATA1,medical=DATA2`: names and data paths, checked (names valid and distinct,
        /// every data path present), before anything is built.
        public static func parse(_ text: String) throws -> [Spec] {
            var specs: [Spec] = []
            for item in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let eq = item.firstIndex(of: "=") else {
                    throw LoraDistError("--adapter-set: '\(item)' is not NAME=DATA (expected e.g. legal=licenses.txt,medical=hpo.txt)")
                }
                let name = String(item[..<eq]), data = String(item[item.index(after: eq)...])
                try checkName(name)
                guard !data.isEmpty else { throw LoraDistError("--adapter-set: adapter '\(name)' names no data") }
                guard !specs.contains(where: { $0.name == name }) else {
                    throw LoraDistError("--adapter-set: adapter name '\(name)' is given twice")
                }
                guard FileManager.default.fileExists(atPath: data) else {
                    throw LoraDistError("--adapter-set: adapter '\(name)': data \(data) does not exist")
                }
                specs.append(Spec(name: name, data: data))
            }
            return specs
        }
    }

    /// `--adapter-option NAME:FLAG=VALUE`: one train flag set for one adapter of the set, over
    /// the shared value. Only flags that concern the adapter alone: the base, the world, the
    /// batch shape and the exchange stay shared (one base and one schedule of collectives).
    public struct Override: Equatable {
        public let adapter: String
        public let flag: String
        public let value: String

        /// The train flags an adapter may set for itself.
        public static let flags: [String] = ["rank", "alpha", "lora-dropout", "targets", "rslora", "adapter", "lr", "min-lr-ratio",
                                             "warmup", "weight-decay", "clip", "seed", "steps", "eval-every", "eval-seqs",
                                             "dev-percent", "patience", "save-every", "keep-last"]

        /// `legal:rank=16` (a boolean flag: `legal:rslora=true|false`), checked against the set's names.
        public static func parse(_ text: String, names: [String]) throws -> Override {
            guard let colon = text.firstIndex(of: ":"), let eq = text[colon...].firstIndex(of: "=") else {
                throw LoraDistError("--adapter-option: '\(text)' is not NAME:FLAG=VALUE (e.g. legal:rank=16)")
            }
            let o = Override(adapter: String(text[..<colon]), flag: String(text[text.index(after: colon)..<eq]),
                             value: String(text[text.index(after: eq)...]))
            guard names.contains(o.adapter) else {
                throw LoraDistError("--adapter-option \(text): no adapter '\(o.adapter)' in --adapter-set (\(names.joined(separator: ", ")))")
            }
            guard flags.contains(o.flag) else {
                throw LoraDistError("--adapter-option \(text): --\(o.flag) is shared by every adapter of the set; per adapter: \(flags.joined(separator: ", "))")
            }
            if o.flag == "rslora", !["true", "false"].contains(o.value) {
                throw LoraDistError("--adapter-option \(text): rslora is true or false")
            }
            return o
        }

        /// The command-line arguments that set it (appended after the shared ones, they win).
        public var arguments: [String] {
            flag == "rslora" ? [value == "true" ? "--rslora" : "--no-rslora"] : ["--\(flag)=\(value)"]
        }
    }

    /// The folder of an adapter's run directory that holds its PEFT export.
    public static let peftFolder = "adapter"

    /// Where adapter `name` of a set in `runDir` keeps its run.
    public static func runDir(_ runDir: String, adapter name: String) -> String { runDir + "/adapters/" + name }

    /// The options of one adapter: the shared ones with its data and run directory.
    public static func options(_ shared: TrainOptions, for spec: Spec) -> TrainOptions {
        var o = shared
        o.data = spec.data
        o.runDir = runDir(shared.runDir, adapter: spec.name)
        return o
    }

    /// What an adapter set refuses of the shared flags, one line each.
    public static func check(_ shared: TrainOptions) throws {
        guard shared.mode.hasAdapters else {
            throw LoraDistError("--adapter-set trains LoRA adapters on a shared base: --mode full has no adapters (use --mode lora or qlora)")
        }
        if shared.devData != nil {
            throw LoraDistError("--dev-data with --adapter-set: each adapter holds out --dev-percent of its own data")
        }
    }

    public let specs: [Spec]
    /// The whole job.
    public let cluster: Cluster
    /// This rank's group: the world of its adapters' trainers.
    public let group: Cluster
    /// The adapters this rank trains (indices into `specs`), and their trainers.
    public let mine: [Int]
    public let trainers: [Trainer]
    let base: SharedBase

    /// The groups of `ranks` ranks training `adapters` adapters: min(ranks, adapters) contiguous
    /// blocks of nearly equal size; group g trains adapters g, g + G, ...
    public static func groups(ranks: Int, adapters: Int) -> (count: Int, of: (Int) -> Int, adapters: (Int) -> [Int]) {
        let g = min(ranks, adapters)
        let groupOf = { (rank: Int) in (0..<g).first { Cluster.shard(ranks, parts: g, index: $0).contains(rank) }! }
        return (g, groupOf, { grp in Array(stride(from: grp, to: adapters, by: g)) })
    }

    /// Checks every adapter's options and data, splits the world into groups, loads the base
    /// once per node and builds each of this rank's adapters on it. `options` holds each
    /// adapter's options (`options(_:for:)`), in `specs` order. Collective over `cluster`.
    public init(specs: [Spec], options: [TrainOptions], cluster: Cluster) throws {
        precondition(specs.count == options.count && !specs.isEmpty)
        self.specs = specs
        self.cluster = cluster
        try cluster.agree { try Self.check(options[0]) }
        let layout = Self.groups(ranks: cluster.size, adapters: specs.count)
        let g = layout.of(cluster.rank)
        mine = layout.adapters(g)
        group = cluster.group(g)
        // Threads are the node's to share: chosen over the whole job's ranks on it, not the group's.
        let threads = try cluster.agree { try cluster.threads(requested: options[0].threads) }
        let group = group, mine = mine
        let prepared = try cluster.agree { () throws -> [Trainer.Prepared] in
            let list = try mine.map { a -> Trainer.Prepared in
                var o = options[a]
                o.threads = threads
                do { return try Trainer.prepare(o, cluster: group) } catch let e as LoraDistError {
                    throw LoraDistError("adapter '\(specs[a].name)': \(e.message)")
                }
            }
            // The node holds the base once, every adapter's weights and optimizer state, and
            // on each rank a model for each adapter it trains. The frozen base does not depend on the adapter's flags (under QLoRA every projection
            // is NF4, whatever the targets), so one base serves all. The memory estimate: the
            // adapter with the most trainable weights.
            let trainable = try list.map { p in
                try LlamaModel.specs(config: p.plan.source.config, lora: p.plan.options.lora, nf4Base: p.plan.options.mode.nf4Base)
                    .filter(\.trainable).reduce(0) { $0 + $1.count }
            }
            let largest = list[trainable.indices.max { trainable[$0] < trainable[$1] }!]
            let plan = largest.plan, po = plan.options, config = plan.source.config
            let r = max(1, min(po.replicas ?? threads, po.maxBatch))
            let one = try MemoryNeed(config: config, lora: po.lora, nf4Base: po.mode.nf4Base, ranksPerNode: cluster.node.size,
                                     maxBatch: po.maxBatch, replicas: r, seqLen: po.seqLen, training: true, recompute: po.recompute,
                                     threads: threads, exchange: po.exchange)
            let specsOfModel = try LlamaModel.specs(config: config, lora: po.lora, nf4Base: po.mode.nf4Base)
            let need = one.adapterSet(adapters: specs.count, perRank: (specs.count + cluster.size - 1) / cluster.size,
                                      frozenBytes: 4 * Double(ParameterStore.frozenSlots(specsOfModel)))
            try need.check(available: NodeMemory.availableBytes())
            return list
        }
        let plan = prepared[0].plan, po = plan.options
        let specsOfModel = try LlamaModel.specs(config: plan.source.config, lora: po.lora, nf4Base: po.mode.nf4Base)
        base = SharedBase(cluster: cluster, slots: ParameterStore.frozenSlots(specsOfModel))
        let base = base
        // Each group builds its adapters (collectives within the group); the world agrees after.
        trainers = try cluster.agree {
            try prepared.map { p in try Trainer(p, cluster: group, loaded: try LoadedModel(p.plan, cluster: group, base: base)) }
        }
        base.publish()
    }

    /// The names of this rank's adapters, in the order it trains them.
    public var myNames: [String] { mine.map { specs[$0].name } }

    public struct Outcome {
        /// This rank's adapters' outcomes, in `mine` order.
        public var summaries: [(name: String, summary: RunSummary)]
        /// Some adapter stopped early (SIGTERM or --stop-after) with a checkpoint to resume from.
        public var preempted: Bool
        public var record: AdapterSetRecord
    }

    /// Trains every adapter of this rank, a step of each in turn, until all are done; then
    /// measures the node's memory once, writes each adapter's summary.json and (unless
    /// stopped) its PEFT adapter, and RUN/adapter-set.json. Collective over the world.
    public func run(runDir: String) throws -> Outcome {
        let t0 = Date()
        // A failure inside a group (divergence, a checkpoint that will not load) is the same on
        // each of its ranks; the world agrees on it only once every group has stopped, so no
        // group is left waiting in a collective of the other.
        var runs: [Trainer.Run] = []
        var failure: Error?
        do {
            for (i, t) in trainers.enumerated() { runs.append(try t.start(label: specs.count > 1 ? myNames[i] + ": " : "")) }
            while runs.contains(where: { !$0.done }) {
                for r in runs where !r.done { try r.advance() }
            }
        } catch { failure = error }
        try cluster.agree { if let failure { throw failure } }
        let nodeMemory = cluster.largestNodeMemory()
        var summaries: [(String, RunSummary)] = []
        try cluster.agree {
            for (i, r) in runs.enumerated() {
                let o = try r.finish(nodeMemory: nodeMemory)
                summaries.append((myNames[i], o.summary))
                if !o.preempted && group.isRoot {
                    // Rank-local write: a failure ends the job (the group is already past its collectives).
                    do {
                        try HuggingFace.savePEFT(trainers[i].model, baseModel: trainers[i].options.model,
                                                 to: trainers[i].options.runDir + "/" + Self.peftFolder)
                    } catch { cluster.abort("adapter '\(myNames[i])': \(error)") }
                }
            }
        }
        let preempted = cluster.sum([summaries.contains { $0.1.preempted } ? 1 : 0])[0] > 0
        // Every adapter's figures at rank 0: each group's root sends its adapters'.
        let mineEncoded = group.isRoot ? try JSONCoding.encode(summaries.map { AdapterSetRecord.Adapter(name: $0.0, summary: $0.1) }) : Data()
        let gathered = cluster.gatherAtRoot(Array(mineEncoded))
        var record = AdapterSetRecord(adapters: [], ranks: cluster.size, nodes: cluster.nodes, groups: Self.groups(ranks: cluster.size, adapters: specs.count).count,
                                      nodeMemoryBytes: Int(nodeMemory), baseBytesPerNode: base.bytes,
                                      wallSeconds: rounded(Date().timeIntervalSince(t0), 3), tokensPerSecond: 0)
        if let gathered {
            var all: [AdapterSetRecord.Adapter] = []
            for bytes in gathered where !bytes.isEmpty {
                all += try JSONCoding.decode([AdapterSetRecord.Adapter].self, from: Data(bytes), source: "an adapter group's figures")
            }
            let order = Dictionary(uniqueKeysWithValues: specs.enumerated().map { ($1.name, $0) })
            record.adapters = all.sorted { order[$0.name]! < order[$1.name]! }
            record.tokensPerSecond = rounded(Double(record.adapters.reduce(0) { $0 + $1.tokens }) / max(record.wallSeconds, 1e-9), 1)
            do { try Files.writeAtomically(try JSONCoding.encode(record), to: runDir + "/adapter-set.json") }
            catch { cluster.abort("\(error)") }
        }
        return Outcome(summaries: summaries, preempted: preempted, record: record)
    }
}

/// RUN/adapter-set.json: written by rank 0 at the end of an adapter set's run.
public struct AdapterSetRecord: Codable {
    public struct Adapter: Codable {
        public var name: String
        public var runDir: String
        public var stepsDone: Int
        public var tokens: Int
        public var finalLoss: Double
        public var devLoss: Double
        public var worldSize: Int
        public var tokensPerSecond: Double

        enum CodingKeys: String, CodingKey {
            case name, tokens
            case runDir = "run_dir", stepsDone = "steps_done", finalLoss = "final_loss", devLoss = "dev_loss"
            case worldSize = "world_size", tokensPerSecond = "tokens_per_s"
        }

        init(name: String, summary s: RunSummary) {
            self.name = name
            runDir = "adapters/" + name
            stepsDone = s.stepsDone; tokens = s.tokens; finalLoss = s.finalLoss; devLoss = s.devLoss
            worldSize = s.worldSize; tokensPerSecond = s.tokensPerSecond
        }
    }
    public var adapters: [Adapter]
    public var ranks: Int
    public var nodes: Int
    public var groups: Int
    /// The fullest node's memory (Σ PSS of its ranks), measured once at the end.
    public var nodeMemoryBytes: Int
    /// The shared base's window, once per node.
    public var baseBytesPerNode: Int
    public var wallSeconds: Double
    /// Every adapter's tokens over the job's wall time.
    public var tokensPerSecond: Double

    enum CodingKeys: String, CodingKey {
        case adapters, ranks, nodes, groups
        case nodeMemoryBytes = "node_memory_bytes", baseBytesPerNode = "base_bytes_per_node"
        case wallSeconds = "wall_s", tokensPerSecond = "tokens_per_s"
    }
}
