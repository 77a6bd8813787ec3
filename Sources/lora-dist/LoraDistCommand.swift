import ArgumentParser
import Foundation
import LoraDist

struct LoraDistCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-dist",
        abstract: "Fine-tune Llama-style language models on CPU clusters with LoRA or full fine-tuning.",
        discussion: "With no subcommand, runs the default job: a LoRA fine-tune of the built-in small model on the installed corpus.",
        version: BuildInfo.versionLine,
        subcommands: [Train.self, Eval.self, Generate.self, CompareCommand.self, Export.self, Adapters.self, Inspect.self, Plan.self, Bench.self],
        defaultSubcommand: Train.self)
}
