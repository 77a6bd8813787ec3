import Foundation
import Testing
@testable import LoraDist

extension Tag {
    /// Tests that run the lora-dist executable (and mpirun) rather than the library in process.
    /// Their suites' names hold "CLI" too, so `swift test --skip CLI` runs the fast unit tests
    /// alone and `swift test --filter CLI` these.
    @Tag static var cli: Self
}

/// Paths and helpers shared by the tests.
enum TestPaths {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let fixtures = repo + "/Tests/Fixtures"

    /// The lora-dist executable `swift test` builds beside the test bundle.
    static var binary: String {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // xctest bundles on Linux are a single file; on other layouts walk up to the build folder.
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("lora-dist").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return repo + "/.build/debug/lora-dist"
    }

    /// Where this test process's runs keep their token files (not the user's cache).
    static let tokenFolder = NSTemporaryDirectory() + "lora-dist-test-tokens-\(getpid())"

    static func tempDir(_ name: String) -> String {
        let d = NSTemporaryDirectory() + "lora-dist-test-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }
}

/// max |a − b| / max(|b|), the relative error used against the PyTorch fixtures.
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "length \(a.count) vs \(b.count)")
    var diff: Float = 0, scale: Float = 0
    for i in 0..<a.count {
        diff = max(diff, abs(a[i] - b[i]))
        scale = max(scale, abs(b[i]))
    }
    return diff / max(scale, 1e-12)
}

/// ‖a − b‖ / ‖b‖ (Euclidean), the error used against finite differences.
func normRelativeError(_ a: [Double], _ b: [Double]) -> Double {
    var d = 0.0, n = 0.0
    for i in 0..<a.count { d += (a[i] - b[i]) * (a[i] - b[i]); n += b[i] * b[i] }
    return (d / max(n, 1e-30)).squareRoot()
}

/// Runs a command; returns (exit status, stdout, stderr).
@discardableResult
func runProcess(_ path: String, _ args: [String], env: [String: String]? = nil) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.environment = env ?? cleanEnvironment()
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Drain both pipes on their own threads, and stop waiting for them shortly after the child
    // exits: a process forked elsewhere in this test process meanwhile (the orted that OpenMPI's
    // singleton MPI_Init starts) can inherit a pipe's write end and keep it open for good.
    final class Sink: @unchecked Sendable {
        let lock = NSLock()
        var data = Data()
        let done = DispatchSemaphore(value: 0)
        func drain(_ h: FileHandle) {
            while true {
                let chunk = h.availableData
                if chunk.isEmpty { break }
                lock.lock(); data.append(chunk); lock.unlock()
            }
            done.signal()
        }
        func take(graceSeconds: Double) -> Data {
            _ = done.wait(timeout: .now() + graceSeconds)
            lock.lock(); defer { lock.unlock() }
            return data
        }
    }
    let outSink = Sink(), errSink = Sink()
    DispatchQueue.global().async { outSink.drain(out.fileHandleForReading) }
    DispatchQueue.global().async { errSink.drain(err.fileHandleForReading) }
    p.waitUntilExit()
    let o = outSink.take(graceSeconds: 5), e = errSink.take(graceSeconds: 5)
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// The environment without what a singleton MPI_Init left in this process
/// (OMPI_*/PMIX_* variables make a child mpirun or MPI program fail); OMPI_ALLOW_* stays.
func cleanEnvironment() -> [String: String] {
    var env = ProcessInfo.processInfo.environment.filter { key, _ in
        key.hasPrefix("OMPI_ALLOW") || !(key.hasPrefix("OMPI_") || key.hasPrefix("PMIX_") || key.hasPrefix("OPAL_"))
    }
    env["LORA_DIST_TOKENS"] = TestPaths.tokenFolder
    return env
}

/// One cluster for the whole test process (a world of one; MPI_Init runs once).
enum TestCluster {
    nonisolated(unsafe) static let shared: Cluster = {
        setenv("LORA_DIST_TOKENS", TestPaths.tokenFolder, 1)  // in-process trainers' token files
        return Cluster()
    }()
}

func makeTrainer(_ o: TrainOptions) throws -> Trainer {
    try Trainer(options: o, cluster: TestCluster.shared)
}

/// The dev losses a run logged in its metrics.jsonl, by step.
func devLosses(runDir: String) throws -> [(step: Int, loss: Double)] {
    try String(contentsOfFile: runDir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        .compactMap { r in (r["dev_loss"] as? Double).map { (r["step"] as! Int, $0) } }
}

/// A small corpus in a fresh folder: `lines` numbered lines made by `line(i)`.
func writeCorpus(_ name: String, lines: Int = 300, _ line: (Int) -> String) throws -> String {
    let dir = TestPaths.tempDir(name)
    let text = (0..<lines).map { line($0) + "\n" }.joined()
    try text.write(toFile: dir + "/c.txt", atomically: true, encoding: .utf8)
    return dir
}

/// An mpirun job running in the background, for tests that interrupt one.
struct BackgroundJob {
    let launcher: Process
    let runDir: String

    /// Starts `mpirun -n N lora-dist ARGS` (ARGS must contain `--run-dir runDir`); output discarded.
    init(ranks: Int, _ args: [String], runDir: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: MultiRankCLITests.mpirun)
        p.arguments = ["--allow-run-as-root", "--oversubscribe", "-n", "\(ranks)", TestPaths.binary] + args
        p.environment = cleanEnvironment()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        launcher = p
        self.runDir = runDir
    }

    /// Waits until `file` in the run directory exists and is not empty (default: the first logged step).
    func waitFor(_ file: String = "metrics.jsonl", timeout: Double = 60) throws {
        let start = Date()
        while (try? String(contentsOfFile: runDir + "/" + file, encoding: .utf8))?.isEmpty != false {
            guard Date().timeIntervalSince(start) < timeout else { throw LoraDistError("\(runDir)/\(file) never appeared") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// The job's rank processes (not mpirun itself).
    func ranks() throws -> [Int32] {
        let (_, pids, _) = try runProcess("/usr/bin/pgrep", ["-f", "--", "--run-dir \(runDir)"])
        return pids.split(separator: "\n").compactMap { Int32($0) }.filter { $0 != launcher.processIdentifier }
    }

    /// Waits for mpirun to end; false when it is still running after `timeout` seconds (it is then terminated).
    func waitUntilExit(timeout: Double) -> Bool {
        let start = Date()
        while launcher.isRunning && Date().timeIntervalSince(start) < timeout { Thread.sleep(forTimeInterval: 0.1) }
        if launcher.isRunning { launcher.terminate(); return false }
        return true
    }
}

/// A fixture comparison's measured error, appended as "check<TAB>error" to the file
/// LORA_DIST_TEST_ERRORS names (nothing when unset). tools/measure-tolerances.sh sets it
/// to measure each tolerance's spread over OpenBLAS kernels and thread counts.
func recordFixtureError(_ check: String, _ error: Double) {
    guard let path = ProcessInfo.processInfo.environment["LORA_DIST_TEST_ERRORS"] else { return }
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let line = "\(check)\t\(error)\n"
    _ = line.withCString { write(fd, $0, strlen($0)) }  // one write with O_APPEND: lines never interleave
}

func recordFixtureError(_ check: String, _ error: Float) { recordFixtureError(check, Double(error)) }
