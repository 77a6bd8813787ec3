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
        case .merged: try HuggingFace.saveMerged(loaded.model, to: out)
        }
    }
}
