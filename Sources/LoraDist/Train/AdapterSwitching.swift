import Foundation

/// Several PEFT adapters used in turn on one loaded base (eval and generate with several
/// `--adapter NAME=DIR`): the model is built once with LoRA slots that can hold any of them,
/// and an adapter is switched in by writing its tensors into the slots in place and setting each
/// projection's scale. The base is read once, and no model is rebuilt.
///
/// The slots' layout is the union of the adapters' target modules at the largest rank. An
/// adapter of a smaller rank fills the first rows of A and columns of B, the rest zero; a
/// projection it does not adapt gets A = B = 0. Zeros add nothing, so each adapter computes
/// W·x + sᵢ·Bᵢ·Aᵢ·x as it would alone; when the adapters share rank and targets (the usual case:
/// one recipe, several data sets) the layout is each one's own, and the numbers are those of
/// loading it alone, bit for bit. (With another layout the sgemm over the padded rank may round
/// differently in the last bit.)
public enum AdapterSwitching {
    /// The LoRA layout that holds every one of `adapters`: union of targets, largest rank.
    public static func layout(_ adapters: [PEFTAdapter]) throws -> LoRAConfig {
        guard let first = adapters.first else { throw LoraDistError("no adapter given") }
        let targets = LoRAConfig.projections.filter { p in adapters.contains { $0.lora.targets.contains(p) } }
        return try LoRAConfig(rank: adapters.map(\.lora.rank).max()!, alpha: first.lora.alpha, dropout: 0,
                              targets: targets, useRSLoRA: first.lora.useRSLoRA)
    }
}

extension LlamaModel {
    /// Writes `adapter` into this model's LoRA slots, within the `owned` arena ranges (the node's
    /// ranks each write their own), and sets the projections' scales to the adapter's. Call
    /// `setAdapterScale` on other models sharing these weights. The adapter must fit the base
    /// (`PEFTAdapter.check(fits:)`) and the slots (`AdapterSwitching.layout`).
    public func use(_ adapter: PEFTAdapter, owned: [Range<Int>]) throws {
        guard let slots = lora else { throw LoraDistError("the model has no LoRA slots to put adapter \(adapter.label) in") }
        if let missing = adapter.lora.targets.first(where: { !slots.targets.contains($0) }) {
            throw LoraDistError("adapter \(adapter.label) adapts \(missing), which the model has no slot for")
        }
        guard adapter.lora.rank <= slots.rank else {
            throw LoraDistError("adapter \(adapter.label) has rank \(adapter.lora.rank), the model's slots \(slots.rank)")
        }
        for lin in linears {
            guard let pa = lin.loraA, let pb = lin.loraB else { continue }
            let R = lin.rank
            let module = adapter.modules[lin.name]
            if let m = module, m.inDim != lin.inDim || m.outDim != lin.outDim {
                throw LoraDistError("adapter \(adapter.label): \(lin.name) is [\(m.outDim), \(m.inDim)], the model's [\(lin.outDim), \(lin.inDim)]")
            }
            try store.write(pa, owned: owned) {
                guard let m = module else { return [Float](repeating: 0, count: pa.count) }
                if m.rank == R { return m.a }
                return m.a + [Float](repeating: 0, count: (R - m.rank) * lin.inDim)   // rows r..<R zero
            }
            try store.write(pb, owned: owned) {
                guard let m = module else { return [Float](repeating: 0, count: pb.count) }
                if m.rank == R { return m.b }
                var b = [Float](repeating: 0, count: pb.count)                       // columns r..<R zero
                for o in 0..<lin.outDim {
                    for j in 0..<m.rank { b[o * R + j] = m.b[o * m.rank + j] }
                }
                return b
            }
        }
        setAdapterScale(adapter)
    }

    /// Every adapted projection's scale set to `adapter`'s s (alpha/r or alpha/√r).
    public func setAdapterScale(_ adapter: PEFTAdapter) {
        for lin in linears where lin.loraA != nil { lin.scale = adapter.lora.scale }
    }
}

extension LoadedModel {
    /// Switches the node's model to `adapter` (see AdapterSwitching). Collective: every rank
    /// writes the part of the slots it owns, then the node publishes.
    public func use(_ adapter: PEFTAdapter) throws {
        let built: LlamaModel = model, owned = owned
        try cluster.agree { try built.use(adapter, owned: owned) }
        for m in replicas { m.setAdapterScale(adapter) }
        publish()
    }
}
