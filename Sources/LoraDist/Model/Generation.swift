import Foundation

/// Text generation over a LlamaModel's weights with a key/value cache: the prompt runs
/// through the decoder once (prefill), then each new token runs alone and attends to the
/// cached keys and values of every position before it. The math is the training
/// forward's (same Linear, norms, RoPE tables, window), row by row.
///
/// Attention: a feed from position 0 (the prompt: `generate` resets) is the training forward's
/// Attention.forward over the prompt, q from this feed's rows, k and v from the cache rows it
/// just wrote; no T × T matrix. A feed after cached positions (decode) multiplies each
/// key/value head's G query heads as one stacked block (Attention's layout) against the cached
/// keys they see (`attendCached`).
public final class Generator {
    public let model: LlamaModel
    let c: ModelConfig
    let kCache: [FloatBuffer]      // per layer [context, KV·D], after RoPE
    let vCache: [FloatBuffer]
    public private(set) var length = 0   // positions cached
    public var context: Int { model.seqLen }
    /// feed's working buffers, for the most rows one feed has run; decoding reuses them.
    private var work: Buffers?
    /// The prefill's Attention.forward lanes: the threads this process computes with when the
    /// Generator is made (BLAS.setThreads), as a training model's are its thread budget. Fixed,
    /// since the attention scratch is sized for them.
    private let attentionLanes = Parallel.workers

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

    /// Attention.forward's shape for a prefill of `rows` positions: the model's heads and window.
    private func prefillShape(_ rows: Int) -> Attention.Shape {
        LlamaModel.attentionShape(c, batch: 1, seqLen: rows, lanes: attentionLanes)
    }

    /// Floats `attendCached` needs for `rows` query rows: per block of up to Attention.block
    /// positions, the stacked q and output [G·block, D] and the scores [G·block, context].
    private func decodeScratchCount(_ rows: Int) -> Int {
        min(rows, Attention.block) * (c.numAttentionHeads / c.numKeyValueHeads) * (context + 2 * c.headDim)
    }

    /// The buffers of a feed of up to `rows` positions.
    private final class Buffers {
        let rows: Int
        let x, h, tmp: FloatBuffer          // [rows, C]: residual stream, normed, projection outputs
        let rstd: FloatBuffer               // [rows · H]
        let q, qRaw, att: FloatBuffer       // [rows, H·D]: q (after RoPE), before its norm (Qwen3), attention's output
        let kRaw: FloatBuffer               // [rows, KV·D]: k before its norm (Qwen3)
        let gate, up, act: FloatBuffer      // [rows, I]
        let lse: FloatBuffer                // [H, rows]: Attention.forward writes it; generation does not read it
        let attention: FloatBuffer          // Attention.forward's scratch (prefill) or attendCached's (decode)
        init(rows n: Int, config c: ModelConfig, attentionScratch: Int) {
            let C = c.hiddenSize, H = c.numAttentionHeads, D = c.headDim, I = c.intermediateSize
            rows = n
            x = FloatBuffer(n * C); h = FloatBuffer(n * C); tmp = FloatBuffer(n * C)
            rstd = FloatBuffer(n * max(H, 1))
            q = FloatBuffer(n * H * D); qRaw = FloatBuffer(n * H * D); att = FloatBuffer(n * H * D)
            kRaw = FloatBuffer(n * c.numKeyValueHeads * D)
            gate = FloatBuffer(n * I); up = FloatBuffer(n * I); act = FloatBuffer(n * I)
            lse = FloatBuffer(H * n)
            attention = FloatBuffer(attentionScratch)
        }
    }

    /// Buffers for `rows` positions: the ones kept if large enough, else larger ones kept from now on.
    private func buffers(_ rows: Int) -> Buffers {
        if let w = work, w.rows >= rows { return w }
        let w = Buffers(rows: rows, config: c,
                        attentionScratch: max(prefillShape(rows).forwardScratchCount, decodeScratchCount(rows)))
        work = w
        return w
    }

    /// Runs `tokens` at the next positions; returns the logits [V] after the last of them.
    public func feed(_ tokens: [Int32]) -> [Float] {
        let m = tokens.count, p0 = length
        precondition(m > 0 && p0 + m <= context, "context of \(context) positions exceeded")
        let C = c.hiddenSize, H = c.numAttentionHeads, KV = c.numKeyValueHeads, D = c.headDim
        let I = c.intermediateSize, eps = c.rmsNormEps
        let b = buffers(m)
        let x = b.x, h = b.h, rstd = b.rstd, q = b.q, qRaw = b.qRaw, kRaw = b.kRaw, att = b.att, tmp = b.tmp
        let gate = b.gate, up = b.up, act = b.act
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
            if p0 == 0 {
                // the cache holds exactly this feed's keys and values: the training forward's attention
                Attention.forward(out: att.ptr, lse: b.lse.ptr, q: q.ptr, k: kNew, v: vNew, scratch: b.attention.ptr,
                                  prefillShape(m))
            } else {
                attendCached(out: att.ptr, q: q.ptr, layer: l, first: p0, rows: m, scratch: b.attention.ptr)
            }
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
    /// (within the sliding window), as Attention.forward computes them for a whole sequence. Per
    /// key/value head, blocks of up to Attention.block positions of its G query heads run as one
    /// stacked block (row (t − i0)·G + i: position t, the group's head i) against the keys from the
    /// one the block's first position sees to its last position: one Q·Kᵀ and one P·V product per
    /// block instead of one per head. One position's G heads are G·D contiguous floats of q and
    /// out, so a decode step (m = 1) multiplies them in place, without packing.
    private func attendCached(out: FPtr, q: UnsafePointer<Float>, layer l: Int, first: Int, rows m: Int, scratch: FPtr) {
        let s = Attention.Shape(batch: 1, seqLen: first + m, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                                headDim: c.headDim, window: c.slidingWindow)
        let D = s.headDim, G = s.group, GD = G * D, ldq = s.qStride, ldkv = s.kvStride
        let B = min(m, Attention.block)
        // scratch: stacked q [G·B, D], stacked output [G·B, D], scores [G·B, ≤ context]
        let qs = scratch, os = qs + B * GD, p = os + B * GD
        Profile.measure(.attention) {
            for g in 0..<s.kvHeads {
                let kg = kCache[l].ptr + g * D, vg = vCache[l].ptr + g * D
                for i0 in stride(from: 0, to: m, by: B) {
                    let n = min(B, m - i0), rows = n * G
                    let k0 = s.firstKey(first + i0), w = first + i0 + n - k0     // column j: key k0 + j
                    let qg = q + i0 * ldq + g * GD, og = out + i0 * ldq + g * GD
                    let (qa, lda) = n == 1 ? (qg, D) : Attention.stacked(qg, ld: ldq, rows: n, s, into: qs)
                    sgemm(transB: true, m: rows, n: w, k: D, alpha: s.scale, a: qa, lda: lda,
                          b: kg + k0 * ldkv, ldb: ldkv, c: p, ldc: w)
                    for r in 0..<rows {
                        let t = first + i0 + r / G
                        Attention.softmaxCausalRow(p + r * w, first: s.firstKey(t) - k0, visible: t + 1 - k0, width: w)
                    }
                    // the output rows in place when they are out's (one position, or G = 1), else through os
                    let (oa, ldo) = n == 1 ? (og, D) : G == 1 ? (og, ldq) : (os, D)
                    sgemm(m: rows, n: D, k: w, a: p, lda: w, b: vg + k0 * ldkv, ldb: ldkv, c: oa, ldc: ldo)
                    if n > 1 && G > 1 { Attention.unpack(og, ld: ldq, os, rows: n, width: GD) }
                }
            }
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
