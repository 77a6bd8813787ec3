// A PEFT adapter_config.json (LoRAConfig.fromPEFT, as `train --adapter`, `generate --adapter`
// and a checkpoint's manifest read it), then the adapter parameter list over a small base.
import Foundation
@testable import LoraDist

func fuzzOne(_ data: Data) {
    guard let l = try? LoRAConfig.fromPEFT(json: data) else { return }
    _ = l.peftConfig(baseModel: "base")
    _ = try? LlamaModel.specs(config: ModelConfig.builtIn["tiny"]!, lora: l)
    _ = try? LlamaModel.specs(config: ModelConfig.builtIn["tiny"]!, lora: l, nf4Base: true)
}

func fuzzSeeds() -> [Data] {
    [json(try! LoRAConfig().peftConfig(baseModel: "tiny")),
     json(try! LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targets: LoRAConfig.projections, useRSLoRA: true).peftConfig(baseModel: "x"))]
}
