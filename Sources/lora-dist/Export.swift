import ArgumentParser
import Foundation
import LoraDist

extension Exporter.Format: ExpressibleByArgument {}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint as a PEFT adapter (peft) or a Hugging Face model with the adapter folded in (merged); or fold several PEFT adapters with weights into a base (merged).",
        discussion: "With --adapter NAME=DIR (repeat) --weights w1,w2,... --model BASE --format merged: W + Σ wᵢ·sᵢ·Bᵢ·Aᵢ on every adapted projection (weights default to 1).")

    @Option(help: "peft: adapter_config.json + adapter_model.safetensors; merged: config.json + model.safetensors (W + s·B·A).")
    var format: Exporter.Format
    @Option(help: "A checkpoint: a step directory, a checkpoints folder or a run directory (its latest), or a latest/best pointer file.")
    var checkpoint: String?
    @Option(name: .customLong("adapter"), help: "A PEFT adapter to fold into --model (--format merged): DIR or NAME=DIR, repeat for several.")
    var adapters: [String] = []
    @Option(parsing: .unconditional, help: "With --adapter: one weight per adapter, comma-separated (default 1 each).") var weights: String?
    @Option(help: "Output directory.") var out: String
    @Option(help: "The base model (default: the --model the checkpoint was trained with). Merging a LoRA checkpoint, or adapters, needs it.")
    var model: String?
    @Option(name: .customLong("base-name"), help: "base_model_name_or_path written into adapter_config.json (default: the training --model).")
    var baseName: String?

    func run() throws {
        if !adapters.isEmpty {
            guard checkpoint == nil else { throw LoraDistError("give --checkpoint or --adapter, not both") }
            guard format == .merged else {
                throw LoraDistError("--adapter exports only --format merged (a PEFT adapter from several: lora-dist adapters combine)")
            }
            guard let model else { throw LoraDistError("--model (the base the adapters were made for) is needed to merge adapters") }
            guard baseName == nil else { throw LoraDistError("--base-name applies to --format peft of a checkpoint") }
            let args = try AdapterArgument.parse(adapters)
            let w = try AdapterArgument.weights(weights, count: args.count, default: 1)
            try Exporter.mergeAdapters(model: model, adapters: try AdapterArgument.load(args), weights: w, out: out)
            print("wrote merged export of \(args.map(\.name).joined(separator: ", ")) on \(model) to \(out)")
            return
        }
        guard weights == nil else { throw LoraDistError("--weights goes with --adapter") }
        guard let checkpoint else { throw LoraDistError("--checkpoint (or --adapter with --model) is needed") }
        try Exporter.export(checkpoint: checkpoint, format: format, out: out, model: model, baseName: baseName)
        print("wrote \(format.rawValue) export to \(out)")
    }
}
