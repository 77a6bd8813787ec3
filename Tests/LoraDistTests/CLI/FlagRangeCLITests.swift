import Foundation
import Testing
@testable import LoraDist

/// Every numeric flag has a range; NaN, infinity and values outside it are refused in one
/// line naming the flag, on every rank, before a run directory is made.
@Suite(.serialized) struct FlagRangeCLITests {
    static let cases: [([String], String)] = [
        (["--batch", "100000000"], "--batch"), (["--bucket-mb", "inf"], "--bucket-mb"), (["--bucket-mb", "1e30"], "--bucket-mb"),
        (["--weight-decay", "nan"], "--weight-decay"), (["--min-lr-ratio=-1"], "--min-lr-ratio"), (["--clip=-1"], "--clip"),
        (["--lr", "nan"], "--lr"), (["--lr", "1e30"], "--lr"), (["--alpha", "0"], "alpha"), (["--alpha", "nan"], "alpha"),
        (["--warmup=-1"], "--warmup"), (["--seq", "0"], "--seq"), (["--micro-batch", "9"], "--micro-batch"),
        (["--keep-last", "0"], "--keep-last"), (["--steps", "0"], "--steps"), (["--dropout", "1"], "dropout"),
        (["--powersgd-rank", "0"], "--powersgd-rank"), (["--powersgd-start-step", "0"], "--powersgd-start-step"),
    ]

    @Test("train refuses an out-of-range flag value in one line, creating nothing", arguments: cases.indices)
    func train(_ i: Int) throws {
        let (args, flag) = Self.cases[i]
        let data = try writeCorpus("flags") { "line \($0) of a small corpus" }
        let run = TestPaths.tempDir("flags") + "/run"
        let (status, out, err) = try runProcess(TestPaths.binary, ["train", "--model", "tiny", "--data", data, "--steps", "2",
                                                                   "--batch", "8", "--run-dir", run] + args)
        #expect(status != 0)
        #expect(out.isEmpty, "\(out)")
        let lines = err.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains(flag), "\(args): \(err)")
        #expect(!FileManager.default.fileExists(atPath: run), "\(args) left \(run)")
    }

    @Test("eval: --windows must be positive and no more than the text holds")
    func evalWindows() throws {
        let data = try writeCorpus("flags-eval") { "line \($0) of a small corpus" }
        for (w, says) in [("-5", "--windows must be in"), ("0", "--windows must be in"), ("1000000", "holds only")] {
            let (status, _, err) = try runProcess(TestPaths.binary, ["eval", "--model", "tiny", "--data", data, "--windows=\(w)"])
            #expect(status != 0 && err.contains(says), "\(w): \(err)")
        }
    }
}
