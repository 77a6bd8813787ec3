import Foundation
import Testing
@testable import LoraDist

extension Tag {
    /// Tests that start daemons, network namespaces or multi-host jobs (root, a minute or more).
    @Tag static var cluster: Self
}

/// CLI/cluster test (its suite name holds "CLI": `swift test --skip CLI` leaves it out, `--filter Slurm`
/// runs it alone): a real Slurm cluster (cluster/slurm-testbed.sh: munge, slurmctld, one slurmd
/// per network-namespace node) runs the committed cluster/slurm.sbatch, submitted with sbatch
/// and checked through squeue, scontrol, sinfo, `sacct -c` and the run directory.
/// Needs root; `slurm-testbed.sh up` installs Debian's Slurm packages when they are missing.
/// About 1.5 minutes on 2 cores, most of it Slurm's own waits (a lost node is declared down after
/// SlurmdTimeout=10 s, a requeued job is held for cred_expire=10 s).
@Suite("CLI/cluster: slurm.sbatch on a real Slurm cluster (sbatch, srun --mpi=pmix, requeue, bursting, node loss)",
       .serialized, .tags(.cli, .cluster), .enabled(if: getuid() == 0, "needs root (network namespaces, slurmd)"))
struct SlurmCLITests {
    static let testbed = TestPaths.repo + "/cluster/slurm-testbed.sh"
    static let recipe = TestPaths.repo + "/cluster/slurm.sbatch"
    /// One Slurm test bed per machine at a time (another checkout's test run waits here).
    static let lockFile = "/run/lock/lora-dist-slurm-testbed.lock"
    static let steps = 160

    /// The "shared storage" of the jobs (the test bed's nodes share this machine's file systems):
    /// corpus, run directories, job output.
    let shared = TestPaths.tempDir("slurm")

    /// The training arguments every job of this suite runs (the recipe adds --run-dir and --resume).
    func trainArgs(data: String) -> [String] {
        ["--model", "tiny", "--mode", "lora", "--data", data, "--steps", "\(Self.steps)", "--batch", "8", "--seq", "24",
         "--lr", "5e-3", "--rank", "4", "--warmup", "1", "--eval-seqs", "4", "--eval-every", "1000",
         "--save-every", "20", "--quiet"]
    }

    // MARK: Slurm's commands

    @discardableResult
    static func run(_ tool: String, _ args: [String], env: [String: String]? = nil) throws -> (Int32, String, String) {
        try runProcess("/usr/bin/env", [tool] + args, env: env)
    }

    /// sbatch cluster/slurm.sbatch with these sbatch options and training arguments; returns the job id.
    func submit(_ name: String, runDir: String, _ options: [String], data: String) throws -> Int {
        var env = cleanEnvironment()
        env["RUN_DIR"] = runDir
        env["BIN"] = TestPaths.binary
        // The test bed's nodes share 2 cores among 4 ranks: idle ranks must yield (mpirun's
        // --oversubscribe does it; under srun OpenMPI cannot tell).
        env["OMPI_MCA_mpi_yield_when_idle"] = "1"
        env["LORA_DIST_THREADS"] = nil
        let (status, out, err) = try Self.run("sbatch", ["--parsable", "--job-name", name, "--time", "10",
                                                         "--output", shared + "/\(name).out"] + options
                                              + [Self.recipe] + trainArgs(data: data), env: env)
        guard status == 0, let id = Int(out.split(separator: ";")[0].trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw LoraDistError("sbatch \(name) failed (\(status)): \(out) \(err)")
        }
        return id
    }

    /// `scontrol show job -o`: the fields this suite reads (values without spaces).
    static func job(_ id: Int) throws -> [String: String] {
        let (_, out, _) = try run("scontrol", ["show", "job", "-o", "\(id)"])
        var fields: [String: String] = [:]
        for token in out.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            guard let eq = token.firstIndex(of: "=") else { continue }
            fields[String(token[..<eq])] = String(token[token.index(after: eq)...])
        }
        return fields
    }

    static func squeueState(_ id: Int) throws -> String {
        try run("squeue", ["-h", "-j", "\(id)", "-o", "%T"]).1.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func nodeState(_ node: String) throws -> String {
        try run("sinfo", ["-h", "-n", node, "-o", "%T"]).1.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Polls `condition` every `interval` seconds (20 ms: file checks; Slurm's commands are
    /// polled every 0.2 s); returns when it first held, throws after `timeout` seconds.
    /// Waits for training progress allow 180 s: when the whole suite runs in parallel on a
    /// loaded 2-core machine, 40 steps of a job have taken over 60 s. The waits that are
    /// guarantees (a lost node ends the job, a requeue) keep their 60 s.
    @discardableResult
    static func wait(_ what: String, timeout: Double, every interval: Double = 0.02, _ condition: () throws -> Bool) throws -> Date {
        let start = Date()
        while true {
            if try condition() { return Date() }
            guard Date().timeIntervalSince(start) < timeout else { throw LoraDistError("timed out after \(Int(timeout)) s waiting for \(what)") }
            Thread.sleep(forTimeInterval: interval)
        }
    }

    static let finished: Set<String> = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"]

    /// Waits until the job has ended for good (not requeued); returns its final scontrol fields.
    static func waitForEnd(_ id: Int, timeout: Double) throws -> [String: String] {
        var last: [String: String] = [:]
        try wait("job \(id) to end", timeout: timeout, every: 0.2) {
            last = try job(id)
            return finished.contains(last["JobState"] ?? "")
        }
        return last
    }

    static func metricLines(_ path: String) -> [Substring] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
    }

    static func lines(_ path: String) -> Int { metricLines(path).count }

    /// The recipe's own lines in the job output: `lora-dist-job: id N restart R ... start T` / `srun-exit S end T`.
    static func recipeEvents(_ output: String) -> [(kind: String, fields: [String: String])] {
        output.split(separator: "\n").filter { $0.hasPrefix("lora-dist-job:") }.map { line in
            let words = line.split(separator: " ").dropFirst().map(String.init)
            var fields: [String: String] = [:]
            var i = 0
            while i + 1 < words.count { fields[words[i]] = words[i + 1]; i += 2 }
            return (fields["start"] != nil ? "start" : "end", fields)
        }
    }

    /// "R rank(s) on N node(s), ..." lines of the job output, in order.
    static func headers(_ output: String) -> [(ranks: Int, nodes: Int)] {
        output.split(separator: "\n").compactMap { line in
            let w = line.split(separator: " ")
            guard w.count > 4, w[1] == "rank(s)", w[4].hasPrefix("node(s)"), let r = Int(w[0]), let n = Int(w[3]) else { return nil }
            return (r, n)
        }
    }

    /// The threads each rank ran (summary.json, written at the end and on preemption):
    /// replicas × BLAS threads per replica.
    static func threadsPerRank(_ run: String) throws -> Int {
        let s = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as? [String: Any])
        return (s["replicas"] as? Int ?? 0) * (s["blas_threads"] as? Int ?? 0)
    }

    /// The step of the run's checkpoints/latest; -1 without one.
    static func latest(_ run: String) throws -> Int {
        guard let text = try? String(contentsOfFile: run + "/checkpoints/latest", encoding: .utf8) else { return -1 }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "-").last ?? "") ?? -1
    }

    /// step → loss of a run's metrics.jsonl.
    static func losses(_ run: String) throws -> [Int: Double] {
        var out: [Int: Double] = [:]
        for line in metricLines(run + "/metrics.jsonl") {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            if let step = o["step"] as? Int { out[step] = o["loss"] as? Double }
        }
        return out
    }

    static func expectLosses(_ run: String, equal reference: [Int: Double], _ what: String) throws {
        let got = try losses(run)
        #expect(got.count == reference.count, "\(what): \(got.count) steps logged, expected \(reference.count)")
        for (step, loss) in reference.sorted(by: { $0.key < $1.key }) {
            guard let g = got[step] else { Issue.record("\(what): step \(step) missing"); continue }
            #expect(abs(g - loss) <= 1e-5 * abs(loss), "\(what): step \(step) loss \(g), uninterrupted \(loss)")
        }
    }

    func output(_ name: String) -> String {
        (try? String(contentsOfFile: shared + "/\(name).out", encoding: .utf8)) ?? ""
    }

    // MARK: the test

    @Test("sbatch slurm.sbatch on 2 nodes: srun --mpi=pmix gives mpirun's losses; preemption requeues and resumes; bursting 1 → 2 → 1 nodes; a lost node ends the job and the requeued job resumes")
    func slurmRecipe() throws {
        // One test bed per machine; torn down however this test ends: by the defer, or, if this
        // process dies first, by the watcher `up` leaves for it (SLURM_TESTBED_OWNER).
        try? FileManager.default.createDirectory(atPath: "/run/lock", withIntermediateDirectories: true)
        let lock = open(Self.lockFile, O_CREAT | O_RDWR, 0o644)
        try #require(lock >= 0, "cannot open \(Self.lockFile)")
        flock(lock, LOCK_EX)
        defer {
            _ = try? runProcess("/bin/bash", [Self.testbed, "down"])
            flock(lock, LOCK_UN); close(lock)
            try? FileManager.default.removeItem(atPath: shared)
        }
        let clock = Date()
        // 2 nodes of 2 CPUs each: Slurm 22.05 refuses --ntasks-per-node above a node's CPUs even
        // with --overcommit, and two ranks per node are what exercise the exchange inside a node.
        var owned = cleanEnvironment()
        owned["SLURM_TESTBED_OWNER"] = "\(getpid())"
        let (up, _, upErr) = try runProcess("/bin/bash", [Self.testbed, "up", "2", "2"], env: owned)
        try #require(up == 0, "slurm-testbed.sh up failed: \(upErr)")
        let upSeconds = Date().timeIntervalSince(clock)
        #expect(try Self.nodeState("lds1") == "idle" && Self.nodeState("lds2") == "idle")

        let data = shared + "/corpus"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try (0..<300).map { "Line \($0): the rain in Spain stays mainly in the plain, \($0 % 13) times.\n" }.joined()
            .write(toFile: data + "/c.txt", atomically: true, encoding: .utf8)

        // The reference: the same training under mpirun on this machine, 4 ranks.
        let reference = shared + "/mpirun"
        let (rs, _, re) = try runProcess("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "4", TestPaths.binary, "train"]
                                         + trainArgs(data: data + "/c.txt") + ["--run-dir", reference])
        try #require(rs == 0, "mpirun reference: \(re)")
        let uninterrupted = try Self.losses(reference)
        try #require(uninterrupted.count == Self.steps)
        let corpus = data + "/c.txt"
        var figures: [String] = [String(format: "up %.1f s", upSeconds)]
        var phase = clock, phases: [String] = []
        func mark(_ name: String) { phases.append(String(format: "%@ %.1f s", name, Date().timeIntervalSince(phase))); phase = Date() }
        defer { print("slurm phases: " + phases.joined(separator: ", ")) }
        defer { print("slurm figures: " + (figures + [String(format: "total %.0f s", Date().timeIntervalSince(clock))]).joined(separator: "; ")) }

        mark("up and mpirun reference")
        // 1. Two nodes × two ranks under srun --mpi=pmix: mpirun's losses, Slurm's topology and threads.
        do {
            let run = shared + "/two-nodes"
            let submitted = Date()
            let id = try submit("two-nodes", runDir: run, ["--nodes", "2", "--ntasks-per-node", "2", "--cpus-per-task", "1"], data: corpus)
            let firstStep = try Self.wait("the first step of job \(id)", timeout: 180) { Self.lines(run + "/metrics.jsonl") > 0 }
            let end = try Self.waitForEnd(id, timeout: 180)
            let out = output("two-nodes")
            #expect(end["JobState"] == "COMPLETED" && end["ExitCode"] == "0:0", "job \(id): \(end["JobState"] ?? "?") \(end["ExitCode"] ?? "?")\n\(out)")
            #expect(end["NodeList"] == "lds[1-2]" && end["NumTasks"] == "4", "\(end)")
            try Self.expectLosses(run, equal: uninterrupted, "2 nodes × 2 ranks under srun")
            let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as? [String: Any])
            #expect(summary["nodes"] as? Int == 2 && summary["ranks_per_node"] as? Int == 2 && summary["world_size"] as? Int == 4)
            #expect(try Self.threadsPerRank(run) == 1, "--cpus-per-task 1")
            #expect(summary["weights_bytes_per_node"] as? Int == 4 * (summary["total_params"] as? Int ?? 0), "one weight copy per node")
            if let start = Self.recipeEvents(out).first(where: { $0.kind == "start" }), let t = Double(start.fields["start"] ?? "") {
                figures.append(String(format: "submit → batch start %.2f s, batch start → first step %.2f s",
                                      t - submitted.timeIntervalSince1970, firstStep.timeIntervalSince1970 - t))
            }
            // Accounting: the job completion record (jobcomp/filetxt; there is no slurmdbd).
            let (_, sacct, _) = try Self.run("sacct", ["-c", "-n", "-j", "\(id)", "-o", "jobid,state,nnodes"])
            #expect(sacct.contains("COMPLETED"), "sacct -c: \(sacct)")
        }

        mark("two nodes")
        // 2. Preemption: scancel --signal=TERM; every rank saves and exits 75, the recipe requeues,
        //    the job resumes from latest and ends with the losses of the uninterrupted run.
        do {
            let run = shared + "/preempted", metrics = run + "/metrics.jsonl"
            let id = try submit("preempted", runDir: run, ["--nodes", "2", "--ntasks-per-node", "2", "--cpus-per-task", "1"], data: corpus)
            try Self.wait("20 steps of job \(id)", timeout: 180) { Self.lines(metrics) >= 20 }
            let signalled = Date()
            try Self.run("scancel", ["--signal=TERM", "\(id)"])
            // Requeued: pending again (Slurm holds a requeued job for cred_expire seconds).
            try Self.wait("job \(id) to be requeued", timeout: 60, every: 0.05) { try Self.job(id)["Restarts"] == "1" }
            let stoppedAt = Self.lines(metrics), before = Self.metricLines(metrics)
            #expect(stoppedAt < Self.steps, "the job ended before it was signalled")
            let pending = try Self.squeueState(id)
            #expect(["PENDING", "COMPLETING", "CONFIGURING", "RUNNING"].contains(pending), "squeue after the requeue: \(pending)")
            let saved = try Self.latest(run)
            #expect(saved == stoppedAt, "the preemption checkpoint is latest")
            let resumed = try Self.wait("job \(id) to resume", timeout: 180) { Self.lines(metrics) > stoppedAt }
            let end = try Self.waitForEnd(id, timeout: 180)
            let out = output("preempted")
            #expect(end["JobState"] == "COMPLETED" && end["Restarts"] == "1", "job \(id): \(end)\n\(out)")
            // Every rank exited 75 (srun reports them per node: "task 1" or "tasks 0-1").
            let exits = out.split(separator: "\n").filter { $0.contains("Exited with exit code 75") }
            let ranks75 = exits.reduce(0) { n, line in
                guard let r = line.range(of: #"tasks? (\d+)(-(\d+))?"#, options: .regularExpression) else { return n }
                let nums = line[r].split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
                return n + (nums.count == 2 ? nums[1] - nums[0] + 1 : 1)
            }
            #expect(ranks75 == 4, "ranks that exited 75: \(ranks75)\n\(out)")
            let events = Self.recipeEvents(out)
            #expect(events.map(\.kind) == ["start", "end", "start", "end"], "\(out)")
            #expect(events.first?.fields["resume"] == "no" && events.count > 2 && events[2].fields["resume"] == "latest")
            #expect(events.count > 1 && events[1].fields["srun-exit"] == "75" && events.last?.fields["srun-exit"] == "0")
            try Self.expectLosses(run, equal: uninterrupted, "preempted and requeued")
            #expect(Array(Self.metricLines(metrics).prefix(stoppedAt)) == before, "resumed from step \(stoppedAt), not from the start")
            if events.count == 4, let exit = Double(events[1].fields["end"] ?? ""), let restart = Double(events[2].fields["start"] ?? "") {
                figures.append(String(format: "SIGTERM → every rank saved and exited %.2f s, requeue → restart %.2f s, restart → first resumed step %.2f s",
                                      exit - signalled.timeIntervalSince1970, restart - exit, resumed.timeIntervalSince1970 - restart))
            }
            let (_, sacct, _) = try Self.run("sacct", ["-c", "-n", "-j", "\(id)", "-o", "jobid,state"])
            #expect(sacct.split(separator: "\n").count == 2 && sacct.contains("COMPLETED"), "sacct -c: one record per run of the job: \(sacct)")
        }

        mark("preemption")
        // 3. Bursting: saved on 1 node, resubmitted on 2, then back on 1; one loss curve. Threads
        //    follow --cpus-per-task (SLURM_CPUS_PER_TASK): 1 where lora-dist's default would be 2, then 2.
        do {
            let run = shared + "/burst", metrics = run + "/metrics.jsonl"
            var stops: [Int] = []
            let phases: [(name: String, options: [String], ranks: Int, nodes: Int, threads: Int, stop: Bool)] = [
                ("burst-1", ["--nodes", "1", "--ntasks-per-node", "1", "--cpus-per-task", "1"], 1, 1, 1, true),
                ("burst-2", ["--nodes", "2", "--ntasks-per-node", "2", "--cpus-per-task", "1"], 4, 2, 1, true),
                ("burst-3", ["--nodes", "1", "--ntasks-per-node", "1", "--cpus-per-task", "2"], 1, 1, 2, false),
            ]
            for p in phases {
                let before = Self.lines(metrics)
                let id = try submit(p.name, runDir: run, p.options, data: corpus)
                if p.stop {
                    try Self.wait("20 steps of job \(id)", timeout: 180) { Self.lines(metrics) >= before + 20 }
                    // A plain scancel: SIGTERM to the ranks (they save and exit 75), no requeue.
                    try Self.run("scancel", ["\(id)"])
                }
                let end = try Self.waitForEnd(id, timeout: 180)
                let out = output(p.name)
                #expect(end["JobState"] == (p.stop ? "CANCELLED" : "COMPLETED"), "\(p.name): \(end)\n\(out)")
                let header = Self.headers(out).first
                #expect(header?.ranks == p.ranks && header?.nodes == p.nodes,
                        "\(p.name): \(String(describing: header)), expected \(p.ranks) ranks on \(p.nodes) nodes")
                let threads = try Self.threadsPerRank(run)
                #expect(threads == p.threads, "\(p.name): \(threads) threads per rank, expected \(p.threads) (SLURM_CPUS_PER_TASK)")
                if p.stop {
                    let stopped = Self.lines(metrics), saved = try Self.latest(run)
                    #expect(stopped < Self.steps && out.contains("stopped after step \(stopped)") && saved == stopped,
                            "\(p.name) saved step \(stopped)\n\(out)")
                    let m = try CheckpointFiles.readManifest(run + "/checkpoints/" + String(format: "step-%07d", stopped))
                    #expect(m.worldSize == p.ranks && m.nodes == p.nodes, "\(p.name)'s checkpoint: \(m.worldSize) ranks on \(m.nodes) nodes")
                    stops.append(stopped)
                }
            }
            #expect(stops.count == 2 && stops[0] < stops[1])
            try Self.expectLosses(run, equal: uninterrupted, "1 → 2 → 1 nodes")
        }

        mark("bursting")
        // 4. A node lost mid-run (its link cut, its slurmd, step daemons and ranks killed): Slurm ends
        //    the job (NODE_FAIL) instead of leaving it hanging, and, the recipe being --requeue,
        //    requeues it; once the node is back the job resumes from the last checkpoint.
        do {
            let run = shared + "/node-lost", metrics = run + "/metrics.jsonl"
            let id = try submit("node-lost", runDir: run, ["--nodes", "2", "--ntasks-per-node", "2", "--cpus-per-task", "1"], data: corpus)
            try Self.wait("a checkpoint at step 40 of job \(id)", timeout: 180) {
                Self.lines(metrics) >= 45 && FileManager.default.fileExists(atPath: run + "/checkpoints/step-0000040")
            }
            let failed = Date()
            let (fs, _, fe) = try runProcess("/bin/bash", [Self.testbed, "fail", "lds2"])
            try #require(fs == 0, "slurm-testbed.sh fail lds2: \(fe)")
            let ended = try Self.wait("job \(id) to end after losing lds2", timeout: 60, every: 0.1) {
                let j = try Self.job(id)
                return j["Restarts"] == "1" || Self.finished.contains(j["JobState"] ?? "")
            }
            let last = Self.lines(metrics)
            let before = Self.metricLines(metrics)
            let checkpoint = try Self.latest(run)
            #expect(checkpoint >= 40 && checkpoint % 20 == 0 && checkpoint <= last, "latest checkpoint \(checkpoint), \(last) steps logged")
            #expect(try Self.nodeState("lds2").hasPrefix("down"), "sinfo: lds2 is down")
            try #require(try Self.job(id)["Restarts"] == "1", "Slurm requeued the job")
            // The requeued job waits for two nodes (once the first run has completed on lds1).
            try Self.wait("job \(id) pending", timeout: 60, every: 0.2) { try Self.squeueState(id) == "PENDING" }
            let restored = Date()
            let (rs2, _, re2) = try runProcess("/bin/bash", [Self.testbed, "restore", "lds2"])
            try #require(rs2 == 0, "slurm-testbed.sh restore lds2: \(re2)")
            let end = try Self.waitForEnd(id, timeout: 180)
            let out = output("node-lost")
            #expect(end["JobState"] == "COMPLETED", "job \(id): \(end)\n\(out)")
            let events = Self.recipeEvents(out)
            #expect(events.last(where: { $0.kind == "start" })?.fields["resume"] == "latest", "\(out)")
            // Resumed from the last checkpoint: the steps up to it are the first run's records
            // (their timings too), the later ones trained again.
            let after = Self.metricLines(metrics)
            #expect(after.count == Self.steps && checkpoint >= 0 && Array(after.prefix(checkpoint)) == Array(before.prefix(checkpoint))
                    && (before.count == checkpoint || after.dropFirst(checkpoint).first != before.dropFirst(checkpoint).first),
                    "resumed from step \(checkpoint) after \(last) steps")
            try Self.expectLosses(run, equal: uninterrupted, "a node lost and the job requeued")
            let restart = events.last(where: { $0.kind == "start" }).flatMap { Double($0.fields["start"] ?? "") } ?? .nan
            let exit = events.last.flatMap { Double($0.fields["end"] ?? "") } ?? .nan
            figures.append(String(format: "node lost → job ended and requeued %.1f s, node back → restart %.1f s, restart → srun exit %.1f s, → COMPLETED seen %.1f s",
                                  ended.timeIntervalSince(failed), restart - restored.timeIntervalSince1970, exit - restart,
                                  Date().timeIntervalSince1970 - exit))
            mark("node lost")
        }
    }
}
