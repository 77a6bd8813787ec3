import ArgumentParser
import Foundation
import LoraDist

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a model (or of a checkpoint's weights, or of PEFT adapters on it) on text: next-token cross-entropy over non-overlapping windows.",
        discussion: "With several --adapter NAME=DIR the base is loaded once and each adapter evaluated in turn on the same windows: one line per adapter.")

    @Option(help: "A built-in config, a Hugging Face model directory or a GGUF file.") var model: String = "small"
    @Option(help: "A text file, a JSON Lines file (.jsonl, the text under --text-field), or a folder of .txt and .jsonl files.") var data: String
    @Option(name: .customLong("text-field"), help: "The field of each JSON Lines record that holds its text.")
    var textField: String = "text"
    @Flag(name: .customLong("replace-invalid-utf8"), help: "Read bytes that are not UTF-8 (and lone surrogate escapes in JSON Lines) as U+FFFD instead of refusing the file.")
    var replaceInvalidUTF8 = false
    @Option(help: "A checkpoint (step directory, checkpoints folder, run directory or latest/best pointer file) whose weights to evaluate on top of --model.")
    var checkpoint: String?
    @Option(name: .customLong("adapter"), help: "A PEFT adapter directory to evaluate on --model: DIR, or NAME=DIR (repeat for several; the base is loaded once).")
    var adapters: [String] = []
    @Option(name: .customLong("seq"), help: "Tokens per window.") var seqLen: Int = 128
    @Option(help: "Windows, spread evenly over the text.") var windows: Int = 64
    @Option(help: "Windows per forward pass.") var batch: Int = 4
    @Option(help: "Seed of a built-in model's random initialisation (as in training).") var seed: UInt64 = 1234
    @Flag(help: "One JSON object per line (model, data, loss, perplexity, accuracy, windows, seq_len) instead of the sentence.")
    var json = false

    func run() throws {
        guard (1...1_000_000).contains(windows) else { throw LoraDistError("--windows must be in 1...1000000, got \(windows)") }
        guard (1...1 << 20).contains(seqLen) else { throw LoraDistError("--seq must be in 1...1048576, got \(seqLen)") }
        guard (1...100_000).contains(batch) else { throw LoraDistError("--batch must be in 1...100000, got \(batch)") }
        if checkpoint != nil && !adapters.isEmpty {
            throw LoraDistError("give --checkpoint or --adapter, not both (a checkpoint holds its own adapters)")
        }
        let adapterArgs = try AdapterArgument.parse(adapters)
        let cluster = Cluster()
        let reading = CorpusReading(textField: textField, replaceInvalidUTF8: replaceInvalidUTF8)
        // The base alone; or the model a checkpoint was trained as (its mode, adapters and seed) on --model.
        var o = LoadedModel.Options.base(model)
        o.seed = seed
        var checkpointDir: String?
        if let checkpoint {
            let dir = try CheckpointInspector.locate(checkpoint)
            o = try LoadedModel.Options.checkpoint(try CheckpointFiles.readManifest(dir), source: dir, model: model)
            checkpointDir = dir
        }
        o.seqLen = seqLen
        o.maxBatch = (batch + cluster.size - 1) / cluster.size  // each rank's share of a forward pass
        let (plan, corpus, set) = try cluster.agree { () throws -> (LoadedModel.Plan, Corpus, [PEFTAdapter]) in
            // Adapters: read and checked against the base before anything is built; the model gets
            // LoRA slots that hold any of them (AdapterSwitching).
            let set = try AdapterArgument.load(adapterArgs)
            if !set.isEmpty { o.lora = try AdapterSwitching.layout(set) }
            let plan = try LoadedModel.Plan(o)
            try PEFTAdapter.checkOneBase(set, base: (plan.source.config, model))
            let corpus = try Corpus(path: data, tokenizer: plan.source.tokenizer, devPercent: 0, reading: reading)
            let count = corpus.train.count + corpus.dev.count
            guard count > seqLen + 1 else {
                throw LoraDistError("\(data) has \(count) tokens, fewer than one window of \(seqLen + 1)")
            }
            let available = (count - 1) / seqLen
            guard windows <= available else {
                throw LoraDistError("--windows \(windows): \(data) holds only \(available) windows of \(seqLen) tokens")
            }
            return (plan, corpus, set)
        }
        let loaded = try LoadedModel(plan, cluster: cluster)
        if let checkpointDir { try loaded.loadTrained(fromCheckpoint: checkpointDir) }
        let tokens = corpus.train + corpus.dev
        // One line per adapter (a named one is called by its name), or one for the model.
        let runs: [(label: String, adapter: PEFTAdapter?)] = set.isEmpty ? [(checkpoint ?? model, nil)]
            : zip(adapterArgs, set).map { ($0.named ? $0.name : "\(model) + \($0.dir)", $1) }
        for (i, run) in runs.enumerated() {
            if let adapter = run.adapter { try loaded.use(adapter) }
            let result = loaded.evaluation(tokens: tokens, windows: windows)
            let loss = result.loss
            // Every rank has the same (reduced) loss, so every rank stops alike. Name the weight at fault.
            guard loss.isFinite else {
                if let bad = loaded.model.store.firstNonFinite(owned: loaded.model.store.all) {
                    throw LoraDistError("\(run.label): tensor '\(bad.name)' holds a non-finite value (NaN or infinity) at element \(bad.element); perplexity is undefined")
                }
                throw LoraDistError("\(run.label): the loss on \(data) is not finite (\(loss)) though every weight is")
            }
            guard cluster.isRoot else { continue }
            if i == 0 { FileHandle.standardError.write(Data(corpusNotes(corpus, reading: reading).utf8)) }
            if json {
                let record = EvalRecord(model: run.label, data: data, loss: loss, perplexity: result.perplexity,
                                        accuracy: result.accuracy, windows: windows, seqLen: seqLen)
                print(String(decoding: try JSONCoding.encode(record, pretty: false), as: UTF8.self))
            } else {
                print(String(format: "%@ on %@: loss %.4f nats/token, perplexity %.2f, next-token accuracy %.2f %% (%ld windows of %ld tokens)",
                             run.label, data, loss, result.perplexity, 100 * result.accuracy, windows, seqLen))
            }
            fflush(stdout)
        }
    }
}

/// One line of `eval --json`: what the sentence says, as numbers. Accuracy is top-1 next-token
/// accuracy (a fraction) over the same windows as the loss.
struct EvalRecord: Encodable {
    var model: String, data: String
    var loss: Double, perplexity: Double, accuracy: Double
    var windows: Int, seqLen: Int
    enum CodingKeys: String, CodingKey {
        case model, data, loss, perplexity, accuracy, windows, seqLen = "seq_len"
    }
}
