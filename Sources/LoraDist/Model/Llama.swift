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
    public let recompute: Bool
    /// The dropout seeds of the last forward, for the backward's recomputed forwards.
    var lastDropoutSeeds: UnsafePointer<UInt64>?

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
            for (n, o, inp) in LlamaModel.projections(c, q: q, kv: kv) {
                let module = p + (["gate_proj", "up_proj", "down_proj"].contains(n) ? "mlp." : "self_attn.") + n
                s.append(ParamSpec(name: module + ".weight", shape: [o, inp], trainable: full, decay: true, nf4: nf4Base))
                if c.biasedProjections.contains(n) { add(module + ".bias", [o], decay: false) }
                if let lora, lora.targets.contains(n) {
                    guard lora.rank <= min(o, inp) else {
                        throw LoraDistError("LoRA rank \(lora.rank) is larger than \(n) allows (min(out, in) = \(min(o, inp)))")
                    }
                    s.append(ParamSpec(name: module + ".lora_A.weight", shape: [lora.rank, inp], trainable: true, decay: true))
                    s.append(ParamSpec(name: module + ".lora_B.weight", shape: [o, lora.rank], trainable: true, decay: true))
                }
            }
            add(p + "post_attention_layernorm.weight", [c.hiddenSize], decay: false)
        }
        add("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize])
        return s
    }

    /// (name, out, in) of each projection, in forward order.
    static func projections(_ c: ModelConfig, q: Int, kv: Int) -> [(String, Int, Int)] {
        [("q_proj", q, c.hiddenSize), ("k_proj", kv, c.hiddenSize), ("v_proj", kv, c.hiddenSize),
         ("o_proj", c.hiddenSize, q), ("gate_proj", c.intermediateSize, c.hiddenSize),
         ("up_proj", c.intermediateSize, c.hiddenSize), ("down_proj", c.hiddenSize, c.intermediateSize)]
    }

    public init(config: ModelConfig, lora: LoRAConfig?, nf4Base: Bool = false, maxBatch: Int, seqLen: Int,
                recompute: Bool = false, allocate: ((Int) -> FPtr)? = nil, frozen: FPtr? = nil,
                dequant shared: NF4Matmul.Scratch? = nil) throws {
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
        self.recompute = recompute
        let shared = recompute ? LayerActivations(config: config, rows: n, batch: maxBatch, seqLen: seqLen) : nil
        for i in 0..<config.numHiddenLayers {
            layers.append(DecoderLayer(index: i, config: config, store: store, lora: lora, rows: n,
                                       batch: maxBatch, seqLen: seqLen, dequant: dequant, linearIndex: &linearIndex,
                                       saved: shared ?? LayerActivations(config: config, rows: n, batch: maxBatch, seqLen: seqLen)))
        }
        self.layers = layers
        lmHead = Linear(name: "lm_head", inDim: config.hiddenSize, outDim: config.vocabSize, store: store,
                        lora: nil, index: linearIndex, maxRows: n,
                        weightName: config.tieWordEmbeddings ? "model.embed_tokens.weight" : nil)
        rope = RoPE(headDim: config.headDim, maxPositions: seqLen,
                    inverseFrequencies: RopeScaling.inverseFrequencies(headDim: config.headDim, theta: config.ropeTheta,
                                                                       scaling: config.ropeScaling))
        acts = Activations(config: config, rows: n, seqLen: seqLen, layers: config.numHiddenLayers)
    }

    /// Floats one model allocates besides its weights, for `maxBatch` sequences of `seqLen`
    /// tokens: the gradient of the trainable arena, the activations each layer saves and the
    /// backward's scratch (Activations, DecoderLayer), the logits (V per row), the adapters'
    /// saved products and dropout masks, the NF4 dequantization tile, the RoPE tables. What
    /// `init` allocates, buffer for buffer (ModelMemoryTests checks it on built models), in
    /// Double so that sizes which would overflow an Int are measured, not trapped on.
    public static func workingFloats(config c: ModelConfig, lora: LoRAConfig?, nf4Base: Bool = false, maxBatch: Int,
                                     seqLen: Int, recompute: Bool = false) throws -> Double {
        let specs = try specs(config: c, lora: lora, nf4Base: nf4Base)
        let n = Double(maxBatch) * Double(seqLen), T = Double(seqLen), B = Double(maxBatch)
        let C = Double(c.hiddenSize), I = Double(c.intermediateSize), V = Double(c.vocabSize), L = Double(c.numHiddenLayers)
        let H = Double(c.numAttentionHeads), KV = Double(c.numKeyValueHeads)
        let q = H * Double(c.headDim), kv = KV * Double(c.headDim)
        let qk = c.qkNorm ? 1.0 : 0
        let grads = Double(specs.filter(\.trainable).reduce(0) { $0 + $1.count })
        // Activations: residual stream (L+1), final norm, logits, backward scratch, one attention block
        let shared = (L + 1) * n * C + n * C + n + n * V + 2 * n * C + 2 * n * q + 2 * n * kv + qk * (n * q + n * kv)
            + 3 * n * I + 2 * Double(Attention.block) * T
        // LayerActivations (one set under recompute, else one per layer): x1, rstd1, q/k/v, (raw q/k and their rstd), lse, attOut, mid, x2, rstd2, gate/up/act, tmp
        let perLayer = n * C + n + n * q + 2 * n * kv + qk * (n * q + n * kv + n * H + n * KV) + B * H * T + n * q
            + n * C + n * C + n + 3 * n * I + n * C
        var adapters = 0.0
        if let lora {
            for (name, _, inDim) in projections(c, q: Int(q), kv: Int(kv)) where lora.targets.contains(name) {
                adapters += 2 * n * Double(lora.rank) + (lora.dropout > 0 ? 3 * n * Double(inDim) : 0)
            }
        }
        let dequant = nf4Base ? Double(max(NF4Matmul.tileFloats, c.hiddenSize, c.intermediateSize, c.numAttentionHeads * c.headDim)) : 0
        let rope = T * Double(c.headDim / 2) * 2
        return grads + shared + (recompute ? 1 : L) * perLayer + L * adapters + dequant + rope
    }

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
        lastDropoutSeeds = dropoutSeeds
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
            CrossEntropy.forward(logits: acts.logits.ptr, targets: targets, n: batch * seqLen, vocab: config.vocabSize)
        }
    }

    // MARK: backward

    /// Accumulates gradients of scale · Σ loss into the trainable arena.
    /// Needs the activations of the forward just run on the same batch.
    public func backward(ids: UnsafePointer<Int32>, targets: UnsafePointer<Int32>, batch: Int, scale: Float,
                         afterLayer: ((Int) -> Void)? = nil) {
        let n = batch * seqLen, C = config.hiddenSize, a = acts
        // dlogits overwrite the logits in place: [N, V]
        CrossEntropy.backward(dlogits: a.logits.ptr, logits: a.logits.ptr, targets: targets, n: n,
                              vocab: config.vocabSize, scale: scale)
        lmHead.backward(dx: a.dLn.ptr, dy: a.logits.ptr, x: a.lnf.ptr, n: n, accumulateDx: false)
        a.dRes.ptr.update(repeating: 0, count: n * C)
        RMSNorm.backward(dx: a.dRes.ptr, dw: finalNorm.grad, dout: a.dLn.ptr, x: a.res[layers.count].ptr,
                         w: finalNorm.value, rstd: a.lnfRstd.ptr, n: n, dim: C)
        for l in stride(from: layers.count - 1, through: 0, by: -1) {
            // The last layer's activations are still there from the forward; the others' are
            // recomputed from the layer's input, bit for bit what the forward saved.
            if recompute && l < layers.count - 1 {
                layers[l].forward(resIn: a.res[l].ptr, resOut: a.res[l + 1].ptr, batch: batch, rope: rope,
                                  dropoutSeeds: lastDropoutSeeds, scratch: a.attScratch.ptr)
            }
            layers[l].backward(resIn: a.res[l].ptr, batch: batch, rope: rope, a: a)
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
    let dRes: FloatBuffer, dLn: FloatBuffer        // [N, C]
    let dq: FloatBuffer, dAttOut: FloatBuffer      // [N, H·D]
    let dk: FloatBuffer, dv: FloatBuffer           // [N, KV·D]
    let dqRaw: FloatBuffer?, dkRaw: FloatBuffer?   // before the q/k norms (Qwen3): [N, H·D], [N, KV·D]
    let dGate: FloatBuffer, dUp: FloatBuffer, dAct: FloatBuffer  // [N, I]
    let attScratch: FloatBuffer     // one block of attention scores and their gradient: [2, 64, T]

    init(config c: ModelConfig, rows n: Int, seqLen: Int, layers: Int) {
        let q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
        res = (0...layers).map { _ in FloatBuffer(n * c.hiddenSize) }
        lnf = FloatBuffer(n * c.hiddenSize); lnfRstd = FloatBuffer(n)
        logits = FloatBuffer(n * c.vocabSize)
        dRes = FloatBuffer(n * c.hiddenSize); dLn = FloatBuffer(n * c.hiddenSize)
        dq = FloatBuffer(n * q); dAttOut = FloatBuffer(n * q)
        dk = FloatBuffer(n * kv); dv = FloatBuffer(n * kv)
        dqRaw = c.qkNorm ? FloatBuffer(n * q) : nil
        dkRaw = c.qkNorm ? FloatBuffer(n * kv) : nil
        dGate = FloatBuffer(n * c.intermediateSize); dUp = FloatBuffer(n * c.intermediateSize)
        dAct = FloatBuffer(n * c.intermediateSize)
        attScratch = FloatBuffer(2 * Attention.block * seqLen)
    }
}

/// What one layer's backward needs of its forward, N = maxBatch·T rows: every layer's own, or
/// one set all layers share under recompute.
final class LayerActivations {
    let x1: FloatBuffer, rstd1: FloatBuffer          // norm1 out [N, C], [N]
    let qa: FloatBuffer, ka: FloatBuffer, va: FloatBuffer  // after RoPE: [N, H·D], [N, KV·D] ×2
    let qRaw: FloatBuffer?, kRaw: FloatBuffer?       // before the q/k norms: [N, H·D], [N, KV·D]
    let qRstd: FloatBuffer?, kRstd: FloatBuffer?     // [N·H], [N·KV]
    let lse: FloatBuffer                             // attention's log-sum-exp per row [B, H, T]
    let attOut: FloatBuffer                          // [N, H·D]
    let mid: FloatBuffer                             // x + attention [N, C]
    let x2: FloatBuffer, rstd2: FloatBuffer          // norm2 out
    let gateA: FloatBuffer, upA: FloatBuffer, act: FloatBuffer  // [N, I]
    let tmp: FloatBuffer                             // [N, C] projection outputs before the residual add

    init(config c: ModelConfig, rows n: Int, batch: Int, seqLen: Int) {
        let qd = c.numAttentionHeads * c.headDim, kvd = c.numKeyValueHeads * c.headDim
        x1 = FloatBuffer(n * c.hiddenSize); rstd1 = FloatBuffer(n)
        qa = FloatBuffer(n * qd); ka = FloatBuffer(n * kvd); va = FloatBuffer(n * kvd)
        qRaw = c.qkNorm ? FloatBuffer(n * qd) : nil
        kRaw = c.qkNorm ? FloatBuffer(n * kvd) : nil
        qRstd = c.qkNorm ? FloatBuffer(n * c.numAttentionHeads) : nil
        kRstd = c.qkNorm ? FloatBuffer(n * c.numKeyValueHeads) : nil
        lse = FloatBuffer(batch * c.numAttentionHeads * seqLen)
        attOut = FloatBuffer(n * qd)
        mid = FloatBuffer(n * c.hiddenSize)
        x2 = FloatBuffer(n * c.hiddenSize); rstd2 = FloatBuffer(n)
        gateA = FloatBuffer(n * c.intermediateSize); upA = FloatBuffer(n * c.intermediateSize)
        act = FloatBuffer(n * c.intermediateSize)
        tmp = FloatBuffer(n * c.hiddenSize)
    }
}

/// One block: x + attn(norm(x)), then + mlp(norm(·)). Its backward reads `saved`.
final class DecoderLayer {
    let c: ModelConfig
    let ln1: Param, ln2: Param
    let qNorm: Param?, kNorm: Param?                 // Qwen3: RMSNorm over each head's D
    let q: Linear, k: Linear, v: Linear, o: Linear, gate: Linear, up: Linear, down: Linear
    let seqLen: Int
    let saved: LayerActivations
    var x1: FloatBuffer { saved.x1 }
    var rstd1: FloatBuffer { saved.rstd1 }
    var qa: FloatBuffer { saved.qa }
    var ka: FloatBuffer { saved.ka }
    var va: FloatBuffer { saved.va }
    var qRaw: FloatBuffer? { saved.qRaw }
    var kRaw: FloatBuffer? { saved.kRaw }
    var qRstd: FloatBuffer? { saved.qRstd }
    var kRstd: FloatBuffer? { saved.kRstd }
    var lse: FloatBuffer { saved.lse }
    var attOut: FloatBuffer { saved.attOut }
    var mid: FloatBuffer { saved.mid }
    var x2: FloatBuffer { saved.x2 }
    var rstd2: FloatBuffer { saved.rstd2 }
    var gateA: FloatBuffer { saved.gateA }
    var upA: FloatBuffer { saved.upA }
    var act: FloatBuffer { saved.act }
    var tmp: FloatBuffer { saved.tmp }

    var linears: [Linear] { [q, k, v, o, gate, up, down] }

    init(index i: Int, config c: ModelConfig, store: ParameterStore, lora: LoRAConfig?, rows n: Int,
         batch: Int, seqLen: Int, dequant: NF4Matmul.Scratch?, linearIndex: inout Int, saved: LayerActivations) {
        self.c = c
        self.seqLen = seqLen
        self.saved = saved
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
        q = lin("self_attn.q_proj", c.hiddenSize, qd)
        k = lin("self_attn.k_proj", c.hiddenSize, kvd)
        v = lin("self_attn.v_proj", c.hiddenSize, kvd)
        o = lin("self_attn.o_proj", qd, c.hiddenSize)
        gate = lin("mlp.gate_proj", c.hiddenSize, c.intermediateSize)
        up = lin("mlp.up_proj", c.hiddenSize, c.intermediateSize)
        down = lin("mlp.down_proj", c.intermediateSize, c.hiddenSize)
    }

    func shape(_ batch: Int) -> Attention.Shape {
        Attention.Shape(batch: batch, seqLen: seqLen, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                        headDim: c.headDim, window: c.slidingWindow)
    }

    func forward(resIn: FPtr, resOut: FPtr, batch: Int, rope: RoPE, dropoutSeeds: UnsafePointer<UInt64>?, scratch: FPtr) {
        let n = batch * seqLen, C = c.hiddenSize, T = seqLen
        // attention half: mid = x + o(attn(rope(q(norm(x))), rope(k(·)), v(·)))
        RMSNorm.forward(out: x1.ptr, rstd: rstd1.ptr, x: resIn, w: ln1.value, n: n, dim: C, eps: c.rmsNormEps)
        if let qRaw, let kRaw, let qRstd, let kRstd, let qNorm, let kNorm {
            // Qwen3: q and k normalised per head, before RoPE
            let H = c.numAttentionHeads, KV = c.numKeyValueHeads, D = c.headDim
            q.forward(y: qRaw.ptr, x: x1.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
            k.forward(y: kRaw.ptr, x: x1.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
            RMSNorm.forward(out: qa.ptr, rstd: qRstd.ptr, x: qRaw.ptr, w: qNorm.value, n: n * H, dim: D, eps: c.rmsNormEps)
            RMSNorm.forward(out: ka.ptr, rstd: kRstd.ptr, x: kRaw.ptr, w: kNorm.value, n: n * KV, dim: D, eps: c.rmsNormEps)
        } else {
            q.forward(y: qa.ptr, x: x1.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
            k.forward(y: ka.ptr, x: x1.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
        }
        v.forward(y: va.ptr, x: x1.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
        rope.forward(qa.ptr, rows: n, seqLen: T, heads: c.numAttentionHeads)
        rope.forward(ka.ptr, rows: n, seqLen: T, heads: c.numKeyValueHeads)
        Attention.forward(out: attOut.ptr, lse: lse.ptr, q: qa.ptr, k: ka.ptr, v: va.ptr, scratch: scratch, shape(batch))
        o.forward(y: tmp.ptr, x: attOut.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
        Residual.forward(out: mid.ptr, a: resIn, b: tmp.ptr, count: n * C)
        // MLP half: out = mid + down(silu(gate(norm(mid))) ⊙ up(norm(mid)))
        RMSNorm.forward(out: x2.ptr, rstd: rstd2.ptr, x: mid.ptr, w: ln2.value, n: n, dim: C, eps: c.rmsNormEps)
        gate.forward(y: gateA.ptr, x: x2.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
        up.forward(y: upA.ptr, x: x2.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
        SwiGLU.forward(act: act.ptr, gate: gateA.ptr, up: upA.ptr, count: n * c.intermediateSize)
        down.forward(y: tmp.ptr, x: act.ptr, n: n, seqLen: T, dropoutSeeds: dropoutSeeds)
        Residual.forward(out: resOut, a: mid.ptr, b: tmp.ptr, count: n * C)
    }

    /// On entry a.dRes = ∂L/∂(layer output); on exit ∂L/∂(layer input).
    /// The residual adds pass dRes through unchanged, so each half adds its branch's gradient to it.
    func backward(resIn: FPtr, batch: Int, rope: RoPE, a: Activations) {
        let n = batch * seqLen, C = c.hiddenSize, T = seqLen
        // MLP half
        down.backward(dx: a.dAct.ptr, dy: a.dRes.ptr, x: act.ptr, n: n, accumulateDx: false)
        SwiGLU.backward(dgate: a.dGate.ptr, dup: a.dUp.ptr, dact: a.dAct.ptr, gate: gateA.ptr, up: upA.ptr,
                        count: n * c.intermediateSize)
        gate.backward(dx: a.dLn.ptr, dy: a.dGate.ptr, x: x2.ptr, n: n, accumulateDx: false)
        up.backward(dx: a.dLn.ptr, dy: a.dUp.ptr, x: x2.ptr, n: n, accumulateDx: true)
        RMSNorm.backward(dx: a.dRes.ptr, dw: ln2.grad, dout: a.dLn.ptr, x: mid.ptr, w: ln2.value,
                         rstd: rstd2.ptr, n: n, dim: C)
        // attention half
        o.backward(dx: a.dAttOut.ptr, dy: a.dRes.ptr, x: attOut.ptr, n: n, accumulateDx: false)
        Attention.backward(dq: a.dq.ptr, dk: a.dk.ptr, dv: a.dv.ptr, dout: a.dAttOut.ptr, out: attOut.ptr, lse: lse.ptr,
                           q: qa.ptr, k: ka.ptr, v: va.ptr, scratch: a.attScratch.ptr, shape(batch))
        rope.backward(a.dq.ptr, rows: n, seqLen: T, heads: c.numAttentionHeads)
        rope.backward(a.dk.ptr, rows: n, seqLen: T, heads: c.numKeyValueHeads)
        var dq = UnsafePointer(a.dq.ptr), dk = UnsafePointer(a.dk.ptr)
        if let qRaw, let kRaw, let qRstd, let kRstd, let qNorm, let kNorm, let dqRaw = a.dqRaw, let dkRaw = a.dkRaw {
            let H = c.numAttentionHeads, KV = c.numKeyValueHeads, D = c.headDim
            dqRaw.zero(); dkRaw.zero()
            RMSNorm.backward(dx: dqRaw.ptr, dw: qNorm.grad, dout: a.dq.ptr, x: qRaw.ptr, w: qNorm.value,
                             rstd: qRstd.ptr, n: n * H, dim: D)
            RMSNorm.backward(dx: dkRaw.ptr, dw: kNorm.grad, dout: a.dk.ptr, x: kRaw.ptr, w: kNorm.value,
                             rstd: kRstd.ptr, n: n * KV, dim: D)
            dq = UnsafePointer(dqRaw.ptr); dk = UnsafePointer(dkRaw.ptr)
        }
        q.backward(dx: a.dLn.ptr, dy: dq, x: x1.ptr, n: n, accumulateDx: false)
        k.backward(dx: a.dLn.ptr, dy: dk, x: x1.ptr, n: n, accumulateDx: true)
        v.backward(dx: a.dLn.ptr, dy: a.dv.ptr, x: x1.ptr, n: n, accumulateDx: true)
        RMSNorm.backward(dx: a.dRes.ptr, dw: ln1.grad, dout: a.dLn.ptr, x: resIn, w: ln1.value,
                         rstd: rstd1.ptr, n: n, dim: C)
    }
}

/// FNV-1a, for stable name hashes (Swift's Hasher is seeded per process).
public func fnv1a(_ s: String, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
    var h = seed
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}
