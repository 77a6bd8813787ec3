import Foundation

/// `lora-dist export`: a checkpoint as a PEFT adapter or a merged Hugging Face model.
public enum Exporter {
    public enum Format: String, CaseIterable { case peft, merged }

    /// Rebuilds the model a checkpoint describes in this process (no MPI) and
    /// writes it out. `model` overrides the base recorded in the checkpoint
    /// (needed to merge a LoRA checkpoint whose base has moved).
    public static func export(checkpoint: String, format: Format, out: String, model spec: String?,
                              baseName: String?) throws {
        let dir = try CheckpointInspector.locate(checkpoint)
        let mode = TrainMode(rawValue: try CheckpointFiles.readManifest(dir).mode)
        if format == .peft && mode?.hasAdapters == false {
            throw LoraDistError("\(dir) is a full fine-tuning checkpoint: it has no adapter; export it with --format merged")
        }
        // A merge folds the adapters into the (for QLoRA: dequantized fp32) base, which must be loaded.
        let loaded = try CheckpointModel.load(dir, model: spec, needsBase: format == .merged)
        switch format {
        case .peft: try HuggingFace.savePEFT(loaded.model, baseModel: baseName ?? loaded.manifest.modelSource, to: out)
        case .merged:
            // The base's tokenizer goes with the model: the base the load read, or (a full fine-tuning
            // checkpoint needs no weights of it) the base read now for its tokenizer alone.
            let source: ModelSource
            do { source = try loaded.source ?? ModelSource(loaded.sourceSpec) } catch let e as LoraDistError {
                throw LoraDistError("the merged model needs the tokenizer of its base \(loaded.sourceSpec): \(e.message) (--model names the base if it has moved)")
            }
            try HuggingFace.saveMerged(loaded.model, tokenizerOf: source, to: out)
        }
    }

    /// Folds several PEFT adapters with weights into the base `model` and writes a merged Hugging
    /// Face model: W + Σ wᵢ·sᵢ·Bᵢ·Aᵢ on every projection an adapter adapts (each adapter's own
    /// scale sᵢ: alpha/r, or alpha/√r). Each adapter is checked against the base first. A base
    /// without weights (a built-in config) is initialised with `seed`, as training does.
    public static func mergeAdapters(model spec: String, adapters: [PEFTAdapter], weights: [Double], out: String,
                                     seed: UInt64 = TrainOptions().seed) throws {
        guard !adapters.isEmpty else { throw LoraDistError("no adapter to merge") }
        try AdapterArgument.checkUnique(adapters.map(\.name))
        guard weights.count == adapters.count else {
            throw LoraDistError("--weights has \(weights.count) values for \(adapters.count) adapters")
        }
        if let i = weights.firstIndex(where: { !$0.isFinite }) {
            throw LoraDistError("--weights: the weight of \(adapters[i].name) is \(weights[i]), not a finite number")
        }
        let source = try ModelSource(spec)
        try PEFTAdapter.checkOneBase(adapters, base: (source.config, spec))
        let model = try LlamaModel(config: source.config, lora: nil, maxBatch: 1, seqLen: 1)
        try source.checkBase(model.store.params.map(\.spec))
        try source.build(model, seed: seed, owned: model.store.all)
        var fused: [String: [Float]] = [:]
        for lin in model.linears {
            let present = adapters.indices.filter { adapters[$0].modules[lin.name] != nil }
            guard !present.isEmpty else { continue }
            var w = lin.weight.floats
            w.withUnsafeMutableBufferPointer { wp in
                for i in present {
                    let m = adapters[i].modules[lin.name]!
                    m.b.withUnsafeBufferPointer { b in
                        m.a.withUnsafeBufferPointer { a in
                            sgemm(m: lin.outDim, n: lin.inDim, k: m.rank, alpha: Float(weights[i]) * adapters[i].lora.scale,
                                  a: b.baseAddress!, lda: m.rank, b: a.baseAddress!, ldb: lin.inDim,
                                  beta: 1, c: wp.baseAddress!, ldc: lin.inDim)
                        }
                    }
                }
            }
            fused[lin.weight.name] = w
        }
        let note = "PEFT adapters merged, W + Σ w·s·B·A with w: " + adapters.indices.map { "\(adapters[$0].name) \(weights[$0])" }.joined(separator: ", ")
        try HuggingFace.saveMerged(model, fused: fused, tokenizerOf: source, to: out, note: note)
    }
}
