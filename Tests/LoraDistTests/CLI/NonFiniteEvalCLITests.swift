import Foundation
import Testing
@testable import LoraDist

/// `eval` of weights holding NaN or ∞ is an error naming the first bad tensor (issue 16), never
/// "perplexity nan": a checkpoint's (its slices are checked as they are read) and a model
/// directory's (its tensors are checked as they are loaded).
@Suite(.tags(.cli), .serialized) struct NonFiniteEvalCLITests {
    static func corpus() throws -> String {
        try writeCorpus("nonfinite-eval") { "line \($0): the quick brown fox jumps over the lazy dog \($0 * 7 % 13)" } + "/c.txt"
    }

    /// Replaces element `element` of the param slice of `name` that holds it with `value`: the
    /// slice is re-encoded at the end of its shard file and the manifest points at it, with
    /// fresh checksums, so only the value is wrong (as in a checkpoint saved by a program that
    /// did not stop a diverged step).
    static func poison(_ dir: String, _ name: String, element: Int, with value: Float) throws {
        var m = try CheckpointFiles.readManifest(dir)
        let i = try #require(m.slices.firstIndex { $0.name == name && $0.kind == "param" && ($0.start..<$0.start + $0.count).contains(element) })
        var ref = m.slices[i]
        var rec = try CheckpointFiles.Reader(dir: dir).read(ref)
        rec.values[element - rec.start] = value
        let bytes = rec.encoded()
        let h = try #require(FileHandle(forWritingAtPath: dir + "/" + ref.file))
        ref.offset = Int(try h.seekToEnd())
        try h.write(contentsOf: bytes)
        try h.close()
        ref.length = bytes.count
        ref.crc32c = rec.values.withUnsafeBytes { CRC32C.checksum($0) }   // the payload's, as the writer does
        m.slices[i] = ref
        try m.encoded().write(to: URL(fileURLWithPath: dir + "/" + CheckpointFiles.manifestName))
    }

    @Test("eval of a checkpoint holding NaN or infinity names the first bad tensor and element", arguments: [Float.nan, -.infinity])
    func checkpoint(_ bad: Float) throws {
        let data = try Self.corpus()
        let run = TestPaths.tempDir("nonfinite-ckpt")
        defer { try? FileManager.default.removeItem(atPath: run) }
        let (trained, _, terr) = try runProcess(TestPaths.binary, ["train", "--model", "tiny", "--mode", "full", "--data", data, "--steps", "2",
                                                                 "--batch", "2", "--seq", "16", "--save-every", "2", "--quiet", "--run-dir", run])
        try #require(trained == 0, "\(terr)")
        let step = try CheckpointInspector.locate(run)
        let eval = ["eval", "--model", "tiny", "--checkpoint", run, "--data", data, "--seq", "16", "--windows", "4"]
        let (ok, out, okErr) = try runProcess(TestPaths.binary, eval)
        try #require(ok == 0 && out.contains("perplexity"), "\(okErr)")
        // Two bad tensors: the first in the order the parameter store holds them (the backward
        // order of LlamaModel.specs: lm_head, the final norm, the last layer first) is named.
        try Self.poison(step, "model.layers.1.mlp.up_proj.weight", element: 37, with: bad)
        try Self.poison(step, "model.norm.weight", element: 5, with: bad)
        let order = try LlamaModel.specs(config: ModelConfig.builtIn["tiny"]!, lora: nil).map(\.name)
        try #require(order.firstIndex(of: "model.norm.weight")! < order.firstIndex(of: "model.layers.1.mlp.up_proj.weight")!)
        let (status, out2, err) = try runProcess(TestPaths.binary, eval)
        #expect(status != 0)
        #expect(!out2.contains("perplexity"), "\(out2)")
        let lines = err.split(separator: "\n").filter { $0.contains("lora-dist: error:") }
        #expect(lines.count == 1, "\(err)")
        #expect(lines.first?.contains("tensor 'model.norm.weight' (param) holds a non-finite value (NaN or infinity) at element 5") == true,
                "\(err)")
        // inspect, which verifies what resume relies on, reports it too
        let problems = try CheckpointInspector.inspect(step).problems
        #expect(problems.contains { $0.contains("'model.layers.1.mlp.up_proj.weight' (param) holds a non-finite value") }, "\(problems)")
        #expect(problems.contains { $0.contains("'model.norm.weight' (param) holds a non-finite value") }, "\(problems)")
    }

    @Test("eval of a model directory holding infinity names the tensor and element")
    func modelDirectory() throws {
        let data = try Self.corpus()
        let dir = TestPaths.tempDir("nonfinite-model")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = ModelConfig.builtIn["tiny"]!
        var tensors = try LlamaModel.specs(config: config, lora: nil).map {
            (name: $0.name, shape: $0.shape, values: [Float](repeating: $0.name.hasSuffix("norm.weight") ? 1 : 0.01, count: $0.count))
        }
        try Files.writeAtomically(try JSONCoding.object(config.huggingFaceJSON()), to: dir + "/config.json")
        try SafeTensors.write(tensors, to: dir + "/model.safetensors")
        let eval = ["eval", "--model", dir, "--data", data, "--seq", "16", "--windows", "4"]
        let (ok, out, okErr) = try runProcess(TestPaths.binary, eval)
        try #require(ok == 0 && out.contains("perplexity"), "\(okErr)")
        let i = try #require(tensors.firstIndex { $0.name == "model.layers.0.self_attn.o_proj.weight" })
        tensors[i].values[9] = .infinity
        try SafeTensors.write(tensors, to: dir + "/model.safetensors")
        let (status, out2, err) = try runProcess(TestPaths.binary, eval)
        #expect(status != 0)
        #expect(!out2.contains("perplexity"), "\(out2)")
        let lines = err.split(separator: "\n").filter { $0.contains("lora-dist: error:") }
        #expect(lines.count == 1, "\(err)")
        #expect(lines.first?.contains("tensor 'model.layers.0.self_attn.o_proj.weight' holds a non-finite value (NaN or infinity) at element 9") == true,
                "\(err)")
    }
}
