import ArgumentParser
import Foundation
import LoraDist

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue a prompt with a base model, a checkpoint's model, or a PEFT adapter on its base (key/value cache).",
        discussion: "With several --adapter NAME=DIR (or one NAME=DIR) the base is loaded once and each adapter answers in turn, one line each: NAME: text, with backslash, newline, carriage return and tab written as \\\\, \\n, \\r and \\t, other control characters as \\u{XX}.")

    @Option(help: "A built-in config, a Hugging Face model directory or a GGUF file (with --checkpoint: the base, default the one it was trained on).")
    var model: String?
    @Option(help: "A checkpoint (step directory, checkpoints folder, run directory or latest/best pointer file).")
    var checkpoint: String?
    @Option(name: .customLong("adapter"), help: "A PEFT adapter directory to apply on --model: DIR, or NAME=DIR (repeat for several; the base is loaded once).")
    var adapters: [String] = []
    @Option(help: "The text to continue.") var prompt: String
    @Option(name: .customLong("max-new-tokens"), help: "Tokens to generate at most (fewer when the model ends the text).")
    var maxNewTokens: Int = 64
    @Option(help: "0: greedy (the most likely token each time); above 0: sample from softmax(logits / temperature).")
    var temperature: Float = 0
    @Option(name: .customLong("top-p"), help: "Sample only among the most likely tokens whose probabilities add up to this.")
    var topP: Float = 1
    @Option(help: "Seed of the sampling. (A model without weights is initialised as training's default --seed does.)")
    var seed: UInt64 = 1234
    @Flag(name: .customLong("ids"), help: "Print the generated token ids instead of text.") var ids = false

    func run() throws {
        guard maxNewTokens >= 1, maxNewTokens <= 1 << 20 else {
            throw LoraDistError("--max-new-tokens must be between 1 and 1048576, got \(maxNewTokens)")
        }
        guard temperature.isFinite, temperature >= 0 else { throw LoraDistError("--temperature must be 0 or more, got \(temperature)") }
        guard topP.isFinite, topP > 0, topP <= 1 else { throw LoraDistError("--top-p must be in (0, 1], got \(topP)") }
        if checkpoint != nil && !adapters.isEmpty {
            throw LoraDistError("give --checkpoint or --adapter, not both (a checkpoint holds its own adapters)")
        }
        guard checkpoint != nil || model != nil else { throw LoraDistError("--model or --checkpoint is needed") }
        let adapterArgs = try AdapterArgument.parse(adapters)
        // Under mpirun every rank validates the same input (so bad input fails everywhere);
        // only rank 0 generates and prints: one model's generation is not split over ranks.
        let env = ProcessInfo.processInfo.environment
        let rank0 = (env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? "0") == "0"

        let source = try ModelSource(model ?? (try CheckpointFiles.readManifest(CheckpointInspector.locate(checkpoint!)).modelSource))
        let promptIds = [source.tokenizer.bos] + source.tokenizer.encode(prompt)
        let context = promptIds.count + maxNewTokens
        guard context <= source.config.maxPositionEmbeddings else {
            throw LoraDistError("prompt (\(promptIds.count) tokens) + --max-new-tokens \(maxNewTokens) exceed the model's max_position_embeddings \(source.config.maxPositionEmbeddings)")
        }
        let set = try AdapterArgument.load(adapterArgs)
        try PEFTAdapter.checkOneBase(set, base: (source.config, model ?? ""))
        let built: LlamaModel
        if let checkpoint {
            built = try CheckpointModel.load(checkpoint, model: model, needsBase: true, maxBatch: 1, seqLen: context).model
        } else if !set.isEmpty {
            // One model with LoRA slots that hold any of the adapters; each is switched in below.
            built = try LlamaModel(config: source.config, lora: try AdapterSwitching.layout(set), maxBatch: 1, seqLen: context)
            try source.checkBase(built.store.params.map(\.spec))
            try source.build(built, seed: TrainOptions().seed, owned: built.store.all)
        } else {
            built = try LlamaModel(config: source.config, lora: nil, maxBatch: 1, seqLen: context)
            try source.checkBase(built.store.params.map(\.spec))
            try source.build(built, seed: TrainOptions().seed, owned: built.store.all)
        }
        guard rank0 else { return }
        BLAS.setThreads(ProcessInfo.processInfo.activeProcessorCount)
        let generator = Generator(model: built)
        // A single unnamed --adapter (or none) prints the text as it comes; named adapters one line each.
        let lines = adapterArgs.count > 1 || adapterArgs.first?.named == true
        let runs: [(name: String, adapter: PEFTAdapter?)] = set.isEmpty ? [("", nil)] : zip(adapterArgs, set).map { ($0.name, $1) }
        for run in runs {
            if let adapter = run.adapter { try built.use(adapter, owned: built.store.all) }
            let start = Date()
            if !ids && !lines { print(prompt, terminator: "") }
            let tokens = generator.generate(prompt: promptIds, maxNewTokens: maxNewTokens,
                                            sampling: .init(temperature: temperature, topP: topP, seed: seed),
                                            stop: source.tokenizer.eos)
            let seconds = Date().timeIntervalSince(start)
            let text = ids ? tokens.map(String.init).joined(separator: " ")
                : source.tokenizer.decode(tokens.filter { $0 != source.tokenizer.eos })
            if lines {
                print(run.name + ": " + (ids ? text : Self.oneLine(prompt + text)))
            } else {
                print(text)
            }
            fflush(stdout)
            FileHandle.standardError.write(Data(String(format: "%@%ld tokens in %.2f s: %.1f tokens/s (prompt %ld tokens)\n",
                                                       lines ? run.name + ": " : "", tokens.count, seconds,
                                                       Double(tokens.count) / max(seconds, 1e-9), promptIds.count).utf8))
        }
    }

    /// Text on one line: backslash, newline, carriage return and tab escaped, and every other
    /// control character or line/paragraph separator as \u{XX}.
    static func oneLine(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                switch c.properties.generalCategory {
                case .control, .lineSeparator, .paragraphSeparator: out += "\\u{" + String(c.value, radix: 16, uppercase: true) + "}"
                default: out.unicodeScalars.append(c)
                }
            }
        }
        return out
    }
}
