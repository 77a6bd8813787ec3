import ArgumentParser
import Foundation
import LoraDist

extension Exporter.Format: ExpressibleByArgument {}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint as a PEFT adapter (peft) or a Hugging Face model with the adapter folded in (merged).")

    @Option(help: "peft: adapter_config.json + adapter_model.safetensors; merged: config.json + model.safetensors (W + s·B·A).")
    var format: Exporter.Format
    @Option(help: "A checkpoint: a step directory, a checkpoints folder or a run directory (its latest), or a latest/best pointer file.")
    var checkpoint: String
    @Option(help: "Output directory.") var out: String
    @Option(help: "The base model (default: the --model the checkpoint was trained with). Merging a LoRA checkpoint needs it.")
    var model: String?
    @Option(name: .customLong("base-name"), help: "base_model_name_or_path written into adapter_config.json (default: the training --model).")
    var baseName: String?

    func run() throws {
        try Exporter.export(checkpoint: checkpoint, format: format, out: out, model: model, baseName: baseName)
        print("wrote \(format.rawValue) export to \(out)")
    }
}
