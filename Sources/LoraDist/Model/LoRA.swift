import Foundation

/// LoRA as PEFT defines it: ΔW = s · B·A with A [r, in] (Kaiming-uniform),
/// B [out, r] (zeros), s = alpha / r, or alpha / √r with rsLoRA.
public struct LoRAConfig: Codable, Equatable {
    public static let projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    public var rank: Int
    public var alpha: Float
    public var dropout: Float
    public var targets: [String]
    public var useRSLoRA: Bool

    public init(rank: Int = 8, alpha: Float = 16, dropout: Float = 0, targets: [String] = ["q_proj", "v_proj"],
                useRSLoRA: Bool = false) throws {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.useRSLoRA = useRSLoRA
        self.targets = try Self.parseTargets(targets)
        guard rank > 0, rank <= 1 << 16 else { throw LoraDistError("LoRA rank must be between 1 and 65536, got \(rank)") }
        guard dropout >= 0, dropout < 1 else { throw LoraDistError("LoRA dropout must be in [0, 1), got \(dropout)") }
        // alpha 0 trains nothing (the adapter's output is scaled to zero); NaN or ∞ poison every step.
        guard alpha.isFinite, alpha > 0, alpha <= 1e6 else {
            throw LoraDistError("LoRA alpha must be a number in (0, 1e6], got \(alpha)")
        }
    }

    public var scale: Float { useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }

    /// A list of projection names, or "all-linear" (every projection but lm_head).
    public static func parseTargets(_ list: [String]) throws -> [String] {
        let names = list.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            .filter { !$0.isEmpty }
        if names == ["all-linear"] { return projections }
        guard !names.isEmpty else { throw LoraDistError("LoRA needs at least one target module") }
        for n in names where !projections.contains(n) {
            throw LoraDistError("unknown LoRA target module '\(n)' (known: \(projections.joined(separator: ", ")), or all-linear)")
        }
        return projections.filter(names.contains)
    }
}

/// A projection y = x·Wᵀ (+ b when the family has a bias there), plus s·B·A·dropout(x)
/// when it carries an adapter.
/// Like MLX's LoRALinear, the base weight and the adapter sit side by side and
/// `fuse` folds the adapter back into a plain weight. Under QLoRA W is NF4 and
/// is dequantized tile by tile on its way to sgemm.
/// y may be a column block of a wider buffer (row stride `ldy`): a LinearGroup's parts write
/// side by side.
public final class Linear {
    public let name: String           // module path, e.g. model.layers.0.self_attn.q_proj
    public let inDim: Int, outDim: Int
    public let weight: Param
    public let bias: Param?           // [out]; trains under full fine-tuning, frozen under LoRA
    public let loraA: Param?          // [r, in]
    public let loraB: Param?          // [out, r]
    var scale: Float                  // s; an adapter swapped in place sets its own (AdapterSwitching)
    let dropout: Float
    let index: UInt64                 // distinguishes dropout streams between projections
    let weightNF4: NF4Tensor?         // W as NF4 (QLoRA), else nil
    let dequant: NF4Matmul.Scratch?
    // Saved for backward, sized for `maxRows` rows once: x·Aᵀ and s·dy·B [rows, r], row stride
    // `ldr`, in this projection's own buffers or in its columns of a LinearGroup's.
    private var xa: FPtr?
    private var mid: FPtr?
    private var ldr = 0
    private var adapterRows: [FloatBuffer] = []   // the own buffers behind xa and mid
    private var xDrop: FloatBuffer?   // dropout(x) [rows, in]
    private var mask: FloatBuffer?    // 0 or 1/(1−p) [rows, in]
    private var tmp: FloatBuffer?     // [rows, in]

    init(name: String, inDim: Int, outDim: Int, store: ParameterStore, lora: LoRAConfig?, index: Int,
         maxRows: Int, weightName: String? = nil, dequant: NF4Matmul.Scratch? = nil,
         adapterRows shared: (xa: FPtr, mid: FPtr, ld: Int)? = nil) {
        self.name = name
        self.inDim = inDim
        self.outDim = outDim
        self.index = UInt64(index)
        weight = store[weightName ?? name + ".weight"]
        bias = store.byName[name + ".bias"]
        weightNF4 = weight.nf4
        self.dequant = weightNF4 == nil ? nil : dequant
        precondition(weightNF4 == nil || dequant != nil, "an NF4 weight needs a dequantization buffer")
        loraA = store.byName[name + ".lora_A.weight"]
        loraB = store.byName[name + ".lora_B.weight"]
        scale = lora?.scale ?? 0
        dropout = lora?.dropout ?? 0
        if let r = lora?.rank, loraA != nil {
            if let shared {
                xa = shared.xa; mid = shared.mid; ldr = shared.ld
            } else {
                adapterRows = [FloatBuffer(maxRows * r), FloatBuffer(maxRows * r)]
                xa = adapterRows[0].ptr; mid = adapterRows[1].ptr; ldr = r
            }
            if dropout > 0 {
                xDrop = FloatBuffer(maxRows * inDim)
                mask = FloatBuffer(maxRows * inDim)
                tmp = FloatBuffer(maxRows * inDim)
            }
        }
    }

    var rank: Int { loraA.map { $0.spec.shape[0] } ?? 0 }

    /// y[n, out] = x[n, in]·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ. `recomputing`: the same forward on
    /// the same x again (activation checkpointing), so dropout(x)·Aᵀ and the mask are still held.
    func forward(y: FPtr, ldy: Int? = nil, x: UnsafePointer<Float>, n: Int, seqLen: Int,
                 dropoutSeeds: UnsafePointer<UInt64>?, recomputing: Bool = false) {
        let ldy = ldy ?? outDim
        forwardBase(y: y, ldy: ldy, x: x, n: n)
        if recomputing {
            adapterUp(y: y, ldy: ldy, n: n)
        } else {
            forwardAdapter(y: y, ldy: ldy, x: x, n: n, seqLen: seqLen, dropoutSeeds: dropoutSeeds)
        }
    }

    /// y = x·Wᵀ + b
    func forwardBase(y: FPtr, ldy: Int, x: UnsafePointer<Float>, n: Int) {
        if let q = weightNF4, let dequant {
            NF4Matmul.forward(y: y, x: x, w: q, n: n, inDim: inDim, outDim: outDim, scratch: dequant, ldy: ldy)
        } else {
            Matmul.forward(y: y, x: x, w: weight.value, n: n, inDim: inDim, outDim: outDim, ldy: ldy)
        }
        addBias(y: y, ldy: ldy, n: n)
    }

    func addBias(y: FPtr, ldy: Int, n: Int) {
        if let bias { Bias.forward(y: y, b: bias.value, n: n, dim: outDim, ld: ldy) }
    }

    /// y += s·(dropout(x)·Aᵀ)·Bᵀ (nothing without an adapter)
    func forwardAdapter(y: FPtr, ldy: Int, x: UnsafePointer<Float>, n: Int, seqLen: Int,
                        dropoutSeeds: UnsafePointer<UInt64>?) {
        guard let a = loraA, let xa else { return }
        var xin = x
        if let xDrop, let mask, let seeds = dropoutSeeds {
            let keep = 1 / (1 - dropout)
            Profile.measure(.elementwise) {
                for row in 0..<n {
                    var g = SplitMix64(seed: SplitMix64.mix(seeds[row / seqLen], index, UInt64(row % seqLen)))
                    for c in 0..<inDim {
                        let m: Float = g.uniform() < dropout ? 0 : keep
                        mask[row * inDim + c] = m
                        xDrop[row * inDim + c] = x[row * inDim + c] * m
                    }
                }
            }
            xin = UnsafePointer(xDrop.ptr)
        }
        LowRank.gemm(transB: true, m: n, n: rank, k: inDim, a: xin, lda: inDim, b: a.value, ldb: inDim, c: xa, ldc: ldr)
        adapterUp(y: y, ldy: ldy, n: n)
    }

    /// y += s·xa·Bᵀ, xa = x·Aᵀ already computed (by this projection or its group)
    func adapterUp(y: FPtr, ldy: Int, n: Int) {
        guard let b = loraB, let xa else { return }
        LowRank.gemm(transB: true, m: n, n: outDim, k: rank, alpha: scale, a: xa, lda: ldr, b: b.value, ldb: rank,
                     beta: 1, c: y, ldc: ldy)
    }

    /// dx (=, or += when accumulateDx) ∂L/∂x; weight and adapter gradients accumulate.
    /// dx nil: nothing below needs ∂L/∂x (the first layer's input under a frozen embedding).
    func backward(dx: FPtr?, dy: UnsafePointer<Float>, ldy: Int? = nil, x: UnsafePointer<Float>, n: Int,
                  accumulateDx: Bool) {
        let ldy = ldy ?? outDim
        backwardBase(dx: dx, dy: dy, ldy: ldy, x: x, n: n, accumulateDx: accumulateDx)
        backwardAdapter(dx: dx, dy: dy, ldy: ldy, x: x, n: n)
    }

    /// dx (+)= dy·W;  dW += dyᵀ·x and db += Σ dy when they train
    func backwardBase(dx: FPtr?, dy: UnsafePointer<Float>, ldy: Int, x: UnsafePointer<Float>, n: Int, accumulateDx: Bool) {
        if let q = weightNF4, let dequant {
            guard let dx else { biasBackward(dy: dy, ldy: ldy, n: n); return }  // an NF4 weight is frozen: only dx
            NF4Matmul.backwardInput(dx: dx, dy: dy, w: q, n: n, inDim: inDim, outDim: outDim,
                                    accumulate: accumulateDx, scratch: dequant, ldy: ldy)
        } else {
            Matmul.backward(dx: dx, dw: weight.grad, dy: dy, x: x, w: weight.value, n: n, inDim: inDim,
                            outDim: outDim, accumulateDx: accumulateDx, ldy: ldy)
        }
        biasBackward(dy: dy, ldy: ldy, n: n)
    }

    func biasBackward(dy: UnsafePointer<Float>, ldy: Int, n: Int) {
        if let db = bias?.grad { Bias.backward(db: db, dy: dy, n: n, dim: outDim, ld: ldy) }
    }

    /// The adapter's share: dx += s·(dy·B)·A (through the dropout mask); dA, dB accumulate.
    func backwardAdapter(dx: FPtr?, dy: UnsafePointer<Float>, ldy: Int, x: UnsafePointer<Float>, n: Int) {
        guard let a = loraA, let mid else { return }
        adapterMid(dy: dy, ldy: ldy, n: n)
        let r = rank
        let xin = xDrop.map { UnsafePointer($0.ptr) } ?? x
        // dA += midᵀ·dropout(x)
        if let ga = a.grad {
            LowRank.gemm(transA: true, m: r, n: inDim, k: n, a: mid, lda: ldr, b: xin, ldb: inDim, beta: 1, c: ga, ldc: inDim)
        }
        // dx += mid·A, through the dropout mask
        guard let dx else { return }
        if let mask, let tmp {
            LowRank.gemm(m: n, n: inDim, k: r, a: mid, lda: ldr, b: a.value, ldb: inDim, c: tmp.ptr, ldc: inDim)
            Profile.measure(.elementwise) { for i in 0..<(n * inDim) { dx[i] += tmp[i] * mask[i] } }
        } else {
            LowRank.gemm(m: n, n: inDim, k: r, a: mid, lda: ldr, b: a.value, ldb: inDim, beta: 1, c: dx, ldc: inDim)
        }
    }

    /// mid = s·dy·B [n, r];  dB += s·dyᵀ·xa (one pass over dy when both run: LowRank)
    func adapterMid(dy: UnsafePointer<Float>, ldy: Int, n: Int) {
        guard let b = loraB, let xa, let mid else { return }
        let r = rank
        if let gb = b.grad {
            LowRank.midAndGradient(mid: mid, ldm: ldr, g: gb, dy: dy, ldy: ldy, b: b.value, xa: xa, ldxa: ldr,
                                   n: n, N: outDim, r: r, alpha: scale)
        } else {
            LowRank.gemm(m: n, n: r, k: outDim, alpha: scale, a: dy, lda: ldy, b: b.value, ldb: r, c: mid, ldc: ldr)
        }
    }

    /// W + s·B·A as a plain [out, in] weight: the adapter folded back in
    /// (into the dequantized weight when W is NF4).
    public func fused() -> [Float] {
        var w = weight.floats
        guard let a = loraA, let b = loraB else { return w }
        w.withUnsafeMutableBufferPointer { wp in
            sgemm(m: outDim, n: inDim, k: rank, alpha: scale, a: b.value, lda: rank, b: a.value, ldb: inDim,
                  beta: 1, c: wp.baseAddress!, ldc: inDim)
        }
        return w
    }
}
