import Foundation
import Testing
@testable import LoraDist

/// Checkpoints through the real binary under mpirun: exact resume, resume on
/// another world size, preemption, corruption, and kills during saves.
@Suite(.serialized, .tags(.cli)) struct CheckpointCLITests {
    static func corpus() throws -> String {
        try writeCorpus("ck-corpus") { "Entry \($0): a checkpoint is only as good as the resume it makes possible (\($0 % 11))." }
    }

    static func args(_ mode: String, data: String, run: String, steps: Int = 8, model: String = "tiny",
                     seed: Int = 1234) -> [String] {
        ["train", "--model", model, "--mode", mode, "--data", data, "--steps", "\(steps)", "--batch", "6", "--seq", "24",
         "--lr", "5e-3", "--rank", "4", "--warmup", "2", "--eval-seqs", "4", "--eval-every", "3", "--quiet",
         "--run-dir", run, "--seed", "\(seed)"]
    }

    @discardableResult
    static func mpi(_ n: Int, _ args: [String], expect: Int32 = 0) throws -> (Int32, String) {
        let (status, _, err) = try MultiRankCLITests.launch(n, args)
        #expect(status == expect, "mpirun -n \(n) \(args.joined(separator: " ")) exited \(status): \(err)")
        return (status, err)
    }

    /// step → loss, from a run's metrics.jsonl (also read by FamilyCLITests and ClusterCLITests).
    static func losses(_ run: String) throws -> [Int: Double] {
        var out: [Int: Double] = [:]
        for line in try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n") {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            out[try #require(o["step"] as? Int)] = o["loss"] as? Double
        }
        return out
    }

    /// Element-wise max |Δ| between two exported models' tensors; 0 means bitwise equal.
    static func maxDifference(_ a: String, _ b: String) throws -> Float {
        let x = try SafeTensors(path: a + "/model.safetensors"), y = try SafeTensors(path: b + "/model.safetensors")
        #expect(x.names == y.names)
        var worst: Float = 0
        for n in x.names {
            let u = try x.floats(n), v = try y.floats(n)
            for i in 0..<u.count where u[i].bitPattern != v[i].bitPattern { worst = max(worst, abs(u[i] - v[i]), .leastNonzeroMagnitude) }
        }
        return worst
    }

    @Test("stop and resume on the same world size reproduces the uninterrupted run bitwise", arguments: ["lora", "qlora", "full"])
    func exactResume(mode: String) throws {
        let data = try Self.corpus()
        let whole = TestPaths.tempDir("ck-whole"), parts = TestPaths.tempDir("ck-parts")
        try Self.mpi(2, Self.args(mode, data: data, run: whole) + ["--export-merged", whole + "/m"])
        try Self.mpi(2, Self.args(mode, data: data, run: parts) + ["--stop-after", "3"], expect: 75)
        let latest = try String(contentsOfFile: parts + "/checkpoints/latest", encoding: .utf8)
        #expect(latest == "step-0000003\n")
        try Self.mpi(2, Self.args(mode, data: data, run: parts) + ["--resume", "latest", "--export-merged", parts + "/m"])
        #expect(try Self.losses(parts) == (try Self.losses(whole)))
        #expect(try Self.losses(parts).count == 8)
        #expect(try Self.maxDifference(parts + "/m", whole + "/m") == 0)
    }

    /// fp32 tolerance: the sums of the exchange change order with the world size.
    @Test("saved on 4 ranks, resumed on 2, 8 and 3, the loss curve continues")
    func resumeElsewhere() throws {
        let data = try Self.corpus()
        let whole = TestPaths.tempDir("ck-4")
        try Self.mpi(4, Self.args("full", data: data, run: whole) + ["--export-merged", whole + "/m"])
        let reference = try Self.losses(whole)
        for n in [2, 8, 3] {
            let run = TestPaths.tempDir("ck-4to\(n)")
            try Self.mpi(4, Self.args("full", data: data, run: run) + ["--stop-after", "4"], expect: 75)
            try Self.mpi(n, Self.args("full", data: data, run: run) + ["--resume", "latest", "--export-merged", run + "/m"])
            let l = try Self.losses(run)
            #expect(l.count == 8)
            for (step, loss) in reference { #expect(abs(l[step]! - loss) <= 1e-5 * loss, "step \(step) on \(n) ranks") }
            #expect(try Self.maxDifference(run + "/m", whole + "/m") <= 1e-5)
        }
    }

    /// The checkpoint saved in the step early stopping ended a run (a preemption arriving in that
    /// step leaves one as the latest: compare --resume meets it) resumes as ended, not one more
    /// evaluation interval on.
    @Test("stopped in the step early stopping ended the run, resumed: the same steps, best step and best weights")
    func resumeAtEarlyStop() throws {
        let data = try Self.corpus()
        let whole = TestPaths.tempDir("ck-es-whole"), parts = TestPaths.tempDir("ck-es-parts")
        let stopping = ["--lr", "5e-2", "--patience", "1", "--eval-every", "2"]
        try Self.mpi(2, Self.args("lora", data: data, run: whole, steps: 60) + stopping + ["--export-merged", whole + "/m"])
        func summary(_ run: String) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as? [String: Any])
        }
        let reference = try summary(whole)
        let ended = try #require(reference["steps_done"] as? Int)
        try #require(reference["early_stopped"] as? Bool == true && ended < 60, "\(reference)")
        try Self.mpi(2, Self.args("lora", data: data, run: parts, steps: 60) + stopping + ["--stop-after", "\(ended)"], expect: 75)
        try Self.mpi(2, Self.args("lora", data: data, run: parts, steps: 60) + stopping + ["--resume", "latest", "--export-merged", parts + "/m"])
        let resumed = try summary(parts)
        for key in ["steps_done", "best_step", "early_stopped", "dev_loss", "final_loss"] {
            #expect((resumed[key] as? NSObject) == (reference[key] as? NSObject), "\(key)")
        }
        #expect(try Self.losses(parts) == (try Self.losses(whole)))
        #expect(try Self.maxDifference(parts + "/m", whole + "/m") == 0)
    }

    @Test("SIGTERM to one rank: every rank finishes the step, saves, exits 75; resuming finishes the run")
    func preemption() throws {
        let data = try Self.corpus()
        let run = TestPaths.tempDir("ck-term")
        let job = try BackgroundJob(ranks: 2, Self.args("lora", data: data, run: run, steps: 1_000_000), runDir: run)
        try job.waitFor()
        let ranks = try job.ranks()
        try #require(ranks.count == 2)
        kill(ranks[1], SIGTERM)
        job.launcher.waitUntilExit()
        #expect(job.launcher.terminationStatus == Preemption.exitCode)
        let dir = try CheckpointFiles.resolve("latest", checkpoints: run + "/checkpoints")
        let m = try CheckpointFiles.readManifest(dir)
        #expect(m.step >= 1 && m.worldSize == 2)
        let (_, problems) = try CheckpointInspector.inspect(dir)
        #expect(problems.isEmpty)
        // the same command, resumed, with a finite budget: runs the remaining steps
        try Self.mpi(2, Self.args("lora", data: data, run: run, steps: m.step + 2) + ["--resume", "latest"])
        #expect(try Self.losses(run).count == m.step + 2)
    }

    /// Corruptions of a saved checkpoint: resume and inspect fail with one line
    /// naming the file and the tensor, and the run directory keeps its checkpoint.
    @Test func corruption() throws {
        let data = try Self.corpus()
        let run = TestPaths.tempDir("ck-bad")
        try Self.mpi(2, Self.args("full", data: data, run: run, steps: 2))
        let dir = run + "/checkpoints/step-0000002"
        let m = try CheckpointFiles.readManifest(dir)
        let ref = try #require(m.slices.first { $0.kind == "adam_v" && $0.file == "shard-00001.pb" })
        let shard = dir + "/shard-00001.pb"
        let good = try Data(contentsOf: URL(fileURLWithPath: shard))

        func resumeFails(_ expected: [String], _ extra: [String] = [], mode: String = "full", seed: Int = 1234) throws {
            let (status, _, err) = try MultiRankCLITests.launch(2, Self.args(mode, data: data, run: run, steps: 4, seed: seed)
                + ["--resume", "latest"] + extra)
            #expect(status != 0)
            let lines = err.split(separator: "\n").filter { $0.contains("lora-dist: error:") }
            #expect(lines.count == 1, "\(err)")
            for e in expected { #expect(lines.first?.contains(e) == true, "expected '\(e)' in: \(lines)") }
            // nothing half-loaded, nothing newer written
            #expect(try String(contentsOfFile: run + "/checkpoints/latest", encoding: .utf8) == "step-0000002\n")
        }

        // a flipped byte inside a slice's data (its last float: the message ends with the 8-byte kind field)
        var flipped = good
        flipped[ref.offset + ref.length - 8 - 2] ^= 0x40
        try flipped.write(to: URL(fileURLWithPath: shard))
        try resumeFails(["shard-00001.pb", "checksum", ref.name])
        let (status, _, err) = try runProcess(TestPaths.binary, ["inspect", dir])
        #expect(status != 0 && err.contains(ref.name))
        // truncated
        try good.prefix(ref.offset + ref.length / 2).write(to: URL(fileURLWithPath: shard))
        try resumeFails(["shard-00001.pb", "truncated"])
        // missing
        try FileManager.default.removeItem(atPath: shard)
        try resumeFails(["shard-00001.pb", "missing"])
        // inspect says so in a few lines, not one per slice
        let (missingStatus, _, missingErr) = try runProcess(TestPaths.binary, ["inspect", dir])
        #expect(missingStatus != 0 && missingErr.contains("shard-00001.pb: missing ("), "\(missingErr)")
        #expect(missingErr.split(separator: "\n").count <= 10, "\(missingErr)")
        try good.write(to: URL(fileURLWithPath: shard))
        // a manifest that does not match the model
        try resumeFails(["model config differs"], ["--model", "small"])
        // a manifest that is not protobuf
        let manifest = dir + "/manifest.pb"
        let goodManifest = try Data(contentsOf: URL(fileURLWithPath: manifest))
        try Data("not a manifest at all".utf8).write(to: URL(fileURLWithPath: manifest))
        try resumeFails(["manifest.pb", "corrupt manifest"])
        // a byte flipped inside the model config JSON the manifest carries
        var flippedManifest = goodManifest
        let at = try #require(flippedManifest.range(of: Data("hidden_size".utf8))).lowerBound
        flippedManifest[at] ^= 0x01
        try flippedManifest.write(to: URL(fileURLWithPath: manifest))
        try resumeFails(["manifest.pb", "CRC-32C"])
        let (flippedStatus, _, flippedErr) = try runProcess(TestPaths.binary, ["inspect", dir])
        #expect(flippedStatus != 0 && flippedErr.contains("corrupt manifest"), "\(flippedErr)")
        try goodManifest.write(to: URL(fileURLWithPath: manifest))
        // repaired, it resumes
        try Self.mpi(2, Self.args("full", data: data, run: run, steps: 3) + ["--resume", "latest"])
    }

    @Test("resuming an older checkpoint repoints latest and replaces the newer ones as it saves")
    func resumeOlder() throws {
        let data = try Self.corpus()
        let run = TestPaths.tempDir("ck-older")
        try Self.mpi(2, Self.args("full", data: data, run: run, steps: 6) + ["--save-every", "2", "--keep-last", "5"])
        let original = try Self.losses(run)
        // the same schedule (6 steps), stopped after 4
        try Self.mpi(2, Self.args("full", data: data, run: run, steps: 6) + ["--resume", "2", "--stop-after", "4"], expect: 75)
        #expect(CheckpointFiles.latest(run + "/checkpoints") == "step-0000004")
        let again = try Self.losses(run)
        #expect(again.count == 4)
        for step in 1...4 { #expect(again[step] == original[step]) }
        let (_, problems) = try CheckpointInspector.inspect(run + "/checkpoints/step-0000004")
        #expect(problems.isEmpty)
    }

    @Test("a LoRA checkpoint refuses a base whose weights differ")
    func loraBaseIdentity() throws {
        let data = try Self.corpus()
        let run = TestPaths.tempDir("ck-base")
        try Self.mpi(1, Self.args("lora", data: data, run: run, steps: 2))
        let m = try CheckpointFiles.readManifest(run + "/checkpoints/step-0000002")
        #expect(m.baseIdentity.hasPrefix("crc32c:"))
        #expect(m.slices.allSatisfy { $0.name.contains(".lora_") })  // adapters only, not the base
        // another seed initialises another base
        let (status, _, err) = try MultiRankCLITests.launch(1, Self.args("lora", data: data, run: run, steps: 4, seed: 99) + ["--resume", "latest"])
        #expect(status != 0)
        #expect(err.contains("base weights differ"), "\(err)")
    }

    /// SIGKILL at moments spread over a run that saves every step: whatever was
    /// being written, `latest` names a checkpoint that verifies and resumes.
    @Test("a SIGKILL during saves leaves the previous checkpoint loadable")
    func killDuringSave() throws {
        let data = try Self.corpus()
        let run = TestPaths.tempDir("ck-kill")
        for (i, delay) in [0.35, 0.6, 0.9].enumerated() {
            var a = Self.args("full", data: data, run: run, steps: 1_000_000, model: "small")
            a += ["--save-every", "1", "--keep-last", "2", "--batch", "2", "--seq", "8"]
            if i > 0 { a += ["--resume", "latest"] }
            let job = try BackgroundJob(ranks: 2, a, runDir: run)
            // wait for a first save of this launch, then a little more, then kill every rank at once
            try job.waitFor("checkpoints/latest")
            Thread.sleep(forTimeInterval: delay)
            for pid in try job.ranks() { kill(pid, SIGKILL) }
            job.launcher.waitUntilExit()
            let dir = try CheckpointFiles.resolve("latest", checkpoints: run + "/checkpoints")
            let (_, problems) = try CheckpointInspector.inspect(dir)
            #expect(problems.isEmpty, "after kill \(i): \(problems)")
        }
        let m = try CheckpointFiles.readManifest(try CheckpointFiles.resolve("latest", checkpoints: run + "/checkpoints"))
        var a = Self.args("full", data: data, run: run, steps: m.step + 1, model: "small")
        a += ["--batch", "2", "--seq", "8", "--resume", "latest"]
        try Self.mpi(2, a)
    }
}
