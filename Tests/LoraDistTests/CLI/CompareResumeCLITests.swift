import Foundation
import Testing
@testable import LoraDist

/// `compare --resume` under mpirun: a compare stopped by SIGTERM to its ranks (what Slurm sends)
/// while a run trains, then resumed, writes the report an uninterrupted compare writes, without
/// training its finished runs again; the refusals that keep an --out from being mixed up.
@Suite(.serialized, .tags(.cli)) struct CompareResumeCLITests {
    static func requireCorpora() throws {
        if !FileManager.default.fileExists(atPath: CacheFolders.corpora + "/.complete") {
            let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-corpora.sh"])
            try #require(status == 0, "fetch-corpora.sh failed: \(err)")
        }
    }

    /// Two candidates × two seeds, tiny budgets; no early stopping, so the best step must survive a resume too.
    static let plain = ["compare", "--base", "tiny", "--domain", "legal", "--ranks", "2", "--targets", "q_proj,v_proj",
                        "--no-qlora", "--no-compressed", "--steps", "30", "--batch", "2", "--seq", "16", "--lr-lora", "1e-2",
                        "--lr-full", "1e-2", "--eval-every", "2", "--eval-seqs", "2", "--test-seqs", "4", "--seeds", "2",
                        "--no-early-stopping"]

    /// `mpirun -n 2 lora-dist ARGS`, stopped by SIGTERM to its ranks as soon as `file` exists and is
    /// not empty; returns mpirun's status and rank 0's stderr.
    static func interrupted(_ args: [String], when file: String) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: MultiRankCLITests.mpirun)
        p.arguments = ["--allow-run-as-root", "--oversubscribe", "-n", "2", TestPaths.binary] + args
        p.environment = cleanEnvironment()
        let log = TestPaths.tempDir("resume-log") + "/stderr"
        FileManager.default.createFile(atPath: log, contents: nil)
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        let start = Date()
        while p.isRunning && (FileManager.default.contents(atPath: file)?.isEmpty ?? true) {
            if Date().timeIntervalSince(start) > 300 { p.terminate(); break }
            Thread.sleep(forTimeInterval: 0.02)
        }
        let (_, pids, _) = try runProcess("/usr/bin/pgrep", ["-P", "\(p.processIdentifier)"])
        for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGTERM) }
        let stop = Date()
        while p.isRunning && Date().timeIntervalSince(stop) < 120 { Thread.sleep(forTimeInterval: 0.05) }
        if p.isRunning { p.terminate() }   // a hang: the status below fails the test
        p.waitUntilExit()
        try err.close()
        return (p.terminationStatus, try String(contentsOfFile: log, encoding: .utf8))
    }

    /// Every figure of two reports that differ, except what is timed or measured per process
    /// (seconds, tokens/s, node memory) and the run directories (another --out).
    static func differences(_ a: String, _ b: String) throws -> [String] {
        let skip: Set<String> = ["wall_s", "seconds_per_step", "tokens_per_s", "node_memory_bytes", "peak_node_memory_bytes",
                                 "run_dir"]
        func json(_ dir: String) throws -> Any { try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/report.json"))) }
        var out: [String] = []
        func walk(_ x: Any?, _ y: Any?, _ path: String) {
            switch (x, y) {
            case let (x as [String: Any], y as [String: Any]):
                for k in Set(x.keys).union(y.keys).sorted() where !skip.contains(k) { walk(x[k], y[k], path + "." + k) }
            case let (x as [Any], y as [Any]):
                guard x.count == y.count else { return out.append("\(path): \(x.count) items against \(y.count)") }
                for (i, (u, v)) in zip(x, y).enumerated() { walk(u, v, path + "[\(i)]") }
            case let (x as NSObject, y as NSObject):
                if x != y { out.append("\(path): \(x) against \(y)") }
            default:
                if (x == nil) != (y == nil) { out.append("\(path): present in one report only") }
            }
        }
        walk(try json(a), try json(b), "")
        return out
    }

    static func errorLines(_ err: String) -> [Substring] { err.split(separator: "\n").filter { $0.contains("lora-dist: error:") } }

    @Test("plain compare with --seeds stopped by SIGTERM in its second run, resumed: the first run reused, the second resumed from its checkpoint, the report of an uninterrupted compare")
    func plainResumed() throws {
        try Self.requireCorpora()
        let reference = TestPaths.tempDir("resume-ref"), out = TestPaths.tempDir("resume")
        let (rs, _, re) = try MultiRankCLITests.launch(2, Self.plain + ["--out", reference])
        try #require(rs == 0, "compare exited \(rs): \(re)")

        // Stopped once the second run (LoRA, seed 1235) has logged a step: the first run is finished.
        let first = out + "/finished/lora-r2-attn/lr-0.01/seed-1234.json"
        let (status, err) = try Self.interrupted(Self.plain + ["--out", out], when: out + "/runs/lora-r2-attn/lr-0.01/seed-1235/metrics.jsonl")
        #expect(status == Preemption.exitCode, "\(err)")
        let stopped = try #require(err.split(separator: "\n").first { $0.hasPrefix("compare: stopped by a signal") }, "\(err)")
        #expect(stopped.contains("rerun the same command with --resume"))
        #expect(!FileManager.default.fileExists(atPath: out + "/report.json"))
        let firstRecord = try #require(FileManager.default.contents(atPath: first))
        let firstMetrics = try Data(contentsOf: URL(fileURLWithPath: out + "/runs/lora-r2-attn/lr-0.01/seed-1234/metrics.jsonl"))

        // Without --resume the unfinished --out is refused, and so are other options; nothing is written.
        let (s1, _, e1) = try MultiRankCLITests.launch(2, Self.plain + ["--out", out])
        #expect(s1 != 0 && Self.errorLines(e1).count == 1 && e1.contains("holds an unfinished compare: add --resume"), "\(e1)")
        let other = Self.plain.map { $0 == "30" ? "20" : $0 }
        let (s2, _, e2) = try MultiRankCLITests.launch(2, other + ["--out", out, "--resume"])
        #expect(s2 != 0 && Self.errorLines(e2).count == 1 && e2.contains("started with --steps 30, this command has --steps 20"), "\(e2)")

        let (s3, _, e3) = try MultiRankCLITests.launch(2, Self.plain + ["--out", out, "--resume"])
        try #require(s3 == 0, "resumed compare exited \(s3): \(e3)")
        #expect(e3.contains("LoRA r=2 (q,v), lr 0.01, seed 1234: finished before, reused"), "\(e3)")
        #expect(!e3.contains("LoRA r=2 (q,v), lr 0.01, seed 1234: training"), "\(e3)")
        #expect(FileManager.default.contents(atPath: first) == firstRecord)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/runs/lora-r2-attn/lr-0.01/seed-1234/metrics.jsonl")) == firstMetrics)
        // The run the signal stopped mid-way resumes from the checkpoint it saved at that step.
        if let step = stopped.firstMatch(of: #/at step (\d+) of LoRA r=2 \(q,v\), lr 0.01, seed 1235/#)?.1 {
            #expect(e3.contains("seed 1235: resuming from its checkpoint of step \(step)"), "\(e3)")
        } else {
            Issue.record("the signal did not stop the second run mid-way: \(stopped)")
        }
        let metrics = try String(contentsOfFile: out + "/runs/lora-r2-attn/lr-0.01/seed-1235/metrics.jsonl", encoding: .utf8)
        #expect(metrics.split(separator: "\n").count == 30)
        #expect(try Self.differences(reference, out) == [])
        // OUT/config.yaml, the recipe that repeats the compare elsewhere, does not carry --resume.
        let recipe = try String(contentsOfFile: out + "/config.yaml", encoding: .utf8)
        #expect(!recipe.contains("resume:") && recipe.contains("steps: 30"))

        // Finished: --resume has nothing to do; an --out that holds nothing neither.
        let (s4, _, e4) = try MultiRankCLITests.launch(2, Self.plain + ["--out", out, "--resume"])
        #expect(s4 != 0 && Self.errorLines(e4).count == 1 && e4.contains("has finished (report.md); nothing to resume"), "\(e4)")
        let (s5, _, e5) = try MultiRankCLITests.launch(2, Self.plain + ["--out", TestPaths.tempDir("resume-empty"), "--resume"])
        #expect(s5 != 0 && Self.errorLines(e5).count == 1 && e5.contains("holds no compare to resume"), "\(e5)")
    }

    @Test("resume: true in a recipe is --resume, refused on an --out with nothing to resume before anything is written")
    func recipe() throws {
        let dir = TestPaths.tempDir("resume-recipe")
        try "base: tiny\ndomain: legal\nresume: true\n".write(toFile: dir + "/r.yaml", atomically: true, encoding: .utf8)
        let (status, _, err) = try runProcess(TestPaths.binary, ["compare", "--config", dir + "/r.yaml", "--out", dir + "/out"])
        #expect(status != 0 && Self.errorLines(err).count == 1 && err.contains("--resume: \(dir)/out holds no compare to resume"), "\(err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/out/config.yaml"))
        let (ps, printed, _) = try runProcess(TestPaths.binary, ["compare", "--config", dir + "/r.yaml", "--print-config"])
        #expect(ps == 0 && printed.contains("\nresume: true"))
    }

    @Test("continual stopped in stage 2 of (a), resumed, stopped in stage 2 of (b), resumed: stages chain from the saved exports, the report of an uninterrupted compare")
    func continualResumed() throws {
        try Self.requireCorpora()
        let args = ["compare", "--continual", "legal,medical", "--base", "tiny", "--ranks", "2", "--targets", "q_proj,v_proj",
                    "--lr-lora", "1e-2", "--lr-full", "1e-2", "--steps", "30", "--batch", "2", "--seq", "16", "--eval-every", "2",
                    "--patience", "4", "--eval-seqs", "2", "--test-seqs", "4"]
        let reference = TestPaths.tempDir("resume-cont-ref"), out = TestPaths.tempDir("resume-cont")
        let (rs, _, re) = try MultiRankCLITests.launch(2, args + ["--out", reference])
        try #require(rs == 0, "compare exited \(rs): \(re)")

        let (s1, e1) = try Self.interrupted(args + ["--out", out], when: out + "/runs/full/2-medical/run/metrics.jsonl")
        #expect(s1 == Preemption.exitCode && e1.contains("compare: stopped by a signal"), "\(e1)")
        #expect(FileManager.default.fileExists(atPath: out + "/finished/full/1-legal/run.json"))
        let (s2, e2) = try Self.interrupted(args + ["--out", out, "--resume"], when: out + "/runs/lora/2-medical/run/metrics.jsonl")
        #expect(s2 == Preemption.exitCode && e2.contains("compare: stopped by a signal"), "\(e2)")
        #expect(e2.contains("(a) full fine-tuning, continued, stage 1 (legal): finished before, reused"), "\(e2)")
        #expect(e2.contains("(a) full fine-tuning, continued, stage 2 (medical): resuming from its checkpoint"), "\(e2)")

        let (s3, _, e3) = try MultiRankCLITests.launch(2, args + ["--out", out, "--resume"])
        try #require(s3 == 0, "resumed compare exited \(s3): \(e3)")
        for stage in ["(a) full fine-tuning, continued, stage 1 (legal)", "(a) full fine-tuning, continued, stage 2 (medical)",
                      "(b) one LoRA adapter, continued, stage 1 (legal)"] {
            #expect(e3.contains(stage + ": finished before, reused"), "\(e3)")
        }
        #expect(e3.contains("(b) one LoRA adapter, continued, stage 2 (medical): resuming from its checkpoint"), "\(e3)")
        #expect(try Self.differences(reference, out) == [])
    }
}
