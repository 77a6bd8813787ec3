import Foundation

/// A model loaded on this node's ranks: its source (what --model named, and its tokenizer), the
/// weights in the node's shared window with the shard each rank owns and loaded, the rank's
/// thread budget and model replicas, and evaluation. `train` (Trainer), `eval` and `generate`
/// use it; Trainer adds the data, the optimizer and the loop.
///
/// Every rank holds a `model` whose weights are the node's one copy: a rank reads all of it
/// and writes only the ranges it owns (`trainableShard`, and its share of the frozen arena).
public final class LoadedModel {
    /// What to load.
    public struct Options {
        public var model = "small"            // a built-in config, a config.json, a model directory or a GGUF file
        public var mode = TrainMode.lora      // adapters or not; under qlora the base is NF4
        public var lora: LoRAConfig? = TrainOptions.defaultLoRA  // the adapters' shape (lora, qlora)
        public var adapter: String? = nil     // a PEFT adapter directory to start the adapters from
        public var seqLen = 128               // tokens per sequence, at most
        public var maxBatch = 1               // sequences per forward pass of one model
        public var seed: UInt64 = 1234        // a built-in model's random initialisation
        public var threads: Int? = nil        // per rank; nil: Cluster.threads' default
        public var replicas: Int? = 1         // models per rank (nil: one per thread, for training)
        public var training = false           // the optimizer's state counts too (MemoryNeed)
        public var recompute = false          // activation checkpointing per layer (LlamaModel.recompute)
        public var exchange = ExchangeStrategy.hierarchical  // whether a reduced gradient shard is held (MemoryNeed)
        public var exchangeFloatsPerTrainable = 0.0  // --grad-compression's buffers (MemoryNeed)
        /// QLoRA with replicas: they share dequantized tiles (NF4Matmul.TileShare). false gives each
        /// replica its own, the earlier path, which tests compare against.
        var shareTiles = true
        public init() {}

        /// The base model alone, for evaluation or generation. A rank-1 adapter on q_proj
        /// with B = 0 leaves every output exactly the base's, and keeps the base frozen, so no
        /// gradient or optimizer memory is spent on it.
        public static func base(_ model: String) -> Options {
            var o = Options()
            o.model = model
            o.mode = .lora
            o.lora = try! LoRAConfig(rank: 1, alpha: 1, targets: ["q_proj"])
            return o
        }

        /// The model a checkpoint was trained as (its mode, adapters and seed) on the base `model`.
        public static func checkpoint(_ manifest: Manifest, source: String, model: String) throws -> Options {
            var o = Options()
            o.model = model
            o.mode = TrainMode(rawValue: manifest.mode) ?? .lora
            o.lora = o.mode.hasAdapters ? try LoRAConfig.fromPEFT(json: Data(manifest.loraConfigJSON.utf8), source: source) : nil
            o.seed = manifest.samplerSeed
            return o
        }
    }

    /// `Options` read and checked (the source opened, the base's tensors and shapes checked,
    /// the adapter file opened), before anything collective is built. Not collective: the
    /// caller runs it under `Cluster.agree` with its own checks.
    public struct Plan {
        public let options: Options
        public let source: ModelSource
        let adapter: SafeTensors?

        public init(_ o: Options) throws {
            guard o.seqLen >= 2 else { throw LoraDistError("--seq must be at least 2, got \(o.seqLen)") }
            guard o.maxBatch >= 1 else { throw LoraDistError("--batch must be at least 1, got \(o.maxBatch)") }
            if let r = o.replicas, r < 1 { throw LoraDistError("--replicas must be at least 1, got \(r)") }
            if o.mode.hasAdapters && o.lora == nil { throw LoraDistError("\(o.mode.rawValue) mode needs a LoRA config") }
            let source = try ModelSource(o.model)
            let config = source.config
            guard o.seqLen <= config.maxPositionEmbeddings else {
                throw LoraDistError("sequence length \(o.seqLen) must be between 1 and max_position_embeddings \(config.maxPositionEmbeddings)")
            }
            try source.checkBase(try LlamaModel.specs(config: config, lora: o.mode.hasAdapters ? o.lora : nil, nf4Base: o.mode.nf4Base))
            options = o
            self.source = source
            adapter = try o.adapter.map { try SafeTensors(path: $0 + "/adapter_model.safetensors") }
        }
    }

    public let options: Options
    public let cluster: Cluster
    public let source: ModelSource
    /// This rank's model; its weights are the node's shared window. With replicas it is sized,
    /// like each of them, for its part of `options.maxBatch` (`model.maxBatch`): training and
    /// evaluation split every pass over the models.
    public let model: LlamaModel
    let window: SharedWindow
    /// An adapter set's frozen base (nil: the frozen arena is in `window`).
    let base: SharedBase?
    /// More models on the same shared weights, each with its own activations and gradients;
    /// with `model` they split a training micro-batch or an evaluation pass over the rank's threads.
    let replicas: [LlamaModel]
    let replicaThreads: ReplicaThreads?
    /// Each model's (Σ loss, tokens, right predictions) of its part of a pass, summed in model order.
    let partials: UnsafeMutablePointer<(sum: Double, count: Int, correct: Int)>
    /// The NF4 tiles the model and its replicas dequantize together (QLoRA with replicas).
    let tileShare: NF4Matmul.TileShare?
    let budget: ThreadBudget
    /// The trainable arena range this rank owns on its node (its optimizer's range).
    public let trainableShard: Range<Int>
    /// Every arena range this rank owns: its trainable shard and its share of the frozen arena.
    let owned: [Range<Int>]
    /// Batch buffers of `options.maxBatch` sequences, sized once.
    let inputs: UnsafeMutablePointer<Int32>
    let targets: UnsafeMutablePointer<Int32>

    /// The text's tokenizer (the model's, or bytes for a built-in config).
    public var tokenizer: Tokenizer { source.tokenizer }
    public var config: ModelConfig { source.config }
    /// The rank's threads (BLAS and element-wise).
    public var threads: Int { budget.threads }
    /// BLAS threads of each model during a training step's forward and backward.
    public var blasThreadsPerReplica: Int { budget.blasThreadsPerReplica }
    public var replicaCount: Int { replicas.count + 1 }

    /// Checks `options` on every rank, then loads. Collective.
    public convenience init(_ options: Options, cluster: Cluster) throws {
        try self.init(try cluster.agree { try Plan(options) }, cluster: cluster)
    }

    /// Checks that the node can hold the model and its working memory (MemoryNeed against
    /// what the node has available: a job that does not fit is refused with one line before
    /// anything is allocated), allocates the node's window, builds the rank's model (and
    /// replicas) on it, and fills the ranges this rank owns straight from the (memory-mapped)
    /// files; then publishes, so every rank sees the whole model. Collective.
    ///
    /// With `base` (an adapter set) the frozen weights are that window's, held once per node for
    /// every adapter of the set: this model's window holds its trainable arena alone, over the
    /// ranks of `cluster` (the adapter's group) on this node. The set checks the memory of the
    /// whole set, and publishes the base once every adapter is built.
    public init(_ plan: Plan, cluster: Cluster, base: SharedBase? = nil) throws {
        let o = plan.options, source = plan.source, config = plan.source.config
        let lora = o.mode.hasAdapters ? o.lora : nil
        options = o
        self.cluster = cluster
        self.source = source
        self.base = base
        let threads = try cluster.agree { try cluster.threads(requested: o.threads) }
        let r = max(1, min(o.replicas ?? threads, o.maxBatch))
        // Without replicas the one model spreads attention's work units over every thread.
        budget = ThreadBudget(threads: threads, replicas: r)
        let attentionLanes = budget.blasThreadsPerReplica
        if base == nil {
            try cluster.agree {
                let need = try MemoryNeed(config: config, lora: lora, nf4Base: o.mode.nf4Base, ranksPerNode: cluster.node.size,
                                          maxBatch: o.maxBatch, replicas: r, seqLen: o.seqLen, training: o.training,
                                          recompute: o.recompute, threads: threads, exchange: o.exchange,
                                          exchangeFloatsPerTrainable: o.exchangeFloatsPerTrainable)
                try need.check(available: NodeMemory.availableBytes())
            }
        }
        // The weights live in the node's shared window; every rank maps all of it.
        var win: SharedWindow?
        let node = cluster.node
        let tiles = o.mode.nf4Base && r > 1 && o.shareTiles ? NF4Matmul.TileShare(config: config, lanes: r) : nil
        tileShare = tiles
        // Each model holds its part of a pass (Cluster.shard over r models: at most this many).
        let perModel = (o.maxBatch + r - 1) / r
        model = try LlamaModel(config: config, lora: lora, nf4Base: o.mode.nf4Base, maxBatch: perModel, seqLen: o.seqLen,
                               recompute: o.recompute,
                               allocate: { win = SharedWindow(node: node, count: $0); return win!.base },
                               frozen: base?.window.base, dequant: tiles?.scratch(lane: 0), attentionLanes: attentionLanes)
        window = win!
        let store = model.store
        budget.claim()
        if r > 1 {
            let values = store.values, frozen = store.frozenValues
            var more: [LlamaModel] = []
            for i in 1..<r {
                more.append(try LlamaModel(config: config, lora: lora, nf4Base: o.mode.nf4Base, maxBatch: perModel,
                                           seqLen: o.seqLen, recompute: o.recompute, allocate: { _ in values }, frozen: frozen,
                                           dequant: tiles?.scratch(lane: i)))
            }
            replicas = more
            replicaThreads = ReplicaThreads(extra: r - 1)
        } else {
            replicas = []
            replicaThreads = nil
        }
        partials = .allocate(capacity: r)
        trainableShard = cluster.owned(store.trainableCount)
        // The frozen arena's share: this node's part i of it, or of the set's base (which the
        // first adapter a rank builds fills; the others find it filled).
        let frozenShard = base.map { $0.claim() } ?? cluster.owned(store.frozenCount)
        owned = [trainableShard, (store.trainableCount + frozenShard.lowerBound)..<(store.trainableCount + frozenShard.upperBound)]
        inputs = .allocate(capacity: o.maxBatch * o.seqLen)
        targets = .allocate(capacity: o.maxBatch * o.seqLen)
        let built: LlamaModel = model, owned = owned
        try cluster.agree {
            try source.build(built, seed: o.seed, owned: owned)
            if let adapter = plan.adapter { try HuggingFace.loadAdapter(built, from: adapter, owned: owned) }
        }
        window.publish()
    }

    deinit {
        inputs.deallocate(); targets.deallocate(); partials.deallocate()
    }

    /// Makes this rank's writes to the weights it owns visible to the node, and waits for the
    /// other ranks' (sync, barrier, sync). Collective over the node.
    public func publish() { window.publish() }

    /// Bytes of the node's weight windows: one copy of every parameter per node (in an
    /// adapter set, the shared base and this adapter).
    public var windowBytes: Int { window.count * 4 + (base?.bytes ?? 0) }

    // MARK: evaluation

    /// Mean cross-entropy of next-token prediction over up to `windows` non-overlapping
    /// windows of `options.seqLen` tokens of `tokens` (evenly spread over it), split among the
    /// ranks; NaN when `tokens` holds no whole window. Collective.
    public func evaluate<C: RandomAccessCollection>(tokens: C, windows limit: Int) -> Double where C.Element == Int32, C.Index == Int {
        evaluation(tokens: tokens, windows: limit).loss
    }

    /// What `evaluate` measures, with the top-1 next-token accuracy on the same windows.
    public struct Evaluation: Equatable, Sendable {
        public var loss: Double       // mean cross-entropy, nats per token
        public var accuracy: Double   // fraction of tokens whose most likely prediction is the next token
        public var perplexity: Double { Foundation.exp(loss) }
        public init(loss: Double, accuracy: Double) { self.loss = loss; self.accuracy = accuracy }
        public static let undefined = Evaluation(loss: .nan, accuracy: .nan)
    }

    /// Loss and top-1 accuracy over the windows `evaluate` reads, `options.maxBatch` windows per
    /// pass split over the model and its replicas as in training (`eachModel`). Each model's
    /// sums are added in model order once all are done, so the result does not depend on which
    /// thread finishes first. Collective.
    public func evaluation<C: RandomAccessCollection>(tokens: C, windows limit: Int) -> Evaluation where C.Element == Int32, C.Index == Int {
        let T = options.seqLen, maxBatch = options.maxBatch, n = replicaCount
        let inputs = self.inputs, targets = self.targets, partials = self.partials
        let available = (tokens.count - 1) / T
        guard available > 0 else { return .undefined }
        let windows = max(1, min(limit, available))
        let stride = available / windows  // spread the windows over the whole text
        let mine = Cluster.shard(windows, parts: cluster.size, index: cluster.rank)
        var sum = 0.0, count = 0.0, correct = 0.0
        var w = mine.lowerBound
        while w < mine.upperBound {
            let b = min(maxBatch, mine.upperBound - w)
            for i in 0..<b {
                let start = (w + i) * stride * T
                for t in 0..<T {
                    inputs[i * T + t] = tokens[start + t]
                    targets[i * T + t] = tokens[start + t + 1]
                }
            }
            partials.update(repeating: (0, 0, 0), count: n)
            eachModel(b) { r, m, part in
                m.forward(ids: inputs + part.lowerBound * T, batch: part.count)
                partials[r] = m.loss(targets: targets + part.lowerBound * T, batch: part.count)
            }
            for r in 0..<n {
                sum += partials[r].sum
                count += Double(partials[r].count)
                correct += Double(partials[r].correct)
            }
            w += b
        }
        let total = cluster.sum([sum, count, correct])
        return Evaluation(loss: total[0] / max(total[1], 1), accuracy: total[2] / max(total[1], 1))
    }

    // MARK: training passes (Trainer.step)

    /// Zeroes the gradient of the model and of every replica.
    func zeroGradients() {
        model.store.grads.zero()
        for m in replicas { m.store.grads.zero() }
    }

    /// body(r, m, part) for model r (`model`, then the replicas) and its part of the b
    /// sequences of a pass (Cluster.shard; models without sequences are skipped), each on a
    /// thread of its own with one BLAS thread: the calling thread runs `model`. Without
    /// replicas, `model` on the calling thread with every thread to its sgemm.
    func eachModel(_ b: Int, _ body: @escaping (Int, LlamaModel, Range<Int>) -> Void) {
        guard let threads = replicaThreads else { return body(0, model, 0..<b) }
        let n = replicaCount, models = [model] + replicas, budget = self.budget
        let run = { budget.replicaPhase { threads.run { r in
            let part = Cluster.shard(b, parts: n, index: r)
            if !part.isEmpty { body(r, models[r], part) }
        } } }
        // The models with sequences (the first min(b, n): Cluster.shard) share NF4 tiles.
        if let tileShare { tileShare.pass(lanes: min(b, n), run) } else { run() }
    }

    /// Forward and backward of the b sequences in `inputs`, split over the model and its
    /// replicas (`eachModel`). Returns Σ loss. The gradients stay in each model's own buffer
    /// until `sumReplicaGradients`.
    func replicated(_ b: Int, seeds: UnsafePointer<UInt64>, scale: Float) -> Double {
        let T = options.seqLen, n = replicaCount
        let inputs = self.inputs, targets = self.targets, partials = self.partials
        partials.update(repeating: (0, 0, 0), count: n)
        eachModel(b) { r, m, part in
            let ids = inputs + part.lowerBound * T, tg = targets + part.lowerBound * T
            m.forward(ids: ids, batch: part.count, dropoutSeeds: seeds + part.lowerBound)
            partials[r] = m.loss(targets: tg, batch: part.count)
            m.backward(ids: ids, targets: tg, batch: part.count, scale: scale)
        }
        return (0..<n).reduce(0.0) { $0 + partials[$1].sum }
    }

    /// Adds the replicas' gradients into the rank's, in replica order (the same bits every run).
    func sumReplicaGradients() {
        let count = model.store.trainableCount, n = replicas.count + 1
        let dst = model.store.grads.ptr, replicas = self.replicas
        replicaThreads!.run { r in
            let part = Cluster.shard(count, parts: n, index: r)
            for m in replicas {
                let src = m.store.grads.ptr
                for i in part { dst[i] += src[i] }
            }
        }
    }

    // MARK: checkpoints

    /// The trainable elements this rank owns, tensor by tensor: (parameter, element range
    /// within the tensor, arena offset of its first element).
    var ownedPieces: [(Param, Range<Int>, Int)] {
        let owned = trainableShard
        return model.store.trainable.compactMap { p in
            let span = (p.offset..<(p.offset + p.count)).clamped(to: owned)
            return span.isEmpty ? nil : (p, (span.lowerBound - p.offset)..<(span.upperBound - p.offset), span.lowerBound)
        }
    }

    /// Checks that a checkpoint was made for this model: the same model config, the same
    /// adapters, and (adapters only) the base weights they were trained on (compared on rank 0).
    /// `src` names the manifest in messages.
    public func check(_ manifest: Manifest, source src: String) throws {
        let saved = try ModelConfig.fromHuggingFace(json: Data(manifest.modelConfigJSON.utf8), source: src)
        guard saved == model.config else { throw LoraDistError("\(src): the checkpoint's model config differs from --model \(options.model)") }
        guard let lora = model.lora else { return }
        let savedLoRA = try LoRAConfig.fromPEFT(json: Data(manifest.loraConfigJSON.utf8), source: src)
        guard savedLoRA == lora else {
            throw LoraDistError("\(src): the checkpoint's LoRA config (r \(savedLoRA.rank), targets \(savedLoRA.targets.joined(separator: ","))) differs from this run's")
        }
        if cluster.isRoot {
            let identity = BaseIdentity.of(model)
            guard identity == manifest.baseIdentity else {
                throw LoraDistError("\(src): the base weights differ from the ones the adapters were trained on (\(identity) here, \(manifest.baseIdentity) in the checkpoint)")
            }
        }
    }

    /// The checkpoint's values of `kinds` ("param", "adam_m", "adam_v") for the trainable range
    /// this rank owns, whatever world size saved them, each checked against its checksum.
    /// Not collective; reads into new buffers only.
    func readOwned(_ kinds: [String], manifest: Manifest, dir: String) throws -> [[Float]] {
        let reader = CheckpointFiles.Reader(dir: dir)
        let index = CheckpointFiles.index(manifest)
        let range = trainableShard
        var out = kinds.map { _ in [Float](repeating: 0, count: range.count) }
        for (p, r, arena) in ownedPieces {
            let at = arena - range.lowerBound
            for k in kinds.indices {
                try out[k].withUnsafeMutableBufferPointer {
                    try CheckpointFiles.gather(p.name, kind: kinds[k], range: r, into: $0.baseAddress! + at,
                                               manifest: manifest, reader: reader, index: index)
                }
            }
        }
        return out
    }

    /// Writes `values` (this rank's trainable shard) into the shared weights; `publish` shows them to the node.
    func setOwnedTrainable(_ values: [Float]) {
        let range = trainableShard
        values.withUnsafeBufferPointer { (model.store.values + range.lowerBound).update(from: $0.baseAddress!, count: range.count) }
    }

    /// The trained tensors of the checkpoint in `dir` in place of this model's, after checking
    /// it was made for this model. Collective: every rank reads and verifies its owned range
    /// first; the shared weights change only when every rank has succeeded.
    public func loadTrained(fromCheckpoint dir: String) throws {
        let values = try cluster.agree { () throws -> [Float] in
            let manifest = try CheckpointFiles.readManifest(dir)
            try check(manifest, source: dir + "/" + CheckpointFiles.manifestName)
            return try readOwned(["param"], manifest: manifest, dir: dir)[0]
        }
        setOwnedTrainable(values)
        publish()
    }
}

/// The frozen base of an adapter set: one copy per node, in a window over every rank of the
/// node, read by every adapter's model (LoadedModel's `base`). Local rank i of the node fills
/// part i, once, through the first adapter it builds.
public final class SharedBase {
    let window: SharedWindow
    /// The frozen arena range this rank fills.
    let owned: Range<Int>
    private var filled = false

    /// `slots` floats (ParameterStore.frozenSlots) over the ranks of `cluster.node`. Collective over the node.
    public init(cluster: Cluster, slots: Int) {
        window = SharedWindow(node: cluster.node, count: slots)
        owned = cluster.owned(slots)
    }

    public var bytes: Int { window.count * 4 }

    /// The range the calling model fills: this rank's part the first time, nothing afterwards.
    func claim() -> Range<Int> {
        defer { filled = true }
        return filled ? 0..<0 : owned
    }

    /// Shows every rank's part to the node (sync, barrier, sync). Collective over the node.
    public func publish() { window.publish() }
}
