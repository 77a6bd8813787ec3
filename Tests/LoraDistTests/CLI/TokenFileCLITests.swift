import Foundation
import Testing
@testable import LoraDist

/// The token file under mpirun: a node's ranks build it together, each tokenising its share,
/// into the file one process would have written; the next run maps it instead.
@Suite(.serialized, .tags(.cli)) struct TokenFileCLITests {
    static func train(_ ranks: Int, data: String, folder: String) throws -> (Int32, String, String) {
        var env = cleanEnvironment()
        env["LORA_DIST_TOKENS"] = folder
        let run = TestPaths.tempDir("tokfile-run") + "/run"
        return try runProcess(MultiRankCLITests.mpirun, ["--allow-run-as-root", "--oversubscribe", "-n", "\(ranks)", TestPaths.binary,
                                                         "train", "--model", "tiny", "--data", data, "--steps", "1", "--batch", "4",
                                                         "--seq", "24", "--eval-seqs", "2", "--quiet", "--run-dir", run], env: env)
    }

    @Test("4 ranks build the file one process would: same ids, reused by the next run")
    func fourRanksBuildOneFile() throws {
        let data = try TokenFileTests.corpus(), folder = TestPaths.tempDir("tokens-cli")
        let (s1, _, e1) = try Self.train(4, data: data, folder: folder)
        try #require(s1 == 0, "\(e1)")
        #expect(e1.contains("(token file built: \(folder)/"), "\(e1)")
        let (s2, _, e2) = try Self.train(3, data: data, folder: folder)
        try #require(s2 == 0, "\(e2)")
        #expect(e2.contains("(token file reused: \(folder)/"), "\(e2)")
        // One process accepts the 4-rank file as its own (checksums, header) and reads Corpus's ids from it.
        let f = try TokenFile.open(path: data, tokenizer: ByteTokenizer(), devPercent: 5, reading: CorpusReading(), folder: folder)
        let c = try Corpus(path: data, tokenizer: ByteTokenizer(), devPercent: 5)
        #expect(f.reused && Array(f.train) == c.train && Array(f.dev) == c.dev)
        #expect((try FileManager.default.contentsOfDirectory(atPath: folder)).count == 1)
    }

    @Test("a record that cannot be read: one line naming it, every rank exits non-zero, no file left")
    func badRecordOnOneRank() throws {
        let data = try TokenFileTests.corpus(), folder = TestPaths.tempDir("tokens-cli")
        // A bad record near the end: the last rank's share.
        var lines = (0..<400).map { "{\"text\": \"record \($0)\"}" }
        lines[390] = "{\"text\": 390}"
        try lines.joined(separator: "\n").write(toFile: data + "/r.jsonl", atomically: true, encoding: .utf8)
        let (status, _, err) = try Self.train(4, data: data, folder: folder)
        #expect(status != 0)
        let errors = err.split(separator: "\n").filter { $0.contains("error") }
        #expect(errors.count == 1 && errors.first?.contains("r.jsonl:391: ") == true, "\(err)")
        #expect((try FileManager.default.contentsOfDirectory(atPath: folder)).isEmpty)
    }

    /// bench step's corpus has one path on every rank and in every run of a size: 2 ranks share
    /// one token file, and the next run reuses it (no file per run piles up in the cache).
    @Test("bench step on 2 ranks: one token file, reused by the next run")
    func benchStepSharesOneFile() throws {
        let folder = TestPaths.tempDir("tokens-bench")
        var env = cleanEnvironment()
        env["LORA_DIST_TOKENS"] = folder
        env["LORA_DIST_CALIBRATION"] = folder + "/cal.json"
        for _ in 0..<2 {
            let (status, _, err) = try runProcess(MultiRankCLITests.mpirun, ["--allow-run-as-root", "--oversubscribe", "-n", "2",
                                                                             TestPaths.binary, "bench", "step", "--model", "tiny", "--steps", "1",
                                                                             "--batch", "2", "--seq", "16"], env: env)
            try #require(status == 0, "\(err)")
        }
        #expect((try FileManager.default.contentsOfDirectory(atPath: folder)).filter { $0.hasSuffix(".tokens") }.count == 1)
    }
}
