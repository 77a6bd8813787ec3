import Foundation
import Testing
@testable import LoraDist

/// q, k, v and gate, up as one product each (LinearGroup) against the same model with every
/// projection on its own: the same loss and gradients up to summation order, in every mode, on
/// Qwen2 (q, k, v biases; 4 query heads over 2 key/value heads) and Qwen3 (q/k norms). The
/// projections on their own are the path ReferenceTests checked against transformers before
/// fusing; the fused one is what ReferenceTests checks now.
@Suite struct FusedProjectionTests {
    /// max |Δ| / max |separate| of every gradient; |Δ| of the loss. About 4× the worst measured
    /// over these 8 cases (2026-12-02, AMD EPYC, Zen kernel): gradients 5.2e-6 (qwen2_bias, full:
    /// one dx product over q, k, v instead of three summed), loss 4.8e-7 (1 ulp).
    static let tolerance: Float = 2e-5
    static let lossTolerance: Float = 2e-6

    enum Mode: String, CaseIterable { case full, loraAll, loraQV, qlora }

    static func lora(_ m: Mode) throws -> LoRAConfig? {
        switch m {
        case .full: nil
        case .loraAll, .qlora: try LoRAConfig(rank: 4, alpha: 8, targets: ["all-linear"])
        case .loraQV: try LoRAConfig(rank: 4, alpha: 8, targets: ["q_proj", "v_proj"])
        }
    }

    /// The fixture's base, random adapters (B too, so that A gets a gradient), forward and backward.
    static func run(_ f: ReferenceTests.Fixture, _ m: Mode, fuse: Bool) throws -> (model: LlamaModel, loss: Float) {
        let model = try LlamaModel(config: f.config, lora: try lora(m), nf4Base: m == .qlora, maxBatch: f.batch,
                                   seqLen: f.seqLen, fuseProjections: fuse)
        try HuggingFace.loadBase(model, from: SafeTensors(path: f.dir + "/model.safetensors"))
        for p in model.store.params where p.name.contains(".lora_") {
            model.store.write(p, owned: model.store.all) {
                var g = SplitMix64(seed: fnv1a(p.name))
                return (0..<p.count).map { _ in 0.2 * (2 * g.uniform() - 1) }
            }
        }
        return (model, f.run(model).1)
    }

    @Test("fused and separate projections give the same loss and gradients",
          arguments: ["families/qwen2_bias", "families/qwen3_qknorm"], Mode.allCases)
    func fusedEqualsSeparate(_ name: String, _ mode: Mode) throws {
        let f = try ReferenceTests.Fixture(name)
        #expect(f.config.numKeyValueHeads < f.config.numAttentionHeads)
        let (fused, fusedLoss) = try Self.run(f, mode, fuse: true)
        let (separate, separateLoss) = try Self.run(f, mode, fuse: false)
        // The fused products are taken where the store allows them, and only there.
        for l in fused.layers {
            #expect(l.qkv.fusedWeight == (mode != .qlora) && l.gateUp.fusedWeight == (mode != .qlora))
            #expect(l.qkv.fusedA == (mode == .loraAll || mode == .qlora) && l.gateUp.fusedA == (mode == .loraAll || mode == .qlora))
        }
        #expect(separate.layers.allSatisfy { !$0.qkv.fusedWeight && !$0.gateUp.fusedWeight && !$0.qkv.fusedA })
        #expect(abs(fusedLoss - separateLoss) <= Self.lossTolerance, "loss \(fusedLoss) against \(separateLoss)")
        recordFixtureError("fused \(name) \(mode) loss", abs(fusedLoss - separateLoss))
        var worst: Float = 0, checked = 0
        for p in fused.store.trainable {
            let a = Array(UnsafeBufferPointer(start: p.grad!, count: p.count))
            let b = Array(UnsafeBufferPointer(start: separate.store[p.name].grad!, count: p.count))
            #expect(b.contains { $0 != 0 }, "\(p.name) has no gradient to compare")
            let err = relativeError(a, b)
            worst = max(worst, err)
            #expect(err <= Self.tolerance, "gradient of \(p.name): relative error \(err)")
            checked += 1
        }
        #expect(checked == separate.store.trainable.count && checked > 0)
        recordFixtureError("fused \(name) \(mode) gradients", worst)
    }

    @Test("a fused group's weights and A matrices lie one after another; names and shapes stay Hugging Face's")
    func layout() throws {
        let f = try ReferenceTests.Fixture("families/qwen2_bias")
        let specs = try LlamaModel.specs(config: f.config, lora: try Self.lora(.loraAll))
        let names = specs.map(\.name)
        let p = "model.layers.0."
        func at(_ n: String) -> Int { names.firstIndex(of: p + n)! }
        for (group, kind) in [(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ".weight"),
                              (["mlp.gate_proj", "mlp.up_proj"], ".weight"),
                              (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ".lora_A.weight"),
                              (["mlp.gate_proj", "mlp.up_proj"], ".lora_A.weight")] {
            let trainable = specs[at(group[0] + kind)].trainable
            let positions = group.map { at($0 + kind) }
            // adjacent within their arena: nothing of the same arena between them
            for (a, b) in zip(positions, positions.dropFirst()) {
                #expect(!specs[(a + 1)..<b].contains { $0.trainable == trainable }, "\(group) \(kind)")
            }
        }
        #expect(specs[at("self_attn.q_proj.weight")].shape == [f.config.numAttentionHeads * f.config.headDim, f.config.hiddenSize])
        #expect(names.contains(p + "self_attn.q_proj.bias") && Set(names).count == names.count)
    }
}
