// GGUF: the file, its config (GGUFImport.config), its tokenizer (tokenizer.ggml.*), the check of
// the base tensors against the config, and the weights dequantized into a model, as
// `--model file.gguf` does (ModelSource + LoadedModel); every tensor of a small file is
// also dequantized on its own, whatever the config says. The bytes are held in an exactly
// sized buffer so the address sanitizer sees any read past the end.
import Foundation
@testable import LoraDist

func fuzzOne(_ data: Data) {
    guard let f = try? GGUFFile(data: data, path: "model.gguf") else { return }
    for name in f.tensorNames {
        guard let t = try? f.tensor(name), t.count <= maxElements else { continue }
        _ = try? f.floats(name)
        if t.count > 64 {
            var part = [Float](repeating: 0, count: 40)
            part.withUnsafeMutableBufferPointer { try? f.dequantize(t, elements: 17..<57, into: $0.baseAddress!) }
        }
    }
    _ = f.metadata.values.map(\.description)
    guard let config = try? GGUFImport.config(f) else { return }
    if let tok = try? ModelSource.tokenizer(gguf: f) {
        let ids = tok.encode("Hello world, 123 héllo\n")
        _ = tok.decode(ids)
    }
    guard config.numHiddenLayers <= 1024, let specs = try? LlamaModel.specs(config: config, lora: nil), (try? GGUFImport.checkBase(specs, in: f)) != nil,
          config.parameterCount <= 4 * maxElements,
          let model = try? LlamaModel(config: config, lora: nil, maxBatch: 1, seqLen: 1) else { return }
    try? GGUFImport.loadBase(model, from: f, owned: model.store.all)
}

func fuzzSeeds() -> [Data] { [] }
