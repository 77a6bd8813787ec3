import Foundation
import Testing
@testable import LoraDist
import CPUFeatures

/// Multi-rank behaviour under the real mpirun (OpenMPI), launched from the test.
@Suite(.serialized, .tags(.cli)) struct MultiRankCLITests {
    static let mpirun = "/usr/bin/mpirun"

    /// mpirun -n N lora-dist ARGS, with the singleton-MPI variables of this process stripped.
    @discardableResult
    static func launch(_ n: Int, _ args: [String]) throws -> (Int32, String, String) {
        try runProcess(mpirun, ["--allow-run-as-root", "--oversubscribe", "-n", "\(n)", TestPaths.binary] + args)
    }

    static func corpus() throws -> String {
        try writeCorpus("mr-corpus") { "Line \($0): the rain in Spain stays mainly in the plain, \($0 % 13) times." }
    }

    struct Run {
        let losses: [Double]
        let weights: SafeTensors
        let summary: [String: Any]
        let metrics: [[String: Any]]
    }

    static func train(ranks: Int, mode: String, exchange: String, batch: Int, data: String,
                      extra: [String] = []) throws -> Run {
        let dir = TestPaths.tempDir("mr-\(ranks)-\(mode)-\(exchange)")
        let args = ["train", "--model", "tiny", "--mode", mode, "--data", data, "--steps", "4", "--batch", "\(batch)",
                    "--seq", "24", "--lr", "5e-3", "--rank", "4", "--warmup", "1", "--eval-seqs", "4", "--quiet",
                    "--exchange", exchange, "--run-dir", dir + "/run", "--export-merged", dir + "/merged"] + extra
        let (status, _, err) = try launch(ranks, args)
        try #require(status == 0, "mpirun -n \(ranks) exited \(status): \(err)")
        let metrics = try String(contentsOfFile: dir + "/run/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/run/summary.json"))) as? [String: Any])
        return Run(losses: metrics.map { $0["loss"] as! Double }, weights: try SafeTensors(path: dir + "/merged/model.safetensors"),
                   summary: summary, metrics: metrics)
    }

    /// Same seed and global batch on 1, 2, 4 and 8 ranks, flat and hierarchical:
    /// the same loss at every step (relative 1e-5) and the same final weights
    /// (max |Δ| ≤ 1e-5; only the order of fp32 sums differs). The batch of 5 does
    /// not divide among 2, 4 or 8 ranks, and at 8 ranks three get no sequence.
    @Test("1, 2, 4 and 8 ranks train the same model", arguments: ["lora", "qlora", "full"])
    func equivalence(mode: String) throws {
        let data = try Self.corpus()
        let ref = try Self.train(ranks: 1, mode: mode, exchange: "hierarchical", batch: 5, data: data)
        // One rank splits its sequences over model replicas (threads) by default; one model or three agree too.
        for replicas in [1, 3] {
            let r = try Self.train(ranks: 1, mode: mode, exchange: "hierarchical", batch: 5, data: data,
                                   extra: ["--replicas", "\(replicas)"])
            #expect(r.summary["replicas"] as? Int == replicas)
            for (a, b) in zip(r.losses, ref.losses) { #expect(abs(a - b) <= 1e-5 * abs(b), "\(replicas) replicas: loss \(a) vs \(b)") }
            var worst: Float = 0
            for name in ref.weights.names {
                let x = try r.weights.floats(name), y = try ref.weights.floats(name)
                for i in 0..<x.count { worst = max(worst, abs(x[i] - y[i])) }
            }
            #expect(worst <= 1e-5, "\(replicas) replicas: weights differ by \(worst)")
        }
        for ranks in [2, 4, 8] {
            for exchange in ["flat", "hierarchical"] {
                let r = try Self.train(ranks: ranks, mode: mode, exchange: exchange, batch: 5, data: data)
                for (a, b) in zip(r.losses, ref.losses) {
                    #expect(abs(a - b) <= 1e-5 * abs(b), "\(ranks) ranks \(exchange): loss \(a) vs \(b)")
                }
                var worst: Float = 0
                for name in ref.weights.names {
                    let x = try r.weights.floats(name), y = try ref.weights.floats(name)
                    for i in 0..<x.count { worst = max(worst, abs(x[i] - y[i])) }
                }
                #expect(worst <= 1e-5, "\(ranks) ranks \(exchange): weights differ by \(worst)")
                #expect(r.summary["world_size"] as? Int == ranks)
                #expect(r.metrics.allSatisfy { $0["world_size"] as? Int == ranks && $0["exchange"] as? String == exchange })
            }
        }
    }

    @Test("only the trainable set is exchanged, and the bytes follow the collective's cost")
    func accounting() throws {
        let data = try Self.corpus()
        let lora = try Self.train(ranks: 4, mode: "lora", exchange: "flat", batch: 4, data: data)
        let full = try Self.train(ranks: 4, mode: "full", exchange: "flat", batch: 4, data: data)
        let loraParams = lora.summary["trainable_params"] as! Int, fullParams = full.summary["trainable_params"] as! Int
        // flat ring allreduce on one node: 2(p−1)/p · 4 bytes · parameters, all inside the node
        #expect(lora.metrics[0]["exchange_bytes"] as? Int == Int(2.0 * 3 / 4 * 4 * Double(loraParams)))
        #expect(lora.metrics[0]["exchange_bytes_intra"] as? Int == lora.metrics[0]["exchange_bytes"] as? Int)
        #expect(lora.metrics[0]["exchange_bytes_inter"] as? Int == 0)
        #expect(lora.metrics[0]["exchanged_params"] as? Int == loraParams)
        #expect(full.metrics[0]["exchanged_params"] as? Int == fullParams)
        #expect(lora.summary["full_ft_exchange_bytes_per_step"] as? Int == full.summary["exchange_bytes_per_step"] as? Int)
        let ratio = lora.summary["exchange_ratio"] as! Double
        #expect(abs(ratio - Double(loraParams) / Double(fullParams)) < 1e-5)
        // hierarchical on one node: a reduce-scatter, (p−1)/p of the gradient
        let hier = try Self.train(ranks: 4, mode: "lora", exchange: "hierarchical", batch: 4, data: data)
        #expect(hier.metrics[0]["exchange_bytes"] as? Int == Int(3.0 / 4 * 4 * Double(loraParams)))
        for m in lora.metrics {
            let wait = m["comm_wait_s"] as! Double, compute = m["compute_s"] as! Double
            #expect(wait >= 0 && compute > 0)
        }
        #expect((lora.summary["node_memory_bytes"] as! Int) > 0)
        // 4 ranks on this machine's cores: OpenBLAS threads are the cores shared among the ranks
        let cores = ProcessInfo.processInfo.activeProcessorCount
        #expect(lora.summary["blas_threads"] as? Int == max(1, cores / 4))
        // OpenBLAS's kernels at least AVX2's where the CPU has AVX2: a fallback below it (OpenBLAS 0.3.21
        // takes newer Intel CPUs for Prescott) is replaced before the run starts (BLASCore).
        let core = try #require(lora.summary["blas_core"] as? String)
        let best = BLASCore.best(flags: CPUFeatures.current())
        #expect(BLASCore.level(core).map { $0 >= min(best?.level ?? 1, 3) } == true, "OpenBLAS runs \(core) kernels")
    }

    @Test("bad input under mpirun: one line, every rank exits non-zero, nothing written")
    func badInput() throws {
        let dir = TestPaths.tempDir("mr-bad")
        let (status, out, err) = try Self.launch(4, ["train", "--model", "tiny", "--data", dir + "/missing", "--run-dir", dir + "/run"])
        #expect(status != 0)
        let lines = err.split(separator: "\n").filter { $0.contains("lora-dist: error:") }
        #expect(lines.count == 1, "\(err)")
        #expect(lines.first?.contains("does not exist") == true)
        #expect(out.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir + "/run"))
    }

    /// lr · weight decay = 10 multiplies every weight by −9 a step: the weights blow up within
    /// tens of steps (an lr of 1e30, the old way to diverge, is now refused up front).
    @Test("a diverging run stops every rank with one message and keeps its last finite checkpoint")
    func divergence() throws {
        let data = try Self.corpus()
        let dir = TestPaths.tempDir("mr-nan")
        let (status, _, err) = try Self.launch(2, ["train", "--model", "tiny", "--mode", "full", "--data", data, "--steps", "300",
                                                   "--batch", "2", "--seq", "16", "--lr", "10", "--weight-decay", "1", "--clip", "0",
                                                   "--warmup", "0", "--save-every", "1", "--quiet", "--run-dir", dir])
        #expect(status != 0)
        let lines = err.split(separator: "\n").filter { $0.contains("lora-dist: error:") }
        #expect(lines.count == 1, "\(err)")
        #expect(lines.first?.contains("diverged") == true)
        // the last checkpoint is the last finite one: every weight finite, and it verifies
        let loaded = try CheckpointModel.load(dir, model: nil, needsBase: true)
        #expect(loaded.manifest.step >= 1)
        #expect(loaded.model.store.firstNonFinite(owned: loaded.model.store.all) == nil)
        #expect(try CheckpointInspector.inspect(loaded.dir).problems.isEmpty)
    }

    @Test("a rank killed with SIGKILL ends the job non-zero within 30 seconds")
    func killedRank() throws {
        let data = try Self.corpus()
        let dir = TestPaths.tempDir("mr-kill")
        let job = try BackgroundJob(ranks: 4, ["train", "--model", "tiny", "--data", data, "--steps", "1000000", "--batch", "4",
                                               "--seq", "16", "--quiet", "--run-dir", dir], runDir: dir)
        // Wait until training runs (rank 0 has written a step), then kill one rank.
        try job.waitFor()
        let ranks = try job.ranks()
        try #require(ranks.count >= 4, "rank pids: \(ranks)")
        kill(ranks[ranks.count - 1], SIGKILL)
        let ended = job.waitUntilExit(timeout: 30)
        let p = job.launcher
        #expect(ended, "mpirun still running 30 s after a rank was killed")
        if ended { #expect(p.terminationStatus != 0) }
    }
}
