import Foundation
import Testing
@testable import LoraDist

/// Selective recompute (LlamaModel.recompute) against the model that keeps every layer's
/// activations, one forward and backward on the family fixtures: the recomputed forward skips
/// attention, the down projection and the adapters' A products and dropout masks, and reads what
/// the forward kept instead, so the gradients must be the same bit for bit. Covers what the
/// trainer's tests (tiny Llama) do not: q, k, v biases (Qwen2), q/k norms (Qwen3), a sliding
/// window (Mistral), and adapters with dropout, whose A products are not fused.
@Suite struct RecomputeTests {
    enum Mode: String, CaseIterable { case full, loraFused, loraDropout, qlora }

    static func run(_ f: ReferenceTests.Fixture, _ m: Mode, recompute: Bool) throws -> LlamaModel {
        let lora: LoRAConfig? = switch m {
        case .full: nil
        case .loraFused, .qlora: try LoRAConfig(rank: 4, alpha: 8, targets: ["all-linear"])
        case .loraDropout: try LoRAConfig(rank: 4, alpha: 8, dropout: 0.25, targets: ["all-linear"])
        }
        let model = try LlamaModel(config: f.config, lora: lora, nf4Base: m == .qlora, maxBatch: f.batch,
                                   seqLen: f.seqLen, recompute: recompute)
        try HuggingFace.loadBase(model, from: SafeTensors(path: f.dir + "/model.safetensors"))
        for p in model.store.params where p.name.contains(".lora_") {
            model.store.write(p, owned: model.store.all) {
                var g = SplitMix64(seed: fnv1a(p.name))
                return (0..<p.count).map { _ in 0.2 * (2 * g.uniform() - 1) }
            }
        }
        let seeds = (0..<f.batch).map { UInt64(1000 + $0) }
        let ids = f.ids, targets = f.targets
        ids.withUnsafeBufferPointer { idp in
            targets.withUnsafeBufferPointer { tp in
                seeds.withUnsafeBufferPointer { sp in
                    model.forward(ids: idp.baseAddress!, batch: f.batch, dropoutSeeds: sp.baseAddress!)
                    let l = model.loss(targets: tp.baseAddress!, batch: f.batch)
                    model.store.grads.zero()
                    model.backward(ids: idp.baseAddress!, targets: tp.baseAddress!, batch: f.batch, scale: 1 / Float(l.count))
                }
            }
        }
        return model
    }

    @Test("selective recompute gives every gradient bit for bit",
          arguments: ["families/qwen2_bias", "families/qwen3_qknorm", "families/mistral_window"], Mode.allCases)
    func sameGradients(_ name: String, _ mode: Mode) throws {
        let f = try ReferenceTests.Fixture(name)
        try #require(f.config.numHiddenLayers > 1)  // else nothing is recomputed
        let kept = try Self.run(f, mode, recompute: false)
        let again = try Self.run(f, mode, recompute: true)
        #expect(again.recompute && again.layers[0].saved === again.layers[1].saved)
        #expect(again.layers[0].attOut !== again.layers[1].attOut)
        if mode == .loraDropout { #expect(!again.layers[0].qkv.fusedA) }
        var checked = 0
        for p in kept.store.trainable {
            let a = Array(UnsafeBufferPointer(start: p.grad!, count: p.count))
            let b = Array(UnsafeBufferPointer(start: again.store[p.name].grad!, count: p.count))
            #expect(a.contains { $0 != 0 }, "\(p.name) has no gradient to compare")
            #expect(a == b, "gradient of \(p.name) differs")
            checked += 1
        }
        #expect(checked == kept.store.trainable.count && checked > 0)
    }
}
