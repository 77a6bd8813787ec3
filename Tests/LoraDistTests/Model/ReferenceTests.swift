import Foundation
import Testing
@testable import LoraDist

/// The whole model against PyTorch + transformers + peft on the same weights and
/// batch (fixtures from tools/make_fixtures.py and make_family_fixtures.py, made on an Intel
/// Xeon). fp32 on both sides; the differences come from summation order, which OpenBLAS's
/// sgemm kernel (chosen by CPU) and thread count change.
///
/// Tolerances: max |Δ| / max |ref| for logits and for every gradient, |Δ| for the loss; each
/// 4-5× the worst over all fixtures measured by
/// tools/measure-tolerances.sh (2026-12-02, on an AVX-512 AMD EPYC: every OpenBLAS kernel
/// it runs, OPENBLAS_CORETYPE Prescott, Core2, Penryn, Nehalem, Atom, Barcelona, Sandybridge,
/// Haswell, Zen, SkylakeX and Cooperlake, each at 1 and 2 threads, with OPENBLAS_L2_SIZE
/// unset and 512, which made no difference):
/// logits 2.0e-6, gradients 6.6e-6, loss 9.5e-7 (2 ulps), all three on mistral_window under
/// LoRA with the Haswell/Zen kernel.
@Suite struct ReferenceTests {
    static let tolerance: Float = 1e-5           // logits; measured worst 2.0e-6
    static let gradientTolerance: Float = 3e-5   // measured worst 6.6e-6
    static let lossTolerance: Float = 4e-6       // measured worst 9.5e-7

    struct Fixture {
        let dir: String
        let config: ModelConfig
        let reference: SafeTensors
        let ids: [Int32]
        let batch: Int, seqLen: Int

        init(_ name: String) throws {
            dir = TestPaths.fixtures + "/" + name
            config = try ModelConfig.load(dir)
            reference = try SafeTensors(path: dir + "/reference.safetensors")
            let e = try reference.entry("input_ids")
            batch = e.shape[0]
            seqLen = e.shape[1]
            ids = try reference.ints("input_ids").map { Int32($0) }
        }

        /// Hugging Face shifts labels inside the model: position t predicts ids[t+1], the last predicts nothing.
        var targets: [Int32] {
            (0..<(batch * seqLen)).map { i in i % seqLen == seqLen - 1 ? -1 : ids[i + 1] }
        }

        /// Builds the model, loads the weights, runs forward + backward; returns (logits, mean loss).
        func run(_ model: LlamaModel) -> ([Float], Float) {
            let tg = targets
            var logits: [Float] = []
            var loss: Float = 0
            ids.withUnsafeBufferPointer { idp in
                tg.withUnsafeBufferPointer { tp in
                    let out = model.forward(ids: idp.baseAddress!, batch: batch)
                    logits = Array(UnsafeBufferPointer(start: out, count: batch * seqLen * config.vocabSize))
                    let l = model.loss(targets: tp.baseAddress!, batch: batch)
                    loss = Float(l.sum / Double(l.count))
                    model.store.grads.zero()
                    model.backward(ids: idp.baseAddress!, targets: tp.baseAddress!, batch: batch,
                                   scale: 1 / Float(l.count))
                }
            }
            return (logits, loss)
        }
    }

    @Test("full fine-tuning matches transformers: logits, loss, every weight gradient",
          arguments: ["llama_untied", "llama_tied"] + FamilyTests.fixtures)
    func fullFineTuning(name: String) throws {
        let f = try Fixture(name)
        let model = try LlamaModel(config: f.config, lora: nil, maxBatch: f.batch, seqLen: f.seqLen)
        try HuggingFace.loadBase(model, from: SafeTensors(path: f.dir + "/model.safetensors"))
        let (logits, loss) = f.run(model)
        let logitsErr = relativeError(logits, try f.reference.floats("full.logits"))
        let lossErr = abs(loss - (try f.reference.floats("full.loss"))[0])
        recordFixtureError("reference full \(name) logits", logitsErr)
        recordFixtureError("reference full \(name) loss", lossErr)
        #expect(logitsErr < Self.tolerance, "logits: relative error \(logitsErr)")
        #expect(lossErr < Self.lossTolerance, "loss: |Δ| \(lossErr)")
        var checked = 0, worst: Float = 0
        for p in model.store.params {
            let ref = try f.reference.floats("full.grad." + p.name)
            let grad = Array(UnsafeBufferPointer(start: p.grad!, count: p.count))
            let err = relativeError(grad, ref)
            worst = max(worst, err)
            #expect(err < Self.gradientTolerance, "gradient of \(p.name): relative error \(err)")
            checked += 1
        }
        recordFixtureError("reference full \(name) gradients", worst)
        // every fixture gradient has a parameter here, and the other way round
        let fixtureGrads = f.reference.names.filter { $0.hasPrefix("full.grad.") }.count
        #expect(checked == fixtureGrads)
        #expect(model.trainableParams == model.totalParams)
    }

    @Test("LoRA matches peft: logits, loss, every adapter gradient; the base gets none",
          arguments: ["llama_untied", "llama_tied"] + FamilyTests.fixtures)
    func lora(name: String) throws {
        let f = try Fixture(name)
        let cfgData = try Data(contentsOf: URL(fileURLWithPath: f.dir + "/adapter/adapter_config.json"))
        let lora = try LoRAConfig.fromPEFT(json: cfgData)
        #expect(lora.scale == (try f.reference.floats("lora.scaling"))[0])
        let model = try LlamaModel(config: f.config, lora: lora, maxBatch: f.batch, seqLen: f.seqLen)
        try HuggingFace.loadBase(model, from: SafeTensors(path: f.dir + "/model.safetensors"))
        try HuggingFace.loadAdapter(model, from: SafeTensors(path: f.dir + "/adapter/adapter_model.safetensors"))
        let (logits, loss) = f.run(model)
        let logitsErr = relativeError(logits, try f.reference.floats("lora.logits"))
        let lossErr = abs(loss - (try f.reference.floats("lora.loss"))[0])
        recordFixtureError("reference lora \(name) logits", logitsErr)
        recordFixtureError("reference lora \(name) loss", lossErr)
        #expect(logitsErr < Self.tolerance, "logits: relative error \(logitsErr)")
        #expect(lossErr < Self.lossTolerance, "loss: |Δ| \(lossErr)")
        let refNames = f.reference.names.filter { $0.hasPrefix("lora.grad.") }
        #expect(model.store.trainable.count == refNames.count)
        var worst: Float = 0
        for p in model.store.params {
            if p.name.contains(".lora_") {
                let ref = try f.reference.floats("lora.grad." + HuggingFace.peftPrefix + p.name)
                let err = relativeError(Array(UnsafeBufferPointer(start: p.grad!, count: p.count)), ref)
                worst = max(worst, err)
                #expect(err < Self.gradientTolerance, "gradient of \(p.name): relative error \(err)")
            } else {
                #expect(p.grad == nil, "\(p.name) is frozen under LoRA and must have no gradient")
            }
        }
        recordFixtureError("reference lora \(name) gradients", worst)
    }

    @Test("fusing the adapter into plain weights gives the LoRA logits")
    func fuse() throws {
        let f = try Fixture("llama_untied")
        let lora = try LoRAConfig.fromPEFT(json: Data(contentsOf: URL(fileURLWithPath: f.dir + "/adapter/adapter_config.json")))
        let adapted = try LlamaModel(config: f.config, lora: lora, maxBatch: f.batch, seqLen: f.seqLen)
        try HuggingFace.loadBase(adapted, from: SafeTensors(path: f.dir + "/model.safetensors"))
        try HuggingFace.loadAdapter(adapted, from: SafeTensors(path: f.dir + "/adapter/adapter_model.safetensors"))
        let plain = try LlamaModel(config: f.config, lora: nil, maxBatch: f.batch, seqLen: f.seqLen)
        try HuggingFace.loadBase(plain, from: SafeTensors(path: f.dir + "/model.safetensors"))
        for lin in adapted.linears where lin.loraA != nil {
            let w = lin.fused()
            w.withUnsafeBufferPointer { plain.store[lin.name + ".weight"].value.update(from: $0.baseAddress!, count: w.count) }
        }
        let (logits, _) = f.run(plain)
        let err = relativeError(logits, try f.reference.floats("lora.logits"))
        recordFixtureError("reference fuse llama_untied logits", err)
        #expect(err < Self.tolerance, "logits: relative error \(err)")
    }
}
