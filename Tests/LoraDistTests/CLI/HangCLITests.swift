import Foundation
import Testing
@testable import LoraDist

/// A rank that stops responding (SIGSTOP) ends the job within --collective-timeout, with one
/// line naming it, and the run resumes from its last checkpoint (CollectiveTimeout).
@Suite(.serialized, .tags(.cli)) struct HangCLITests {
    static let timeout = 5.0
    /// What the job may take beyond the timeout: the other ranks reach their wait within a
    /// step, and mpirun takes a second or two to end the processes.
    static let margin = 10.0

    /// OpenMPI's session directory of this suite's own (the /tmp/ompi.<host> race with the
    /// singleton processes other suites start).
    static func environment() -> [String: String] {
        let base = TestPaths.tempDir("hang-ompi")
        return cleanEnvironment().merging(["OMPI_MCA_orte_tmpdir_base": base, "SWIFT_BACKTRACE": "enable=no"]) { _, new in new }
    }

    static func args(data: String, run: String, steps: Int) -> [String] {
        ["train", "--model", "tiny", "--data", data, "--steps", "\(steps)", "--batch", "4", "--seq", "16", "--eval-every", "1000",
         "--save-every", "3", "--quiet", "--run-dir", run, "--collective-timeout", "\(Int(timeout))"]
    }

    /// The pid of world rank `rank` among the processes whose command line holds `--run-dir run`.
    static func pid(ofRank rank: Int, run: String, launcher: Int32) throws -> Int32? {
        let (_, out, _) = try runProcess("/usr/bin/pgrep", ["-f", "--", "--run-dir \(run) "])
        for pid in out.split(separator: "\n").compactMap({ Int32($0) }) where pid != launcher {
            guard let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            let vars = env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if vars.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }

    @Test("a stopped rank ends the job within --collective-timeout with one line naming it; resume works",
          arguments: [(ranks: 2, stopped: 1), (ranks: 4, stopped: 0)])
    func stoppedRank(_ c: (ranks: Int, stopped: Int)) throws {
        let data = try MultiRankCLITests.corpus()
        let run = TestPaths.tempDir("hang-\(c.ranks)")
        let env = Self.environment()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: MultiRankCLITests.mpirun)
        p.arguments = ["--allow-run-as-root", "--oversubscribe", "-n", "\(c.ranks)", TestPaths.binary]
            + Self.args(data: data, run: run, steps: 1_000_000)
        p.environment = env
        let errPath = run + ".stderr"
        FileManager.default.createFile(atPath: errPath, contents: nil)
        let errFile = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        p.standardError = errFile
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        // Mid-run: a checkpoint has been saved.
        let start = Date()
        while !FileManager.default.fileExists(atPath: run + "/checkpoints/latest") && p.isRunning && Date().timeIntervalSince(start) < 120 {
            Thread.sleep(forTimeInterval: 0.05)
        }
        try #require(p.isRunning, "the job ended before it was stopped: \((try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")")
        let victim = try #require(try Self.pid(ofRank: c.stopped, run: run, launcher: p.processIdentifier))
        Thread.sleep(forTimeInterval: 0.3)
        kill(victim, SIGSTOP)
        let stopped = Date()
        defer { kill(victim, SIGKILL) }  // a stopped process survives the job's end (it cannot run its SIGTERM)
        while p.isRunning && Date().timeIntervalSince(stopped) < Self.timeout + Self.margin { Thread.sleep(forTimeInterval: 0.05) }
        let elapsed = Date().timeIntervalSince(stopped)
        #expect(!p.isRunning, "mpirun still running \(elapsed) s after rank \(c.stopped) was stopped")
        if p.isRunning { p.terminate(); p.waitUntilExit() }
        try errFile.close()
        #expect(p.terminationStatus != 0)
        #expect(elapsed >= Self.timeout * 0.75, "ended after \(elapsed) s, before the timeout")
        let err = try String(contentsOfFile: errPath, encoding: .utf8)
        let lines = err.split(separator: "\n").filter { $0.contains("lora-dist: error:") }
        #expect(lines.count == 1, "\(err)")
        #expect(lines.first?.contains("rank \(c.stopped) (host ") == true, "\(lines)")
        #expect(lines.first?.contains("--collective-timeout 5 s") == true, "\(lines)")
        kill(victim, SIGKILL)
        // The run resumes from the last checkpoint its ranks saved.
        let m = try CheckpointFiles.readManifest(try CheckpointFiles.resolve("latest", checkpoints: run + "/checkpoints"))
        let (status, _, resumeErr) = try runProcess(MultiRankCLITests.mpirun,
            ["--allow-run-as-root", "--oversubscribe", "-n", "\(c.ranks)", TestPaths.binary]
            + Self.args(data: data, run: run, steps: m.step + 2) + ["--resume", "latest"], env: env)
        #expect(status == 0, "\(resumeErr)")
        let steps = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").count
        #expect(steps == m.step + 2)
    }

    @Test("an invalid --collective-timeout or LORA_DIST_COLLECTIVE_TIMEOUT is one line and nothing written")
    func invalidTimeout() throws {
        let data = try MultiRankCLITests.corpus()
        let run = TestPaths.tempDir("hang-bad") + "/run"
        for (value, env) in [("-1", false), ("nan", false), ("0.5", false), ("1e9", false), ("soon", true), ("-3", true)] {
            var e = Self.environment()
            var a = Self.args(data: data, run: run, steps: 2)
            if env {
                e[CollectiveTimeout.environmentVariable] = value
                a.removeLast(2)
            } else {
                a.removeLast(2)
                a.append("--collective-timeout=\(value)")
            }
            let (status, _, err) = try runProcess(TestPaths.binary, a, env: e)
            #expect(status != 0)
            let lines = err.split(separator: "\n").filter { $0.contains("lora-dist: error:") }
            #expect(lines.count == 1, "\(value): \(err)")
            #expect(lines.first?.contains(env ? CollectiveTimeout.environmentVariable : "--collective-timeout") == true, "\(lines)")
            #expect(!FileManager.default.fileExists(atPath: run))
        }
    }
}
