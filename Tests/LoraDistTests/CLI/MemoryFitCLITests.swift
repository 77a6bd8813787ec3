import Foundation
import Testing
@testable import LoraDist

/// A batch or sequence length the node cannot hold is refused before anything is allocated
/// (MemoryNeed against NodeMemory.availableBytes): one line with what it needs and what the
/// node has, every rank non-zero, no run directory; a run that fits is not.
@Suite(.serialized, .tags(.cli)) struct MemoryFitCLITests {
    static func lines(_ err: String) -> [Substring] { err.split(separator: "\n").filter { $0.contains("lora-dist: error:") } }

    @Test("train: a batch that needs more than the node's memory is refused quickly, on every rank")
    func trainRefused() throws {
        let data = try MultiRankCLITests.corpus()
        let dir = TestPaths.tempDir("fit-train")
        let start = Date()
        // tiny at 500,000 sequences of 64 tokens per rank: some 230 GB of activations and logits per rank
        let (status, out, err) = try MultiRankCLITests.launch(2, ["train", "--model", "tiny", "--data", data, "--batch", "1000000",
                                                                 "--seq", "64", "--steps", "2", "--quiet", "--run-dir", dir + "/run"])
        let seconds = Date().timeIntervalSince(start)
        #expect(status != 0)
        #expect(Self.lines(err).count == 1, "\(err)")
        let line = String(Self.lines(err).first ?? "")
        #expect(line.contains("this job needs ") && line.contains(" per node, the node has ") && line.contains(" available"), "\(line)")
        #expect(line.contains("× 2 ranks"), "\(line)")
        #expect(out.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir + "/run"))
        #expect(seconds < 30, "refused after \(seconds) s")
    }

    @Test("eval: a batch × sequence that does not fit is refused; a run that fits is not")
    func evalRefusedAndTrainFits() throws {
        let data = try MultiRankCLITests.corpus()
        let (status, _, err) = try runProcess(TestPaths.binary, ["eval", "--model", "tiny", "--data", data + "/c.txt", "--batch", "100000",
                                                                 "--seq", "512", "--windows", "1"])
        #expect(status != 0)
        #expect(Self.lines(err).count == 1 && Self.lines(err).first?.contains("the node has") == true, "\(err)")
        let dir = TestPaths.tempDir("fit-ok")
        let (ok, _, okErr) = try runProcess(TestPaths.binary, ["train", "--model", "tiny", "--data", data, "--batch", "4", "--seq", "32",
                                                               "--steps", "2", "--quiet", "--run-dir", dir + "/run"])
        #expect(ok == 0, "\(okErr)")
    }
}
