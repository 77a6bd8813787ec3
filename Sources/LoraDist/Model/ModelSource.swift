import Foundation

/// Where a model comes from, as `--model` names it: a built-in config (random
/// initialisation), a Hugging Face config.json (random initialisation), a
/// Hugging Face model directory (config.json, safetensors weights, tokenizer.json
/// when present), or a GGUF file (config, weights and tokenizer in one file).
public final class ModelSource {
    public enum Weights {
        case none
        case huggingFace(HuggingFace.Weights)
        case gguf(GGUFFile)
    }

    public let spec: String
    public let config: ModelConfig
    public let weights: Weights
    public let tokenizer: Tokenizer

    public init(_ spec: String) throws {
        self.spec = spec
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if ModelConfig.builtIn[spec] != nil || !fm.fileExists(atPath: spec, isDirectory: &isDir) {
            config = try ModelConfig.load(spec)
            weights = .none
            tokenizer = ByteTokenizer()
        } else if spec.hasSuffix(".gguf") {
            let f = try GGUFFile(path: spec)
            config = try GGUFImport.config(f)
            weights = .gguf(f)
            tokenizer = try Self.tokenizer(gguf: f)
        } else if isDir.boolValue {
            config = try ModelConfig.load(spec)
            let hasWeights = fm.fileExists(atPath: spec + "/model.safetensors")
                || fm.fileExists(atPath: spec + "/model.safetensors.index.json")
            weights = hasWeights ? .huggingFace(try HuggingFace.Weights(modelDir: spec)) : .none
            if let json = fm.contents(atPath: spec + "/tokenizer.json") {
                tokenizer = try BPETokenizer(tokenizerJSON: json, bos: config.bosTokenId, eos: config.eosTokenId)
            } else {
                tokenizer = ByteTokenizer()
            }
        } else {
            config = try ModelConfig.load(spec)
            weights = .none
            tokenizer = ByteTokenizer()
        }
        guard config.vocabSize >= tokenizer.vocabSize else {
            throw LoraDistError("\(spec): model vocabulary \(config.vocabSize) is smaller than its tokenizer's \(tokenizer.vocabSize)")
        }
    }

    public var hasWeights: Bool { if case .none = weights { return false } else { return true } }

    /// Checks that the weights fit `specs` (every base tensor present, right shape).
    public func checkBase(_ specs: [ParamSpec]) throws {
        switch weights {
        case .none: return
        case .huggingFace(let w): try HuggingFace.checkBase(specs, in: w)
        case .gguf(let f): try GGUFImport.checkBase(specs, in: f)
        }
    }

    /// Fills the `owned` arena ranges of the base weights from the files.
    /// Every value of `model` inside `owned`: the base from the weights (random when there are
    /// none), the adapters from their initialisation. The base is not drawn at random first
    /// only to be overwritten (under QLoRA that would also quantize it twice).
    public func build(_ model: LlamaModel, seed: UInt64, owned: [Range<Int>]) throws {
        model.initialize(seed: seed, owned: owned, adaptersOnly: hasWeights)
        do {
            try loadBase(model, owned: owned)
        } catch let e as LoraDistError where e.message.hasPrefix("tensor '") {
            throw LoraDistError("\(spec): \(e.message)")   // a non-finite weight: name the file too
        }
    }

    public func loadBase(_ model: LlamaModel, owned: [Range<Int>]) throws {
        switch weights {
        case .none: return
        case .huggingFace(let w): try HuggingFace.loadBase(model, from: w, owned: owned)
        case .gguf(let f): try GGUFImport.loadBase(model, from: f, owned: owned)
        }
    }
}

extension ModelSource {
    /// The byte-level BPE tokenizer a GGUF file carries in its tokenizer.ggml.* metadata.
    static func tokenizer(gguf f: GGUFFile) throws -> Tokenizer {
        guard try f.string("tokenizer.ggml.model") == "gpt2" else {
            throw LoraDistError("\(f.path): tokenizer model \(try f.string("tokenizer.ggml.model") ?? "none") is not supported (only gpt2-style byte-level BPE)")
        }
        guard let tokens = try f.stringArray("tokenizer.ggml.tokens"), let merges = try f.stringArray("tokenizer.ggml.merges") else {
            throw LoraDistError("\(f.path): no tokenizer.ggml.tokens / tokenizer.ggml.merges")
        }
        return try BPETokenizer(tokens: tokens, merges: merges, tokenTypes: try f.intArray("tokenizer.ggml.token_type"),
                                bos: try f.int("tokenizer.ggml.bos_token_id"), eos: try f.int("tokenizer.ggml.eos_token_id"),
                                pre: try f.string("tokenizer.ggml.pre"))
    }

    /// Puts this source's tokenizer into a model directory, so that the directory reads text as
    /// the source does: its tokenizer.json copied (a Hugging Face directory that has one), or
    /// written from the tokenizer it carries (a GGUF file's, from its tokenizer.ggml.* metadata).
    /// A byte-level source needs none: a directory without tokenizer.json reads bytes. Without
    /// this a merged export of a GGUF base read text as bytes, whose ids fit its vocabulary
    /// silently.
    public func saveTokenizer(to dir: String) throws {
        guard let bpe = tokenizer as? BPETokenizer else { return }
        let json = spec + "/tokenizer.json"
        let data = spec.hasSuffix(".gguf") ? try bpe.tokenizerJSON() : try Data(contentsOf: URL(fileURLWithPath: json))
        try Files.writeAtomically(data, to: dir + "/tokenizer.json")
    }
}
