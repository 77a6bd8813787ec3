import Foundation
import Testing
@testable import LoraDist

/// Every run directory's TensorBoard event file, read back by the `tensorboard` package's own
/// EventAccumulator (tools/read_events.py), holds every scalar of metrics.jsonl at its step:
/// on one rank across a stop and a resume from an earlier checkpoint, and on two ranks.
@Suite(.serialized, .tags(.cli)) struct TensorBoardCLITests {
    /// tools/read_events.py RUN → (event file names, tag → step → value).
    static func read(_ run: String) throws -> ([String], [String: [Int: Float]]) {
        let (status, out, err) = try runProcess("/usr/bin/env", ["python3", TestPaths.repo + "/tools/read_events.py", run])
        try #require(status == 0, "read_events.py exited \(status) (pip install -r tools/requirements-test.txt?): \(err)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        let files = try #require(json["files"] as? [String])
        let scalars = try #require(json["scalars"] as? [String: [[Double]]])
        var byTag: [String: [Int: Float]] = [:]
        for (tag, points) in scalars {
            var steps: [Int: Float] = [:]
            for p in points {
                #expect(steps[Int(p[0])] == nil, "\(tag): step \(Int(p[0])) twice")
                steps[Int(p[0])] = Float(p[1])
            }
            byTag[tag] = steps
        }
        return (files, byTag)
    }

    /// Every scalar of every metrics.jsonl line is in the event file at its step as the float
    /// TensorBoard stores (Float32), and the file holds nothing else.
    static func check(_ run: String) throws {
        let (files, events) = try read(run)
        #expect(files.count == 1 && files[0].hasPrefix("events.out.tfevents."), "\(files)")
        let lines = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let records = try lines.map { try JSONDecoder().decode(MetricsRecord.self, from: Data($0.utf8)) }
        try #require(!records.isEmpty)
        #expect(Set(events.keys) == Set(EventFile.scalars.map(\.tag)), "\(events.keys.sorted())")
        for s in EventFile.scalars {
            var expected: [Int: Float] = [:]
            for r in records { if let v = s.value(r) { expected[r.step] = Float(v) } }
            #expect(events[s.tag] == expected, "\(s.tag) (metrics.jsonl \(s.field.stringValue)): \(events[s.tag] ?? [:]) vs \(expected)")
        }
    }

    @Test("one rank: the event file matches metrics.jsonl, also after a stop and a resume from an earlier checkpoint")
    func resumed() throws {
        let data = try MultiRankCLITests.corpus()
        let run = TestPaths.tempDir("tb") + "/run"
        let args = ["train", "--model", "tiny", "--data", data, "--steps", "6", "--batch", "4", "--seq", "24", "--lr", "5e-3",
                    "--rank", "4", "--warmup", "1", "--eval-every", "2", "--eval-seqs", "4", "--quiet", "--save-every", "2",
                    "--run-dir", run]
        var (status, _, err) = try runProcess(TestPaths.binary, args + ["--stop-after", "3"])
        try #require(status == 75, "the stopped run exited \(status): \(err)")
        try Self.check(run)
        // Resume from step 2: step 3, logged before the stop, is done again and must appear once.
        (status, _, err) = try runProcess(TestPaths.binary, args + ["--resume", "2"])
        try #require(status == 0, "the resumed run exited \(status): \(err)")
        try Self.check(run)
        let (_, events) = try Self.read(run)
        #expect(events["loss/train"].map { Set($0.keys) } == Set(1...6))
        #expect(events["loss/dev"].map { Set($0.keys) } == [2, 4, 6])
    }

    @Test("two ranks: the exchange's bytes and seconds are there too")
    func twoRanks() throws {
        let data = try MultiRankCLITests.corpus()
        let run = TestPaths.tempDir("tb2") + "/run"
        let (status, _, err) = try MultiRankCLITests.launch(2, [
            "train", "--model", "tiny", "--data", data, "--steps", "3", "--batch", "4", "--seq", "24", "--rank", "4",
            "--eval-seqs", "4", "--quiet", "--run-dir", run])
        try #require(status == 0, "mpirun -n 2 exited \(status): \(err)")
        try Self.check(run)
        let (_, events) = try Self.read(run)
        #expect(events["exchange/bytes"]?.values.allSatisfy { $0 > 0 } == true)
    }
}
