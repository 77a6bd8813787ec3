import Foundation

/// The model a checkpoint describes, rebuilt in this process (no MPI, no shared window):
/// what export and generate need. The trained tensors come from the checkpoint; a LoRA
/// checkpoint's frozen base is rebuilt from its source as training did and checked to be
/// the same base (BaseIdentity).
public enum CheckpointModel {
    public struct Loaded {
        public let model: LlamaModel
        public let manifest: Manifest
        public let dir: String
        /// The --model the base came from (the checkpoint's own unless overridden).
        public let sourceSpec: String
        /// That base, when the load read it (a LoRA checkpoint with `needsBase`).
        public let source: ModelSource?
    }

    /// `model` overrides the base recorded in the checkpoint (needed when it has moved).
    /// `needsBase`: load a LoRA checkpoint's frozen base too (merging, generating), not only its adapters.
    public static func load(_ checkpoint: String, model spec: String?, needsBase: Bool,
                            maxBatch: Int = 1, seqLen: Int = 1) throws -> Loaded {
        let dir = try CheckpointInspector.locate(checkpoint)
        let m = try CheckpointFiles.readManifest(dir)
        let src = dir + "/" + CheckpointFiles.manifestName
        let config = try ModelConfig.fromHuggingFace(json: Data(m.modelConfigJSON.utf8), source: src)
        guard let mode = TrainMode(rawValue: m.mode) else { throw LoraDistError("\(src): unknown mode '\(m.mode)'") }
        let lora = mode.hasAdapters ? try LoRAConfig.fromPEFT(json: Data(m.loraConfigJSON.utf8), source: src) : nil
        // A QLoRA base is quantized on load exactly as in training (see docs/formats.md).
        let model = try LlamaModel(config: config, lora: lora, nf4Base: mode.nf4Base, maxBatch: maxBatch, seqLen: seqLen)
        var source: ModelSource?
        if lora != nil && needsBase {
            // The base is not in a LoRA checkpoint: rebuild it as training did, and check it is the same.
            let base = try ModelSource(spec ?? m.modelSource)
            source = base
            guard base.config == config else {
                throw LoraDistError("base \(base.spec) has another config than the checkpoint's model")
            }
            try base.build(model, seed: m.samplerSeed, owned: model.store.all)
            let identity = BaseIdentity.of(model)
            guard identity == m.baseIdentity else {
                throw LoraDistError("base \(base.spec) differs from the one the adapters were trained on (\(identity), checkpoint: \(m.baseIdentity))")
            }
        }
        let reader = CheckpointFiles.Reader(dir: dir)
        let index = CheckpointFiles.index(m)
        for p in model.store.trainable {
            try CheckpointFiles.gather(p.name, kind: "param", range: 0..<p.count, into: p.value, manifest: m,
                                       reader: reader, index: index)
        }
        return Loaded(model: model, manifest: m, dir: dir, sourceSpec: spec ?? m.modelSource, source: source)
    }
}
