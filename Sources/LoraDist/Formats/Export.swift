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
        let m = try CheckpointFiles.readManifest(dir)
        let src = dir + "/" + CheckpointFiles.manifestName
        let config = try ModelConfig.fromHuggingFace(json: Data(m.modelConfigJSON.utf8), source: src)
        guard let mode = TrainMode(rawValue: m.mode) else { throw LoraDistError("\(src): unknown mode '\(m.mode)'") }
        let lora = mode.hasAdapters ? try LoRAConfig.fromPEFT(json: Data(m.loraConfigJSON.utf8), source: src) : nil
        if format == .peft && lora == nil {
            throw LoraDistError("\(dir) is a full fine-tuning checkpoint: it has no adapter; export it with --format merged")
        }
        // A QLoRA base is quantized on load exactly as in training; a merge folds the
        // adapters into its dequantized fp32 values (see docs/formats.md).
        let model = try LlamaModel(config: config, lora: lora, nf4Base: mode.nf4Base, maxBatch: 1, seqLen: 1)
        if lora != nil && format == .merged {
            // The base is not in a LoRA checkpoint: rebuild it as training did, and check it is the same.
            let source = try ModelSource(spec ?? m.modelSource)
            guard source.config == config else {
                throw LoraDistError("base \(source.spec) has another config than the checkpoint's model")
            }
            try source.build(model, seed: m.samplerSeed, owned: model.store.all)
            let identity = BaseIdentity.of(model)
            guard identity == m.baseIdentity else {
                throw LoraDistError("base \(source.spec) differs from the one the adapters were trained on (\(identity), checkpoint: \(m.baseIdentity))")
            }
        }
        // The trained tensors come from the checkpoint.
        let reader = CheckpointFiles.Reader(dir: dir)
        let index = CheckpointFiles.index(m)
        for p in model.store.trainable {
            try CheckpointFiles.gather(p.name, kind: "param", range: 0..<p.count, into: p.value, manifest: m,
                                       reader: reader, index: index)
        }
        switch format {
        case .peft: try HuggingFace.savePEFT(model, baseModel: baseName ?? m.modelSource, to: out)
        case .merged: try HuggingFace.saveMerged(model, to: out)
        }
    }
}
