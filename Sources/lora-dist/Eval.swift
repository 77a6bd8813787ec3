import ArgumentParser
import Foundation
import LoraDist

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a model (or of a checkpoint's weights) on text: next-token cross-entropy over non-overlapping windows.")

    @Option(help: "A built-in config, a Hugging Face model directory or a GGUF file.") var model: String = "small"
    @Option(help: "A text file, a JSON Lines file (.jsonl, the text under --text-field), or a folder of .txt and .jsonl files.") var data: String
    @Option(name: .customLong("text-field"), help: "The field of each JSON Lines record that holds its text.")
    var textField: String = "text"
    @Flag(name: .customLong("replace-invalid-utf8"), help: "Read bytes that are not UTF-8 (and lone surrogate escapes in JSON Lines) as U+FFFD instead of refusing the file.")
    var replaceInvalidUTF8 = false
    @Option(help: "A checkpoint (step directory, checkpoints folder, run directory or latest/best pointer file) whose weights to evaluate on top of --model.")
    var checkpoint: String?
    @Option(name: .customLong("seq"), help: "Tokens per window.") var seqLen: Int = 128
    @Option(help: "Windows, spread evenly over the text.") var windows: Int = 64
    @Option(help: "Windows per forward pass.") var batch: Int = 4
    @Option(help: "Seed of a built-in model's random initialisation (as in training).") var seed: UInt64 = 1234

    func run() throws {
        let cluster = Cluster()
        var o = TrainOptions()
        o.model = model
        o.data = data
        o.devData = data
        o.textField = textField; o.replaceInvalidUTF8 = replaceInvalidUTF8
        o.seqLen = seqLen
        o.batch = batch
        o.seed = seed
        o.quiet = true
        o.steps = 1
        // Without a checkpoint, a rank-1 adapter with B = 0 leaves the base exactly as it is
        // and keeps no gradient or optimizer state for the base.
        o.mode = .lora
        o.lora = try LoRAConfig(rank: 1, alpha: 1, targets: ["q_proj"])
        var checkpointDir: String?
        if let checkpoint {
            // absolute, so that resume() reads it as a path whatever form it was given in
            let dir = URL(fileURLWithPath: try CheckpointInspector.locate(checkpoint)).standardizedFileURL.path
            checkpointDir = dir
            let m = try CheckpointFiles.readManifest(dir)
            o.mode = TrainMode(rawValue: m.mode) ?? .lora
            o.lora = o.mode.hasAdapters ? try LoRAConfig.fromPEFT(json: Data(m.loraConfigJSON.utf8), source: dir) : nil
            o.seed = m.samplerSeed
            let parent = (dir as NSString).deletingLastPathComponent
            o.runDir = (parent as NSString).lastPathComponent == "checkpoints" ? (parent as NSString).deletingLastPathComponent : parent
        } else {
            o.runDir = NSTemporaryDirectory() + "lora-dist-eval-\(getpid())"
        }
        let trainer = try Trainer(options: o, cluster: cluster)
        if let checkpointDir {
            _ = try cluster.agree { try trainer.resume(checkpointDir, continuing: false) }
        }
        // The trainer read --data as its dev set with the model's tokenizer: evaluate that.
        let loss = trainer.evaluate(tokens: trainer.corpus.dev, windows: windows)
        guard cluster.isRoot else { return }
        FileHandle.standardError.write(Data(corpusNotes(trainer.corpus, reading: o.corpusReading).utf8))
        print(String(format: "%@ on %@: loss %.4f nats/token, perplexity %.2f (%d windows of %d tokens)",
                     checkpoint ?? model, data, loss, Foundation.exp(loss), windows, seqLen))
    }
}
