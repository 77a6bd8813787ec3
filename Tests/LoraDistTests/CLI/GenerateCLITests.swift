import Foundation
import Testing
@testable import LoraDist

/// `lora-dist generate` end to end: the binary, a checkpoint, bad input, mpirun.
@Suite(.serialized, .tags(.cli)) struct GenerateCLITests {
    static func generate(_ args: [String]) throws -> (Int32, String, String) {
        try runProcess(TestPaths.binary, ["generate"] + args)
    }

    @Test("a built-in model generates the same ids each time; sampling with top-p → 0 is greedy")
    func builtIn() throws {
        let args = ["--model", "tiny", "--prompt", "To be, or not", "--max-new-tokens", "7", "--ids"]
        let (s1, o1, e1) = try Self.generate(args)
        #expect(s1 == 0, "\(e1)")
        let ids = o1.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(!ids.isEmpty && ids.count <= 7 && ids.allSatisfy { (0..<258).contains($0) }, "\(o1)")
        #expect(e1.contains("tokens/s"))
        let (_, o2, _) = try Self.generate(args)
        #expect(o1 == o2)
        let (_, o3, _) = try Self.generate(args + ["--temperature", "1.5", "--top-p", "1e-6", "--seed", "9"])
        #expect(o3 == o1)
    }

    @Test("sampling: the seed decides, the nucleus holds the chosen token")
    func sampling() {
        var logits = [Float](repeating: 0, count: 10)
        logits[3] = 5; logits[7] = 4.5
        var a = SplitMix64(seed: 1), b = SplitMix64(seed: 1)
        let s = Generator.Sampling(temperature: 1, topP: 0.9, seed: 1)
        let drawsA = (0..<50).map { _ in Generator.choose(logits, s, &a) }
        let drawsB = (0..<50).map { _ in Generator.choose(logits, s, &b) }
        #expect(drawsA == drawsB)
        #expect(Set(drawsA).isSubset(of: [3, 7]) && Set(drawsA).count == 2)  // 0.9 of the mass is in 3 and 7
        var g = SplitMix64(seed: 2)
        #expect(Generator.choose(logits, .init(), &g) == 3)
    }

    @Test("a checkpoint generates what its model computes in this process")
    func checkpoint() throws {
        let tmp = TestPaths.tempDir("generate")
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let data = try writeCorpus("generate") { "line \($0): the quick brown fox jumps over the lazy dog." }
        let (st, _, err) = try runProcess(TestPaths.binary, [
            "train", "--model", "tiny", "--data", data, "--steps", "3", "--batch", "2", "--seq", "32",
            "--run-dir", tmp + "/run", "--quiet", "--eval-every", "0"])
        try #require(st == 0, "\(err)")
        let (s, out, e) = try Self.generate(["--checkpoint", tmp + "/run/checkpoints/latest", "--prompt", "the quick",
                                             "--max-new-tokens", "6", "--ids"])
        try #require(s == 0, "\(e)")
        let loaded = try CheckpointModel.load(tmp + "/run", model: nil, needsBase: true, maxBatch: 1, seqLen: 16)
        let tok = ByteTokenizer()
        let want = Generator(model: loaded.model).generate(prompt: [tok.bos] + tok.encode("the quick"), maxNewTokens: 6, stop: tok.eos)
        #expect(out.trimmingCharacters(in: .whitespacesAndNewlines) == want.map(String.init).joined(separator: " "))
    }

    @Test("bad input: one line naming the problem, non-zero exit", arguments: [
        (["--model", "tiny", "--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["--model", "tiny", "--prompt", "x", "--temperature", "-1"], "--temperature"),
        (["--model", "tiny", "--prompt", "x", "--top-p", "0"], "--top-p"),
        (["--model", "tiny", "--prompt", "x", "--checkpoint", "a", "--adapter", "b"], "not both"),
        (["--prompt", "x"], "--model or --checkpoint"),
        (["--model", "tiny", "--prompt", "x", "--max-new-tokens", "600"], "max_position_embeddings"),
        (["--model", "tiny", "--prompt", "x", "--adapter", "/nonexistent"], "adapter_config.json"),
    ])
    func badInput(_ args: [String], _ names: String) throws {
        let (s, out, err) = try Self.generate(args)
        #expect(s != 0)
        #expect(out.isEmpty, "\(out)")
        let lines = err.split(separator: "\n")
        #expect(lines.count == 1 && err.contains(names), "\(err)")
    }

    @Test("under mpirun every rank checks the input and rank 0 alone prints")
    func mpirun() throws {
        let (s, out, err) = try runProcess("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2", TestPaths.binary,
                                                            "generate", "--model", "tiny", "--prompt", "hello", "--max-new-tokens", "4", "--ids"])
        #expect(s == 0, "\(err)")
        #expect(out.split(separator: "\n").count == 1, "\(out)")
        let (bad, _, badErr) = try runProcess("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2", TestPaths.binary,
                                                              "generate", "--model", "tiny", "--prompt", "x", "--top-p", "2"])
        #expect(bad != 0)
        #expect(badErr.contains("--top-p"))
    }
}
