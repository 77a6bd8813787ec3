import Foundation

/// Where a model comes from, as `--model` names it: a built-in config (random
/// initialisation), a Hugging Face config.json (random initialisation), a
/// Hugging Face model directory (config.json, safetensors weights, tokenizer.json
/// when present), or a GGUF file (config, weights and tokenizer in one file).
public final class ModelSource {
    public enum Weights {
        case none
        case huggingFace(HuggingFace.Weights)
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
            throw LoraDistError("GGUF import is not wired in yet")  // GGUF-WIRING
        } else if isDir.boolValue {
            config = try ModelConfig.load(spec)
            let hasWeights = fm.fileExists(atPath: spec + "/model.safetensors")
                || fm.fileExists(atPath: spec + "/model.safetensors.index.json")
            weights = hasWeights ? .huggingFace(try HuggingFace.Weights(modelDir: spec)) : .none
            tokenizer = ByteTokenizer()  // TOKENIZER-WIRING
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
        }
    }

    /// Fills the `owned` arena ranges of the base weights from the files.
    public func loadBase(_ model: LlamaModel, owned: [Range<Int>]) throws {
        switch weights {
        case .none: return
        case .huggingFace(let w): try HuggingFace.loadBase(model, from: w, owned: owned)
        }
    }
}
