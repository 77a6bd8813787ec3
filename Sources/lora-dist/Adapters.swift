import ArgumentParser
import Foundation
import LoraDist

extension AdapterCombine.Method: ExpressibleByArgument {}

struct Adapters: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with PEFT adapters: combine several into one.",
        subcommands: [Combine.self])

    struct Combine: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A weighted combination of PEFT adapters as one PEFT adapter (peft's add_weighted_adapter, linear or cat).",
            discussion: """
            linear (equal ranks and target modules): A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ, rank unchanged.
            cat: the adapters' ranks concatenated (r = Σ rᵢ), rows wᵢ·sᵢ·Aᵢ and columns Bᵢ, so B·A = Σ wᵢ·sᵢ·Bᵢ·Aᵢ.
            The result has lora_alpha = r, the union of the target modules, and the first adapter's other settings, as peft writes it.
            """)

        @Option(name: .customLong("adapter"), help: "A PEFT adapter directory, NAME=DIR (repeat, in order).")
        var adapters: [String] = []
        @Option(parsing: .unconditional, help: "One weight per adapter, comma-separated (negative subtracts).") var weights: String
        @Option(help: "linear (equal ranks and targets) or cat (ranks concatenated).") var method: AdapterCombine.Method
        @Option(help: "Output directory (adapter_config.json, adapter_model.safetensors).") var out: String
        @Option(help: "The base the adapters were made for: each is checked against it. Without it they must agree with each other and name the same base_model_name_or_path.")
        var model: String?

        func run() throws {
            guard !adapters.isEmpty else { throw LoraDistError("--adapter NAME=DIR is needed (one per adapter to combine)") }
            let args = try AdapterArgument.parse(adapters)
            let w = try AdapterArgument.weights(weights, count: args.count)
            let loaded = try AdapterArgument.load(args)
            if let model {
                let source = try ModelSource(model)
                try PEFTAdapter.checkOneBase(loaded, base: (source.config, model))
            } else {
                try PEFTAdapter.checkOneBase(loaded, base: nil)
            }
            let result = try AdapterCombine.combine(loaded, weights: w, method: method)
            try AdapterCombine.write(result, to: out)
            let terms = loaded.indices.map { "\(w[$0])·\(loaded[$0].name)" }.joined(separator: " + ")
            print("wrote \(result.method.rawValue) combination \(terms) to \(out): r \(result.lora.rank), lora_alpha \(result.lora.rank), targets \(result.lora.targets.joined(separator: ","))")
        }
    }
}
