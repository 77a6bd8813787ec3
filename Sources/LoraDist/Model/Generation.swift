import Foundation

/// Text generation over a LlamaModel's weights with a key/value cache: the prompt runs
/// through the decoder once (prefill), then each new token runs alone and attends to the
/// cached keys and values of every position before it. The math is the training
/// forward's (same Linear, norms, RoPE tables, window), row by row.
public final class Generator {
    public let model: LlamaModel
    let c: ModelConfig
    let kCache: [FloatBuffer]      // per layer [context, KV·D], after RoPE
    let vCache: [FloatBuffer]
    public private(set) var length = 0   // positions cached
    public var context: Int { model.seqLen }

    /// `model` must have been built with maxBatch 1 and seqLen = the longest context wanted.
    public init(model: LlamaModel) {
        precondition(model.maxBatch == 1)
        self.model = model
        c = model.config
        let kv = c.numKeyValueHeads * c.headDim
        kCache = model.layers.map { _ in FloatBuffer(model.seqLen * kv) }
        vCache = model.layers.map { _ in FloatBuffer(model.seqLen * kv) }
    }

    public func reset() { length = 0 }

    /// Runs `tokens` at the next positions; returns the logits [V] after the last of them.
    public func feed(_ tokens: [Int32]) -> [Float] {
        let m = tokens.count, p0 = length
        precondition(m > 0 && p0 + m <= context, "context of \(context) positions exceeded")
        let C = c.hiddenSize, H = c.numAttentionHeads, KV = c.numKeyValueHeads, D = c.headDim
        let I = c.intermediateSize, eps = c.rmsNormEps
        let x = FloatBuffer(m * C), h = FloatBuffer(m * C), rstd = FloatBuffer(m * max(H, 1))
        let q = FloatBuffer(m * H * D), qRaw = FloatBuffer(m * H * D), kRaw = FloatBuffer(m * KV * D)
        let att = FloatBuffer(m * H * D), tmp = FloatBuffer(m * C)
        let gate = FloatBuffer(m * I), up = FloatBuffer(m * I), act = FloatBuffer(m * I)
        let scores = FloatBuffer(m * (p0 + m))
        tokens.withUnsafeBufferPointer { Embedding.forward(out: x.ptr, ids: $0.baseAddress!, table: model.embed.value, n: m, dim: C) }
        for (l, layer) in model.layers.enumerated() {
            let kNew = kCache[l].ptr + p0 * KV * D, vNew = vCache[l].ptr + p0 * KV * D
            RMSNorm.forward(out: h.ptr, rstd: rstd.ptr, x: x.ptr, w: layer.ln1.value, n: m, dim: C, eps: eps)
            if let qn = layer.qNorm, let kn = layer.kNorm {
                layer.q.forward(y: qRaw.ptr, x: h.ptr, n: m, seqLen: m, dropoutSeeds: nil)
                layer.k.forward(y: kRaw.ptr, x: h.ptr, n: m, seqLen: m, dropoutSeeds: nil)
                RMSNorm.forward(out: q.ptr, rstd: rstd.ptr, x: qRaw.ptr, w: qn.value, n: m * H, dim: D, eps: eps)
                RMSNorm.forward(out: kNew, rstd: rstd.ptr, x: kRaw.ptr, w: kn.value, n: m * KV, dim: D, eps: eps)
            } else {
                layer.q.forward(y: q.ptr, x: h.ptr, n: m, seqLen: m, dropoutSeeds: nil)
                layer.k.forward(y: kNew, x: h.ptr, n: m, seqLen: m, dropoutSeeds: nil)
            }
            layer.v.forward(y: vNew, x: h.ptr, n: m, seqLen: m, dropoutSeeds: nil)
            model.rope.forward(q.ptr, rows: m, firstPosition: p0, heads: H)
            model.rope.forward(kNew, rows: m, firstPosition: p0, heads: KV)
            attend(out: att.ptr, q: q.ptr, layer: l, first: p0, rows: m, scores: scores.ptr)
            layer.o.forward(y: tmp.ptr, x: att.ptr, n: m, seqLen: m, dropoutSeeds: nil)
            Residual.forward(out: x.ptr, a: x.ptr, b: tmp.ptr, count: m * C)
            RMSNorm.forward(out: h.ptr, rstd: rstd.ptr, x: x.ptr, w: layer.ln2.value, n: m, dim: C, eps: eps)
            layer.gate.forward(y: gate.ptr, x: h.ptr, n: m, seqLen: m, dropoutSeeds: nil)
            layer.up.forward(y: up.ptr, x: h.ptr, n: m, seqLen: m, dropoutSeeds: nil)
            SwiGLU.forward(act: act.ptr, gate: gate.ptr, up: up.ptr, count: m * I)
            layer.down.forward(y: tmp.ptr, x: act.ptr, n: m, seqLen: m, dropoutSeeds: nil)
            Residual.forward(out: x.ptr, a: x.ptr, b: tmp.ptr, count: m * C)
        }
        length += m
        // Only the last position's next token is wanted: norm and head on one row.
        let last = x.ptr + (m - 1) * C
        RMSNorm.forward(out: h.ptr, rstd: rstd.ptr, x: last, w: model.finalNorm.value, n: 1, dim: C, eps: eps)
        var logits = [Float](repeating: 0, count: c.vocabSize)
        logits.withUnsafeMutableBufferPointer { model.lmHead.forward(y: $0.baseAddress!, x: h.ptr, n: 1, seqLen: 1, dropoutSeeds: nil) }
        return logits
    }

    /// out[m, H·D]: query rows at positions first..<first+m against the cached keys 0...their own
    /// (within the sliding window), as Attention.forward does for a whole sequence.
    private func attend(out: FPtr, q: UnsafePointer<Float>, layer l: Int, first: Int, rows m: Int, scores: FPtr) {
        let H = c.numAttentionHeads, KV = c.numKeyValueHeads, D = c.headDim, group = H / KV
        let keys = first + m
        let shape = Attention.Shape(batch: 1, seqLen: keys, heads: H, kvHeads: KV, headDim: D, window: c.slidingWindow)
        for h in 0..<H {
            let kg = kCache[l].ptr + (h / group) * D, vg = vCache[l].ptr + (h / group) * D
            // scores[m, keys] = scale · Q Kᵀ
            sgemm(transB: true, m: m, n: keys, k: D, alpha: shape.scale, a: q + h * D, lda: H * D,
                  b: kg, ldb: KV * D, c: scores, ldc: keys)
            for i in 0..<m {
                let pos = first + i
                Attention.softmaxCausalRow(scores + i * keys, first: shape.firstKey(pos), visible: pos + 1, width: keys)
            }
            sgemm(m: m, n: D, k: keys, a: scores, lda: keys, b: vg, ldb: KV * D, c: out + h * D, ldc: H * D)
        }
    }

    /// How the next token is chosen: greedy (temperature 0), or sampled from the
    /// temperature-scaled distribution cut to its top-p nucleus.
    public struct Sampling {
        public var temperature: Float = 0
        public var topP: Float = 1
        public var seed: UInt64 = 0
        public init(temperature: Float = 0, topP: Float = 1, seed: UInt64 = 0) {
            self.temperature = temperature; self.topP = topP; self.seed = seed
        }
    }

    /// The prompt's continuation: up to `maxNewTokens` ids, stopping after `stop` when given.
    /// `onToken` sees each id as it comes.
    public func generate(prompt: [Int32], maxNewTokens: Int, sampling: Sampling = Sampling(), stop: Int32? = nil,
                         onToken: ((Int32) -> Void)? = nil) -> [Int32] {
        reset()
        var rng = SplitMix64(seed: sampling.seed)
        var logits = feed(prompt)
        var out: [Int32] = []
        while out.count < maxNewTokens {
            let next = Self.choose(logits, sampling, &rng)
            out.append(next)
            onToken?(next)
            if next == stop || out.count == maxNewTokens || length == context { break }
            logits = feed([next])
        }
        return out
    }

    static func choose(_ logits: [Float], _ s: Sampling, _ rng: inout SplitMix64) -> Int32 {
        if s.temperature <= 0 {
            // argmax, the first of equal maxima (torch.argmax's choice)
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        let mx = logits.max()!
        var p = logits.map { Foundation.exp(Double(($0 - mx) / s.temperature)) }
        let total = p.reduce(0, +)
        p = p.map { $0 / total }
        // nucleus: the most likely tokens until their mass reaches top_p (at least one)
        let order = p.indices.sorted { p[$0] > p[$1] }
        var keep: [Int] = [], mass = 0.0
        for i in order {
            keep.append(i)
            mass += p[i]
            if mass >= Double(s.topP) { break }
        }
        var u = Double(rng.uniform()) * mass
        for i in keep {
            u -= p[i]
            if u < 0 { return Int32(i) }
        }
        return Int32(keep.last!)
    }
}
