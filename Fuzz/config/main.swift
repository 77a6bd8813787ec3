// config.json (HFConfigReader, through ModelConfig.fromHuggingFace as `--model DIR` and a
// checkpoint's manifest read it), then what a run computes from it before any weights:
// the parameter count, the parameter list with and without adapters, and, for a small
// config, the model itself (RoPE tables, activations). The parameter list is built per layer,
// so it is only built for at most `maxLayers` layers (a config may say 16 million: reported,
// not this target's subject).
import Foundation
@testable import LoraDist

let maxLayers = 1024

func fuzzOne(_ data: Data) {
    guard let c = try? ModelConfig.fromHuggingFace(json: data, source: "config.json") else { return }
    _ = c.parameterCount
    _ = c.huggingFaceJSON()
    guard c.numHiddenLayers <= maxLayers else { return }
    _ = try? LlamaModel.specs(config: c, lora: nil)
    _ = try? LlamaModel.specs(config: c, lora: try! LoRAConfig(rank: 2, alpha: 4, targets: LoRAConfig.projections), nf4Base: true)
    if c.parameterCount <= 4 * maxElements {
        _ = try? LlamaModel(config: c, lora: nil, maxBatch: 1, seqLen: min(4, c.maxPositionEmbeddings))
    }
}

func fuzzSeeds() -> [Data] {
    ModelConfig.builtIn.keys.sorted().map { json(ModelConfig.builtIn[$0]!.huggingFaceJSON()) }
}
