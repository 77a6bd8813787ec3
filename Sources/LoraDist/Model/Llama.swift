import Foundation

/// A Llama-style decoder with Hugging Face LlamaForCausalLM's math and names, and the
/// variations of the families built on it (ModelFamily): projection biases (Qwen2),
/// per-head q/k RMSNorm (Qwen3), a sliding attention window (Mistral), RoPE scaling
/// (Llama 3.x: llama3; linear).
///
/// Forward and backward are written out layer by layer over flat buffers sized
/// once for `maxBatch` sequences of `seqLen` tokens. Shapes in comments use
/// N = batch·T rows, C = hidden, H/KV = query/key-value heads, D = head dim,
/// I = intermediate, V = vocabulary.
public final class LlamaModel {
    public let config: ModelConfig
    public let lora: LoRAConfig?
    public let store: ParameterStore
    public let maxBatch: Int
    public let seqLen: Int
    let layers: [DecoderLayer]
    let embed: Param
    let finalNorm: Param
    let lmHead: Linear
    let rope: RoPE
    let acts: Activations
    /// Activation checkpointing per layer (`train --recompute`): one layer's saved activations
    /// instead of every layer's, for one more forward of each layer but the last in the backward.
    /// Selective, as in Megatron: each layer still keeps its attention output and log-sum-exp
    /// (2·T·H·D + B·H·T floats per sequence), so the recomputed forward skips attention, and
    /// skips the down projection, whose output the residual stream holds (DecoderLayer.recompute).
    public let recompute: Bool

    /// The parameters a model of this config has, and which of them train.
    /// lora == nil means full fine-tuning: everything trains. `nf4Base` (QLoRA)
    /// stores every frozen projection weight as NF4; embedding, norms and head stay fp32.
    ///
    /// The order is the order in which the backward completes gradients: head,
    /// final norm, layers last to first, embedding (which a tied head also feeds).
    /// The trainable arena follows it, so gradient buckets fill front to back and
    /// each can be sent while the backward goes on.
    public static func specs(config c: ModelConfig, lora: LoRAConfig?, nf4Base: Bool = false) throws -> [ParamSpec] {
        let full = lora == nil
        precondition(!(full && nf4Base), "an NF4 base is frozen: it needs LoRA")
        var s: [ParamSpec] = []
        func add(_ name: String, _ shape: [Int], decay: Bool = true) {
            s.append(ParamSpec(name: name, shape: shape, trainable: full, decay: decay))
        }
        if !c.tieWordEmbeddings { add("lm_head.weight", [c.vocabSize, c.hiddenSize]) }
        add("model.norm.weight", [c.hiddenSize], decay: false)
        let q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
        for i in stride(from: c.numHiddenLayers - 1, through: 0, by: -1) {
            let p = "model.layers.\(i)."
            add(p + "input_layernorm.weight", [c.hiddenSize], decay: false)
            if c.qkNorm {
                add(p + "self_attn.q_norm.weight", [c.headDim], decay: false)
                add(p + "self_attn.k_norm.weight", [c.headDim], decay: false)
            }
            // Projection by projection, except that the parts of a fused group (q, k, v; gate, up)
            // lay out their weights one after another, then their biases, A matrices and B
            // matrices: stacked, the weights (and the A matrices) are the one matrix the group
            // multiplies by (LinearGroup). A group of one is the plain order: weight, bias, A, B.
            let all = LlamaModel.projections(c, q: q, kv: kv)
            for group in LlamaModel.projectionGroups {
                let parts = all.filter { group.contains($0.0) }
                func module(_ n: String) -> String { p + (["gate_proj", "up_proj", "down_proj"].contains(n) ? "mlp." : "self_attn.") + n }
                for (n, o, inp) in parts {
                    s.append(ParamSpec(name: module(n) + ".weight", shape: [o, inp], trainable: full, decay: true, nf4: nf4Base))
                }
                for (n, o, _) in parts where c.biasedProjections.contains(n) { add(module(n) + ".bias", [o], decay: false) }
                guard let lora else { continue }
                let adapted = parts.filter { lora.targets.contains($0.0) }
                for (n, o, inp) in adapted {
                    guard lora.rank <= min(o, inp) else {
                        throw LoraDistError("LoRA rank \(lora.rank) is larger than \(n) allows (min(out, in) = \(min(o, inp)))")
                    }
                    s.append(ParamSpec(name: module(n) + ".lora_A.weight", shape: [lora.rank, inp], trainable: true, decay: true))
                }
                for (n, o, _) in adapted {
                    s.append(ParamSpec(name: module(n) + ".lora_B.weight", shape: [o, lora.rank], trainable: true, decay: true))
                }
            }
            add(p + "post_attention_layernorm.weight", [c.hiddenSize], decay: false)
        }
        add("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize])
        return s
    }

    /// The projections of a layer in forward order, grouped as they are fused: those of a group
    /// read the same input and are one product (LinearGroup).
    static let projectionGroups = [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]

    /// (name, out, in) of each projection, in forward order.
    static func projections(_ c: ModelConfig, q: Int, kv: Int) -> [(String, Int, Int)] {
        [("q_proj", q, c.hiddenSize), ("k_proj", kv, c.hiddenSize), ("v_proj", kv, c.hiddenSize),
         ("o_proj", c.hiddenSize, q), ("gate_proj", c.intermediateSize, c.hiddenSize),
         ("up_proj", c.intermediateSize, c.hiddenSize), ("down_proj", c.hiddenSize, c.intermediateSize)]
    }

    public init(config: ModelConfig, lora: LoRAConfig?, nf4Base: Bool = false, maxBatch: Int, seqLen: Int,
                recompute: Bool = false, fuseProjections: Bool = LlamaModel.fuseProjections,
                allocate: ((Int) -> FPtr)? = nil, frozen: FPtr? = nil,
                dequant shared: NF4Matmul.Scratch? = nil, attentionLanes: Int = 1) throws {
        try config.validate()
        guard seqLen >= 1, seqLen <= config.maxPositionEmbeddings else {
            throw LoraDistError("sequence length \(seqLen) must be between 1 and max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        self.config = config
        self.lora = lora
        self.maxBatch = maxBatch
        self.seqLen = seqLen
        store = ParameterStore(specs: try Self.specs(config: config, lora: lora, nf4Base: nf4Base), allocate: allocate, frozen: frozen)
        let n = maxBatch * seqLen
        let dequant = nf4Base ? shared ?? NF4Matmul.Scratch(config: config) : nil  // shared: a replica's lane (TileShare)
        embed = store["model.embed_tokens.weight"]
        finalNorm = store["model.norm.weight"]
        var linearIndex = 0
        var layers: [DecoderLayer] = []
        // With recompute the layers share one set of saved activations: the backward re-runs a
        // layer's forward from its input (kept in the residual stream) before its backward.
        // The attention output and lse stay per layer (DecoderLayer.attOut).
        self.recompute = recompute
        let shared = recompute ? LayerActivations(config: config, rows: n, batch: maxBatch, seqLen: seqLen) : nil
        for i in 0..<config.numHiddenLayers {
            layers.append(DecoderLayer(index: i, config: config, store: store, lora: lora, rows: n,
                                       batch: maxBatch, seqLen: seqLen, dequant: dequant, fuse: fuseProjections,
                                       attentionLanes: attentionLanes,
                                       linearIndex: &linearIndex,
                                       saved: shared ?? LayerActivations(config: config, rows: n, batch: maxBatch, seqLen: seqLen)))
        }
        self.layers = layers
        firstLayerInputGradient = embed.grad != nil || layers.first?.ln1.grad != nil
        lmHead = Linear(name: "lm_head", inDim: config.hiddenSize, outDim: config.vocabSize, store: store,
                        lora: nil, index: linearIndex, maxRows: n,
                        weightName: config.tieWordEmbeddings ? "model.embed_tokens.weight" : nil)
        rope = RoPE(headDim: config.headDim, maxPositions: seqLen,
                    inverseFrequencies: RopeScaling.inverseFrequencies(headDim: config.headDim, theta: config.ropeTheta,
                                                                       scaling: config.ropeScaling))
        acts = Activations(config: config, rows: n, seqLen: seqLen, layers: config.numHiddenLayers,
                           attention: Self.attentionShape(config, batch: maxBatch, seqLen: seqLen, lanes: attentionLanes))
    }

    /// Floats one model allocates besides its weights, for `maxBatch` sequences of `seqLen`
    /// tokens: the gradient of the trainable arena, the activations each layer saves and the
    /// backward's scratch (Activations, DecoderLayer), the logits (V per row), the adapters'
    /// saved products and dropout masks, the NF4 dequantization tile, the RoPE tables. What
    /// `init` allocates, buffer for buffer (ModelMemoryTests checks it on built models), in
    /// Double so that sizes which would overflow an Int are measured, not trapped on.
    public static func workingFloats(config c: ModelConfig, lora: LoRAConfig?, nf4Base: Bool = false, maxBatch: Int,
                                     seqLen: Int, recompute: Bool = false, attentionLanes: Int = 1) throws -> Double {
        let specs = try specs(config: c, lora: lora, nf4Base: nf4Base)
        let n = Double(maxBatch) * Double(seqLen), T = Double(seqLen), B = Double(maxBatch)
        let C = Double(c.hiddenSize), I = Double(c.intermediateSize), V = Double(c.vocabSize), L = Double(c.numHiddenLayers)
        let H = Double(c.numAttentionHeads), KV = Double(c.numKeyValueHeads)
        let q = H * Double(c.headDim), kv = KV * Double(c.headDim)
        let qk = c.qkNorm ? 1.0 : 0
        let grads = Double(specs.filter(\.trainable).reduce(0) { $0 + $1.count })
        // Activations: residual stream (L+1), final norm, logits and their row statistics, backward scratch,
        // attention's scratch (Attention.Shape.scratchFloats: a stacked block of scores per lane, the
        // backward's partial dK, dV)
        let attScratch = attentionShape(c, batch: maxBatch, seqLen: seqLen, lanes: attentionLanes).scratchFloats
        let shared = (L + 1) * n * C + n * C + n + n * V + 2 * n + 2 * n * C + 2 * n * q + 2 * n * kv + qk * (n * q + n * kv)
            + 3 * n * I + attScratch
        // LayerActivations (one set under recompute, else one per layer): x1, rstd1, q/k/v, (raw q/k and their rstd), mid, x2, rstd2, gate/up/act, tmp
        let perLayer = n * C + n + n * q + 2 * n * kv + qk * (n * q + n * kv + n * H + n * KV)
            + n * C + n * C + n + 3 * n * I + n * C
        // each layer's own, recompute or not: the attention output and lse
        let attention = n * q + B * H * T
        var adapters = 0.0
        if let lora {
            for (name, _, inDim) in projections(c, q: Int(q), kv: Int(kv)) where lora.targets.contains(name) {
                adapters += 2 * n * Double(lora.rank) + (lora.dropout > 0 ? 3 * n * Double(inDim) : 0)
            }
        }
        let dequant = nf4Base ? Double(max(NF4Matmul.tileFloats, c.hiddenSize, c.intermediateSize, c.numAttentionHeads * c.headDim)) : 0
        let rope = T * Double(c.headDim / 2) * 2
        return grads + shared + (recompute ? 1 : L) * perLayer + L * (attention + adapters) + dequant + rope
    }

    /// Attention's shape for `batch` sequences; its scratch is Activations.attScratch.
    static func attentionShape(_ c: ModelConfig, batch: Int, seqLen: Int, lanes: Int) -> Attention.Shape {
        Attention.Shape(batch: batch, seqLen: seqLen, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                        headDim: c.headDim, window: c.slidingWindow, lanes: lanes)
    }

    /// Whether models are built with q, k, v and gate, up as one product each (where their weights
    /// allow, LinearGroup). `bench step --unfused` turns it off to measure what fusing gains.
    nonisolated(unsafe) public static var fuseProjections = true

    public var totalParams: Int { store.elementCount }
    public var nf4Base: Bool { store.params.contains { $0.spec.nf4 } }
    public var trainableParams: Int { store.trainableCount }
    /// Parameters of the model itself, without adapters.
    public var baseParams: Int { store.params.filter { !$0.name.contains(".lora_") }.reduce(0) { $0 + $1.count } }

    /// Hugging Face's initialisation: normal(0, initializer_range) matrices, unit norms, zero biases; LoRA A
    /// Kaiming-uniform (bound 1/√in), B zero. Each tensor draws from its own
    /// stream seeded by (seed, name), so the result depends neither on the layout
    /// nor on which rank writes which part. Only the `owned` arena ranges are written.
    /// `adaptersOnly` leaves the base alone (a source that loads it next).
    public func initialize(seed: UInt64, owned: [Range<Int>]? = nil, adaptersOnly: Bool = false) {
        for p in store.params where !adaptersOnly || p.name.contains(".lora_") {
            store.write(p, owned: owned ?? store.all) { Self.initialValues(p.spec, seed: seed, std: config.initializerRange) }
        }
    }

    public static func initialValues(_ spec: ParamSpec, seed: UInt64, std: Float = 0.02) -> [Float] {
        var g = SplitMix64(seed: SplitMix64.mix(seed, fnv1a(spec.name)))
        if spec.name.hasSuffix("norm.weight") { return [Float](repeating: 1, count: spec.count) }
        if spec.name.hasSuffix(".bias") { return [Float](repeating: 0, count: spec.count) }
        if spec.name.contains(".lora_B.") { return [Float](repeating: 0, count: spec.count) }
        if spec.name.contains(".lora_A.") {
            let bound = 1 / Float(spec.shape[1]).squareRoot()
            return (0..<spec.count).map { _ in (2 * g.uniform() - 1) * bound }
        }
        return (0..<spec.count).map { _ in std * g.normal() }
    }

    // MARK: forward

    /// Runs the decoder on ids[batch, T]; returns logits [batch·T, V] (valid until the next call).
    @discardableResult
    public func forward(ids: UnsafePointer<Int32>, batch: Int, dropoutSeeds: UnsafePointer<UInt64>? = nil) -> FPtr {
        precondition(batch <= maxBatch)
        let n = batch * seqLen, C = config.hiddenSize, a = acts
        a.crossEntropyStatsValid = false
        Embedding.forward(out: a.res[0].ptr, ids: ids, table: embed.value, n: n, dim: C)
        for (l, layer) in layers.enumerated() {
            layer.forward(resIn: a.res[l].ptr, resOut: a.res[l + 1].ptr, batch: batch, rope: rope,
                          dropoutSeeds: dropoutSeeds, scratch: a.attScratch.ptr)
        }
        RMSNorm.forward(out: a.lnf.ptr, rstd: a.lnfRstd.ptr, x: a.res[layers.count].ptr, w: finalNorm.value,
                        n: n, dim: C, eps: config.rmsNormEps)
        lmHead.forward(y: a.logits.ptr, x: a.lnf.ptr, n: n, seqLen: seqLen, dropoutSeeds: nil)
        return a.logits.ptr
    }

    /// Σ cross-entropy, labelled-token count and top-1 hits of the last forward.
    public func loss(targets: UnsafePointer<Int32>, batch: Int) -> (sum: Double, count: Int, correct: Int) {
        Profile.measure(.elementwise) {
            defer { acts.crossEntropyStatsValid = true }
            return CrossEntropy.forward(logits: acts.logits.ptr, targets: targets, n: batch * seqLen, vocab: config.vocabSize,
                                        stats: acts.crossEntropyStats.ptr)
        }
    }

    // MARK: backward

    /// Whether the backward computes ∂L/∂(the first layer's input): only the embedding's gradient
    /// and the first input norm's read it, so under LoRA (both frozen) the first layer skips its
    /// q, k, v input product and that norm's backward, as autograd skips what no leaf needs.
    /// A `var` so tests can ask for the gradient and compare.
    var firstLayerInputGradient: Bool

    /// Accumulates gradients of scale · Σ loss into the trainable arena.
    /// Needs the activations of the forward just run on the same batch.
    public func backward(ids: UnsafePointer<Int32>, targets: UnsafePointer<Int32>, batch: Int, scale: Float,
                         afterLayer: ((Int) -> Void)? = nil) {
        let n = batch * seqLen, C = config.hiddenSize, a = acts
        // dlogits overwrite the logits in place: [N, V]
        CrossEntropy.backward(dlogits: a.logits.ptr, logits: a.logits.ptr, targets: targets, n: n,
                              vocab: config.vocabSize, scale: scale,
                              stats: a.crossEntropyStatsValid ? UnsafePointer(a.crossEntropyStats.ptr) : nil)
        a.crossEntropyStatsValid = false
        lmHead.backward(dx: a.dLn.ptr, dy: a.logits.ptr, x: a.lnf.ptr, n: n, accumulateDx: false)
        a.dRes.ptr.update(repeating: 0, count: n * C)
        RMSNorm.backward(dx: a.dRes.ptr, dw: finalNorm.grad, dout: a.dLn.ptr, x: a.res[layers.count].ptr,
                         w: finalNorm.value, rstd: a.lnfRstd.ptr, n: n, dim: C)
        for l in stride(from: layers.count - 1, through: 0, by: -1) {
            // The last layer's activations are still there from the forward; the others' are
            // recomputed from the layer's input, bit for bit what the forward saved.
            if recompute && l < layers.count - 1 {
                layers[l].recompute(resIn: a.res[l].ptr, batch: batch, rope: rope)
            }
            layers[l].backward(resIn: a.res[l].ptr, batch: batch, rope: rope, a: a,
                               inputGradient: l > 0 || firstLayerInputGradient)
            afterLayer?(l)
        }
        if let g = embed.grad {
            Embedding.backward(dTable: g, ids: ids, dout: a.dRes.ptr, n: n, dim: C)
        }
    }

    /// All projections, for export and fusing.
    public var linears: [Linear] { layers.flatMap(\.linears) + [lmHead] }
}

/// Backward scratch shared by all layers, and the residual stream.
final class Activations {
    let res: [FloatBuffer]          // L+1 × [N, C]: input of each layer, output of the last
    let lnf: FloatBuffer, lnfRstd: FloatBuffer
    let logits: FloatBuffer         // [N, V]
    /// Each row's largest logit and Σ exp(logit − it) [N, 2], from loss(); valid until the next
    /// forward or backward, so a backward without loss() finds them itself.
    let crossEntropyStats: FloatBuffer
    var crossEntropyStatsValid = false
    let dRes: FloatBuffer, dLn: FloatBuffer        // [N, C]
    let dQKV: FloatBuffer           // gradient of the q, k, v projections' output [N, H·D + 2·KV·D]
    let dAttOut: FloatBuffer        // [N, H·D]
    let dq: FloatBuffer?, dk: FloatBuffer?         // after the q/k norms (Qwen3): [N, H·D], [N, KV·D]
    let dGateUp: FloatBuffer        // gradient of the gate, up projections' output [N, 2·I]
    let dAct: FloatBuffer           // [N, I]
    let attScratch: FloatBuffer     // Attention's: per lane a stacked block of scores and their gradient; partial dK, dV

    init(config c: ModelConfig, rows n: Int, seqLen: Int, layers: Int, attention: Attention.Shape) {
        let q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
        res = (0...layers).map { _ in FloatBuffer(n * c.hiddenSize) }
        lnf = FloatBuffer(n * c.hiddenSize); lnfRstd = FloatBuffer(n)
        logits = FloatBuffer(n * c.vocabSize)
        crossEntropyStats = FloatBuffer(2 * n)
        dRes = FloatBuffer(n * c.hiddenSize); dLn = FloatBuffer(n * c.hiddenSize)
        dQKV = FloatBuffer(n * (q + 2 * kv)); dAttOut = FloatBuffer(n * q)
        dq = c.qkNorm ? FloatBuffer(n * q) : nil
        dk = c.qkNorm ? FloatBuffer(n * kv) : nil
        dGateUp = FloatBuffer(2 * n * c.intermediateSize)
        dAct = FloatBuffer(n * c.intermediateSize)
        attScratch = FloatBuffer(attention.scratchCount)
    }
}

/// What one layer's backward needs of its forward, N = maxBatch·T rows: every layer's own, or
/// one set all layers share under recompute (the attention output and lse aside: DecoderLayer's own).
final class LayerActivations {
    let x1: FloatBuffer, rstd1: FloatBuffer          // norm1 out [N, C], [N]
    /// The q, k, v projections' output [N, H·D + 2·KV·D], q, k and v side by side in each row;
    /// q and k turned by RoPE in place, unless (Qwen3) they are normalised into qn, kn first.
    let qkv: FloatBuffer
    let qn: FloatBuffer?, kn: FloatBuffer?           // Qwen3: q, k after their norms and RoPE [N, H·D], [N, KV·D]
    let qRstd: FloatBuffer?, kRstd: FloatBuffer?     // [N·H], [N·KV]
    let mid: FloatBuffer                             // x + attention [N, C]
    let x2: FloatBuffer, rstd2: FloatBuffer          // norm2 out
    let gateUp: FloatBuffer                          // the gate, up projections' output side by side [N, 2·I]
    let act: FloatBuffer                             // [N, I]
    let tmp: FloatBuffer                             // [N, C] projection outputs before the residual add

    init(config c: ModelConfig, rows n: Int, batch: Int, seqLen: Int) {
        let qd = c.numAttentionHeads * c.headDim, kvd = c.numKeyValueHeads * c.headDim
        x1 = FloatBuffer(n * c.hiddenSize); rstd1 = FloatBuffer(n)
        qkv = FloatBuffer(n * (qd + 2 * kvd))
        qn = c.qkNorm ? FloatBuffer(n * qd) : nil
        kn = c.qkNorm ? FloatBuffer(n * kvd) : nil
        qRstd = c.qkNorm ? FloatBuffer(n * c.numAttentionHeads) : nil
        kRstd = c.qkNorm ? FloatBuffer(n * c.numKeyValueHeads) : nil
        mid = FloatBuffer(n * c.hiddenSize)
        x2 = FloatBuffer(n * c.hiddenSize); rstd2 = FloatBuffer(n)
        gateUp = FloatBuffer(2 * n * c.intermediateSize)
        act = FloatBuffer(n * c.intermediateSize)
        tmp = FloatBuffer(n * c.hiddenSize)
    }
}

/// One block: x + attn(norm(x)), then + mlp(norm(·)). Its backward reads `saved`.
final class DecoderLayer {
    let c: ModelConfig
    let ln1: Param, ln2: Param
    let qNorm: Param?, kNorm: Param?                 // Qwen3: RMSNorm over each head's D
    let qkv: LinearGroup, gateUp: LinearGroup        // q, k, v and gate, up: one product each where they can
    let o: Linear, down: Linear
    var q: Linear { qkv.parts[0] }
    var k: Linear { qkv.parts[1] }
    var v: Linear { qkv.parts[2] }
    var gate: Linear { gateUp.parts[0] }
    var up: Linear { gateUp.parts[1] }
    let seqLen: Int
    /// Attention's work units run at once (Attention.Shape.lanes).
    let attentionLanes: Int
    let saved: LayerActivations
    var x1: FloatBuffer { saved.x1 }
    var rstd1: FloatBuffer { saved.rstd1 }
    var proj: FloatBuffer { saved.qkv }
    var qn: FloatBuffer? { saved.qn }
    var kn: FloatBuffer? { saved.kn }
    var qRstd: FloatBuffer? { saved.qRstd }
    var kRstd: FloatBuffer? { saved.kRstd }
    /// Attention's output [N, H·D] and log-sum-exp per row [B, H, T]: this layer's own even under
    /// recompute, so that the recomputed forward need not run attention again.
    let attOut: FloatBuffer, lse: FloatBuffer
    var mid: FloatBuffer { saved.mid }
    var x2: FloatBuffer { saved.x2 }
    var rstd2: FloatBuffer { saved.rstd2 }
    var gu: FloatBuffer { saved.gateUp }
    var act: FloatBuffer { saved.act }
    var tmp: FloatBuffer { saved.tmp }

    var linears: [Linear] { [q, k, v, o, gate, up, down] }

    init(index i: Int, config c: ModelConfig, store: ParameterStore, lora: LoRAConfig?, rows n: Int,
         batch: Int, seqLen: Int, dequant: NF4Matmul.Scratch?, fuse: Bool, attentionLanes: Int, linearIndex: inout Int,
         saved: LayerActivations) {
        self.c = c
        self.seqLen = seqLen
        self.attentionLanes = attentionLanes
        self.saved = saved
        attOut = FloatBuffer(n * c.numAttentionHeads * c.headDim)
        lse = FloatBuffer(batch * c.numAttentionHeads * seqLen)
        let p = "model.layers.\(i)."
        ln1 = store[p + "input_layernorm.weight"]
        ln2 = store[p + "post_attention_layernorm.weight"]
        qNorm = store.byName[p + "self_attn.q_norm.weight"]
        kNorm = store.byName[p + "self_attn.k_norm.weight"]
        let qd = c.numAttentionHeads * c.headDim, kvd = c.numKeyValueHeads * c.headDim
        func lin(_ name: String, _ inDim: Int, _ outDim: Int) -> Linear {
            linearIndex += 1
            return Linear(name: p + name, inDim: inDim, outDim: outDim, store: store, lora: lora,
                          index: linearIndex, maxRows: n, dequant: dequant)
        }
        qkv = LinearGroup([(p + "self_attn.q_proj", qd), (p + "self_attn.k_proj", kvd), (p + "self_attn.v_proj", kvd)],
                          inDim: c.hiddenSize, store: store, lora: lora, linearIndex: &linearIndex, maxRows: n,
                          dequant: dequant, fuse: fuse)
        o = lin("self_attn.o_proj", qd, c.hiddenSize)
        gateUp = LinearGroup([(p + "mlp.gate_proj", c.intermediateSize), (p + "mlp.up_proj", c.intermediateSize)],
                             inDim: c.hiddenSize, store: store, lora: lora, linearIndex: &linearIndex, maxRows: n,
                             dequant: dequant, fuse: fuse)
        down = lin("mlp.down_proj", c.intermediateSize, c.hiddenSize)
    }

    /// Where attention reads q and k, and their row strides: the projections' columns, or
    /// (Qwen3) their normalised copies. v is always the projections' last columns.
    func attentionInputs() -> (q: FPtr, ldq: Int, k: FPtr, ldk: Int, v: FPtr) {
        let qd = c.numAttentionHeads * c.headDim, kvd = c.numKeyValueHeads * c.headDim, F = qkv.width
        if let qn, let kn { return (qn.ptr, qd, kn.ptr, kvd, proj.ptr + qd + kvd) }
        return (proj.ptr, F, proj.ptr + qd, F, proj.ptr + qd + kvd)
    }

    func shape(_ batch: Int, ldq: Int, ldk: Int) -> Attention.Shape {
        var s = LlamaModel.attentionShape(c, batch: batch, seqLen: seqLen, lanes: attentionLanes)
        s.qLD = ldq; s.kLD = ldk; s.vLD = qkv.width
        return s
    }

    func forward(resIn: FPtr, resOut: FPtr, batch: Int, rope: RoPE, dropoutSeeds: UnsafePointer<UInt64>?, scratch: FPtr) {
        let n = batch * seqLen, C = c.hiddenSize, T = seqLen
        attentionInputsForward(resIn: resIn, batch: batch, rope: rope, dropoutSeeds: dropoutSeeds)
        let at = attentionInputs()
        Attention.forward(out: attOut.ptr, lse: lse.ptr, q: at.q, k: at.k, v: at.v, scratch: scratch,
                          shape(batch, ldq: at.ldq, ldk: at.ldk))
        mlpInputsForward(resIn: resIn, batch: batch, dropoutSeeds: dropoutSeeds)
        down.forward(y: tmp.ptr, x: act.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
        Residual.forward(out: resOut, a: mid.ptr, b: tmp.ptr, count: n * C)
    }

    /// Re-runs the forward from the layer's input for what the backward reads of the shared set
    /// (x1, q/k/v, mid, x2, gate/up, act), the same operations on the same values as the forward.
    /// Not attention (its output and lse are this layer's own), not the down projection (the
    /// residual stream holds the layer's output), not the adapters' x·Aᵀ and dropout masks (each
    /// projection keeps its own): their B products only.
    func recompute(resIn: FPtr, batch: Int, rope: RoPE) {
        attentionInputsForward(resIn: resIn, batch: batch, rope: rope, dropoutSeeds: nil, recomputing: true)
        mlpInputsForward(resIn: resIn, batch: batch, dropoutSeeds: nil, recomputing: true)
    }

    /// x1 = norm(x); q, k, v = rope(q(x1)), rope(k(x1)), v(x1) (Qwen3: q, k normalised first).
    private func attentionInputsForward(resIn: FPtr, batch: Int, rope: RoPE, dropoutSeeds: UnsafePointer<UInt64>?,
                                        recomputing: Bool = false) {
        let n = batch * seqLen, C = c.hiddenSize, T = seqLen
        let H = c.numAttentionHeads, KV = c.numKeyValueHeads, D = c.headDim, qd = H * D
        RMSNorm.forward(out: x1.ptr, rstd: rstd1.ptr, x: resIn, w: ln1.value, n: n, dim: C, eps: c.rmsNormEps)
        qkv.forward(y: proj.ptr, x: x1.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds, recomputing: recomputing)
        if let qn, let kn, let qRstd, let kRstd, let qNorm, let kNorm {
            // Qwen3: q and k normalised per head, before RoPE
            RMSNorm.forward(out: qn.ptr, rstd: qRstd.ptr, x: proj.ptr, w: qNorm.value, n: n * H, dim: D, eps: c.rmsNormEps,
                            rowsPerLine: H, ld: qkv.width)
            RMSNorm.forward(out: kn.ptr, rstd: kRstd.ptr, x: proj.ptr + qd, w: kNorm.value, n: n * KV, dim: D,
                            eps: c.rmsNormEps, rowsPerLine: KV, ld: qkv.width)
        }
        let at = attentionInputs()
        rope.forward(at.q, rows: n, seqLen: T, heads: H, ld: at.ldq)
        rope.forward(at.k, rows: n, seqLen: T, heads: KV, ld: at.ldk)
    }

    /// From attention's output: mid = x + o(attOut), x2 = norm(mid), act = silu(gate(x2)) ⊙ up(x2):
    /// the attention half's end and the MLP half up to the down projection.
    private func mlpInputsForward(resIn: FPtr, batch: Int, dropoutSeeds: UnsafePointer<UInt64>?, recomputing: Bool = false) {
        let n = batch * seqLen, C = c.hiddenSize, T = seqLen, I = c.intermediateSize
        o.forward(y: tmp.ptr, x: attOut.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds, recomputing: recomputing)
        Residual.forward(out: mid.ptr, a: resIn, b: tmp.ptr, count: n * C)
        RMSNorm.forward(out: x2.ptr, rstd: rstd2.ptr, x: mid.ptr, w: ln2.value, n: n, dim: C, eps: c.rmsNormEps)
        gateUp.forward(y: gu.ptr, x: x2.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds, recomputing: recomputing)
        SwiGLU.forward(act: act.ptr, gate: gu.ptr, up: gu.ptr + I, rows: n, dim: I, ld: 2 * I)
    }

    /// On entry a.dRes = ∂L/∂(layer output); on exit ∂L/∂(layer input).
    /// The residual adds pass dRes through unchanged, so each half adds its branch's gradient to it.
    /// `inputGradient` false: a.dRes on exit is not ∂L/∂(layer input) (nothing reads it:
    /// LlamaModel.firstLayerInputGradient); the layer's own gradients are the same.
    func backward(resIn: FPtr, batch: Int, rope: RoPE, a: Activations, inputGradient: Bool = true) {
        let n = batch * seqLen, C = c.hiddenSize, T = seqLen, I = c.intermediateSize
        let H = c.numAttentionHeads, KV = c.numKeyValueHeads, D = c.headDim, qd = H * D, kvd = KV * D, F = qkv.width
        // MLP half
        down.backward(dx: a.dAct.ptr, dy: a.dRes.ptr, x: act.ptr, n: n, accumulateDx: false)
        SwiGLU.backward(dgate: a.dGateUp.ptr, dup: a.dGateUp.ptr + I, dact: a.dAct.ptr, gate: gu.ptr, up: gu.ptr + I,
                        rows: n, dim: I, ld: 2 * I)
        gateUp.backward(dx: a.dLn.ptr, dy: a.dGateUp.ptr, x: x2.ptr, n: n, accumulateDx: false)
        RMSNorm.backward(dx: a.dRes.ptr, dw: ln2.grad, dout: a.dLn.ptr, x: mid.ptr, w: ln2.value,
                         rstd: rstd2.ptr, n: n, dim: C)
        // attention half: the gradients of q, k, v land in their columns of dQKV (Qwen3: those of
        // q and k in dq, dk first, then through the norms into the columns)
        o.backward(dx: a.dAttOut.ptr, dy: a.dRes.ptr, x: attOut.ptr, n: n, accumulateDx: false)
        let at = attentionInputs(), dqkv = a.dQKV.ptr
        let dq = a.dq?.ptr ?? dqkv, dk = a.dk?.ptr ?? dqkv + qd
        Attention.backward(dq: dq, dk: dk, dv: dqkv + qd + kvd, dout: a.dAttOut.ptr, out: attOut.ptr, lse: lse.ptr,
                           q: at.q, k: at.k, v: at.v, scratch: a.attScratch.ptr, shape(batch, ldq: at.ldq, ldk: at.ldk))
        rope.backward(dq, rows: n, seqLen: T, heads: H, ld: at.ldq)
        rope.backward(dk, rows: n, seqLen: T, heads: KV, ld: at.ldk)
        if let qRstd, let kRstd, let qNorm, let kNorm {
            Profile.measure(.elementwise) {
                for r in 0..<n { (dqkv + r * F).update(repeating: 0, count: qd + kvd) }
            }
            RMSNorm.backward(dx: dqkv, dw: qNorm.grad, dout: dq, x: proj.ptr, w: qNorm.value,
                             rstd: qRstd.ptr, n: n * H, dim: D, rowsPerLine: H, ld: F)
            RMSNorm.backward(dx: dqkv + qd, dw: kNorm.grad, dout: dk, x: proj.ptr + qd, w: kNorm.value,
                             rstd: kRstd.ptr, n: n * KV, dim: D, rowsPerLine: KV, ld: F)
        }
        qkv.backward(dx: inputGradient ? a.dLn.ptr : nil, dy: dqkv, x: x1.ptr, n: n, accumulateDx: false)
        if inputGradient {
            RMSNorm.backward(dx: a.dRes.ptr, dw: ln1.grad, dout: a.dLn.ptr, x: resIn, w: ln1.value,
                             rstd: rstd1.ptr, n: n, dim: C)
        }
    }
}

/// FNV-1a, for stable name hashes (Swift's Hasher is seeded per process).
public func fnv1a(_ s: String, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
    var h = seed
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}
