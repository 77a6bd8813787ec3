import Foundation

/// Projections that read the same input and write their outputs side by side, as column blocks
/// of one [rows, Σ out] buffer: q, k, v (attention) and gate, up (MLP).
///
/// Hugging Face stores a weight [out, in], row-major, so weights laid out one after another in
/// the same arena already are the stacked [Σ out, in] matrix: the group then runs one product
/// x·Wᵀ (and in the backward one dx = dy·W and one dW += dyᵀ·x) instead of one per projection,
/// and sgemm gets wider shapes. The same holds for the adapters' A matrices [r, in] when every
/// projection of the group has one, of the same rank, without dropout (dropout draws a mask
/// per projection, so their inputs differ): x·Aᵀ is one [rows, parts·r] product, and so are
/// dA and the adapters' share of dx. The B products stay one per projection.
/// Anything else (NF4 weights, weights in different arenas or apart, partial adapters) runs
/// projection by projection into the same columns: the same numbers up to summation order.
final class LinearGroup {
    let parts: [Linear]
    let columns: [Int]          // each part's first output column
    let width: Int              // Σ out: the row stride of the group's output and its gradient
    let inDim: Int
    /// One product over the stacked weights.
    let fusedWeight: Bool
    /// One product over the stacked A matrices; x·Aᵀ and s·dy·B of every part live here, [rows, parts·r].
    let fusedA: Bool
    let adapterWidth: Int       // parts·r when fusedA
    private let xa: FloatBuffer?, mid: FloatBuffer?

    /// `outs`: (module name, out) of each part, in store order. `fuse` false keeps every product
    /// separate (the reference the fused products are tested against, and `bench step --unfused`).
    init(_ outs: [(name: String, out: Int)], inDim: Int, store: ParameterStore, lora: LoRAConfig?,
         linearIndex: inout Int, maxRows: Int, dequant: NF4Matmul.Scratch?, fuse: Bool) {
        self.inDim = inDim
        width = outs.reduce(0) { $0 + $1.out }
        columns = outs.indices.map { i in outs[..<i].reduce(0) { $0 + $1.out } }
        let weights = outs.map { store[$0.name + ".weight"] }
        fusedWeight = fuse && outs.count > 1 && weights.allSatisfy { !$0.spec.nf4 } && Self.adjacent(weights)
        let aParams = outs.compactMap { store.byName[$0.name + ".lora_A.weight"] }
        let rank = aParams.first?.spec.shape[0] ?? 0
        fusedA = fuse && outs.count > 1 && aParams.count == outs.count && (lora?.dropout ?? 0) == 0
            && aParams.allSatisfy { $0.spec.shape[0] == rank } && Self.adjacent(aParams)
        let g = outs.count * rank
        adapterWidth = fusedA ? g : 0
        let xa = fusedA ? FloatBuffer(maxRows * g) : nil, mid = fusedA ? FloatBuffer(maxRows * g) : nil
        self.xa = xa
        self.mid = mid
        var parts: [Linear] = []
        for (i, o) in outs.enumerated() {
            linearIndex += 1
            var shared: (xa: FPtr, mid: FPtr, ld: Int)?
            if let xa, let mid { shared = (xa.ptr + i * rank, mid.ptr + i * rank, g) }
            parts.append(Linear(name: o.name, inDim: inDim, outDim: o.out, store: store, lora: lora, index: linearIndex,
                                maxRows: maxRows, dequant: dequant, adapterRows: shared))
        }
        self.parts = parts
    }

    /// Tensors one after another in the same arena (values, and gradients when they train).
    static func adjacent(_ ps: [Param]) -> Bool {
        zip(ps, ps.dropFirst()).allSatisfy { a, b in
            a.spec.trainable == b.spec.trainable && b.offset == a.offset + a.spec.slots && b.value == a.value + a.spec.slots
        }
    }

    /// y[n, width] = the parts' outputs side by side. `recomputing`: as Linear.forward (the
    /// adapters' x·Aᵀ of the forward on this x are still held; only the B products run).
    func forward(y: FPtr, x: UnsafePointer<Float>, n: Int, seqLen: Int, dropoutSeeds: UnsafePointer<UInt64>?,
                 recomputing: Bool = false) {
        if fusedWeight {
            Matmul.forward(y: y, x: x, w: parts[0].weight.value, n: n, inDim: inDim, outDim: width)
            for (p, c) in zip(parts, columns) { p.addBias(y: y + c, ldy: width, n: n) }
        } else {
            for (p, c) in zip(parts, columns) { p.forwardBase(y: y + c, ldy: width, x: x, n: n) }
        }
        if fusedA, let xa, !recomputing {
            let g = adapterWidth
            LowRank.gemm(transB: true, m: n, n: g, k: inDim, a: x, lda: inDim, b: parts[0].loraA!.value, ldb: inDim,
                         c: xa.ptr, ldc: g)
        }
        for (p, c) in zip(parts, columns) {
            if fusedA || recomputing {
                p.adapterUp(y: y + c, ldy: width, n: n)
            } else {
                p.forwardAdapter(y: y + c, ldy: width, x: x, n: n, seqLen: seqLen, dropoutSeeds: dropoutSeeds)
            }
        }
    }

    /// dx (=, or += when accumulateDx) ∂L/∂x from dy[n, width]; weight and adapter gradients accumulate.
    /// dx nil: no ∂L/∂x (Linear.backward).
    func backward(dx: FPtr?, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int, accumulateDx: Bool) {
        if fusedWeight {
            Matmul.backward(dx: dx, dw: parts[0].weight.grad, dy: dy, x: x, w: parts[0].weight.value, n: n,
                            inDim: inDim, outDim: width, accumulateDx: accumulateDx)
            for (p, c) in zip(parts, columns) { p.biasBackward(dy: dy + c, ldy: width, n: n) }
        } else {
            for (i, (p, c)) in zip(parts, columns).enumerated() {
                p.backwardBase(dx: dx, dy: dy + c, ldy: width, x: x, n: n, accumulateDx: accumulateDx || i > 0)
            }
        }
        if fusedA, let mid {
            let a = parts[0].loraA!, g = adapterWidth
            // each part's mid = s·dy·B (and dB); then dA += midᵀ·x and dx += mid·A over the stacked A
            for (p, c) in zip(parts, columns) { p.adapterMid(dy: dy + c, ldy: width, n: n) }
            if let ga = a.grad {
                LowRank.gemm(transA: true, m: g, n: inDim, k: n, a: mid.ptr, lda: g, b: x, ldb: inDim, beta: 1, c: ga, ldc: inDim)
            }
            if let dx { LowRank.gemm(m: n, n: inDim, k: g, a: mid.ptr, lda: g, b: a.value, ldb: inDim, beta: 1, c: dx, ldc: inDim) }
        } else {
            for (p, c) in zip(parts, columns) { p.backwardAdapter(dx: dx, dy: dy + c, ldy: width, x: x, n: n) }
        }
    }
}
