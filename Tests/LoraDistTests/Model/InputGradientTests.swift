import Foundation
import Testing
@testable import LoraDist

/// The first layer's input gradient is computed only when something reads it (the embedding's
/// gradient or the first input norm's): under LoRA and QLoRA both are frozen, and the backward
/// skips the first q, k, v input product and that norm's backward (LlamaModel.firstLayerInputGradient).
/// Asking for it anyway must change nothing a trainer uses: the same loss and the same bits in
/// every gradient, fused and separate projections, on a grouped-query model with biases.
@Suite struct InputGradientTests {
    static func model(_ f: ReferenceTests.Fixture, _ m: FusedProjectionTests.Mode, fuse: Bool,
                      inputGradient: Bool?) throws -> (LlamaModel, loss: Float, dInput: [Float]) {
        let model = try LlamaModel(config: f.config, lora: try FusedProjectionTests.lora(m), nf4Base: m == .qlora,
                                   maxBatch: f.batch, seqLen: f.seqLen, fuseProjections: fuse)
        try HuggingFace.loadBase(model, from: SafeTensors(path: f.dir + "/model.safetensors"))
        for p in model.store.params where p.name.contains(".lora_") {
            model.store.write(p, owned: model.store.all) {
                var g = SplitMix64(seed: fnv1a(p.name))
                return (0..<p.count).map { _ in 0.2 * (2 * g.uniform() - 1) }
            }
        }
        if let inputGradient { model.firstLayerInputGradient = inputGradient }
        let loss = f.run(model).1
        let n = f.batch * f.seqLen * f.config.hiddenSize
        return (model, loss, Array(UnsafeBufferPointer(start: model.acts.dRes.ptr, count: n)))
    }

    @Test("skipped only where nothing reads it, and skipping it changes no gradient",
          arguments: FusedProjectionTests.Mode.allCases, [true, false])
    func skippedWhereUnread(_ mode: FusedProjectionTests.Mode, _ fuse: Bool) throws {
        let f = try ReferenceTests.Fixture("families/qwen2_bias")
        let (lean, leanLoss, leanInput) = try Self.model(f, mode, fuse: fuse, inputGradient: nil)
        let (reference, referenceLoss, fullInput) = try Self.model(f, mode, fuse: fuse, inputGradient: true)
        #expect(lean.firstLayerInputGradient == (mode == .full))
        #expect(leanLoss == referenceLoss)
        var checked = 0
        for p in lean.store.trainable {
            let a = Array(UnsafeBufferPointer(start: p.grad!, count: p.count))
            let b = Array(UnsafeBufferPointer(start: reference.store[p.name].grad!, count: p.count))
            #expect(a == b, "gradient of \(p.name)")
            checked += 1
        }
        #expect(checked == lean.store.trainable.count && checked > 0)
        // Under LoRA the skipped products leave the residual gradient short of ∂L/∂(embedding output).
        #expect((leanInput == fullInput) == (mode == .full))
        #expect(fullInput.contains { $0 != 0 })
    }
}
