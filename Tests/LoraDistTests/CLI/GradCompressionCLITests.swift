import Foundation
import Testing
@testable import LoraDist

/// --grad-compression under mpirun: the 16-bit exchange against the rounded-then-summed
/// reference, every mode on both strategies with the bytes counted, PowerSGD's state across a
/// resume on other world sizes, and the refusals.
@Suite(.serialized, .tags(.cli)) struct GradCompressionCLITests {
    static func mpi(_ n: Int, _ args: [String]) throws -> (Int32, String, String) {
        try runProcess("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "\(n)", TestPaths.binary] + args)
    }

    static func corpus() throws -> String {
        try writeCorpus("gc-corpus") { "Line \($0): gradients travel in sixteen bits or as low-rank factors, \($0 % 11) ways." }
    }

    static func metrics(_ run: String) throws -> [[String: Any]] {
        try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
    }

    static func summary(_ run: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as? [String: Any])
    }

    static func train(_ n: Int, run: String, data: String, _ extra: [String]) throws {
        let (status, _, err) = try mpi(n, ["train", "--model", "tiny", "--data", data, "--steps", "4", "--batch", "6", "--seq", "24",
                                           "--lr", "5e-3", "--warmup", "1", "--eval-seqs", "4", "--eval-every", "100", "--quiet",
                                           "--rank", "4", "--run-dir", run] + extra)
        try #require(status == 0, "mpirun -n \(n) \(extra) exited \(status): \(err)")
    }

    @Test("bf16 / fp16 exchange over 3 ranks equals round16(Σ round16(x_r)), summed in fp32 in rank order",
          arguments: ["bf16", "fp16"])
    func halfExchange(_ format: String) throws {
        let dir = TestPaths.tempDir("gc-half-\(format)")
        let n = 1001  // blocks of 334, 334 and 333
        let (status, _, err) = try Self.mpi(3, ["bench", "allreduce", "--grad-compression", format, "--dump", dir, "--dump-count", "\(n)"])
        try #require(status == 0, "\(err)")
        let half: HalfFormat = format == "bf16" ? .bf16 : .fp16
        let files = try (0..<3).map { r -> [Float] in
            let d = try Data(contentsOf: URL(fileURLWithPath: dir + "/rank-\(r).f32"))
            return d.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        var reference = [Float](repeating: 0, count: n)
        for r in 0..<3 { for i in 0..<n { reference[i] += half.rounded(files[r][i]) } }
        reference = reference.map { half.rounded($0) }
        for r in 0..<3 {
            let out = Array(files[r][n...])
            #expect(out.count == n)
            let differing = (0..<n).filter { out[$0].bitPattern != reference[$0].bitPattern }.count
            #expect(differing == 0, "rank \(r): \(differing) of \(n) values differ from the reference")
        }
        // Not a plain fp32 sum: the rounding shows.
        let exact = (0..<n).map { i in files[0][i] + files[1][i] + files[2][i] }
        #expect((0..<n).contains { exact[$0] != reference[$0] })
    }

    @Test("every mode trains with every method on flat and hierarchical exchange; the bytes counted per method",
          arguments: ["lora", "qlora", "full"])
    func everyMode(_ mode: String) throws {
        let data = try Self.corpus()
        let root = TestPaths.tempDir("gc-modes")
        do {
            var flatBytes: [String: Int] = [:]
            for method in ["none", "bf16", "fp16", "powersgd"] {
                for exchange in ["flat", "hierarchical"] where method != "none" || exchange == "flat" {
                    let run = "\(root)/\(mode)-\(method)-\(exchange)"
                    try Self.train(2, run: run, data: data, ["--mode", mode, "--grad-compression", method, "--exchange", exchange,
                                                             "--powersgd-start-step", "3", "--powersgd-rank", "2"])
                    let m = try Self.metrics(run), s = try Self.summary(run)
                    #expect(m.allSatisfy { ($0["loss"] as? Double)?.isFinite == true }, "\(run)")
                    #expect(m.allSatisfy { $0["grad_compression"] as? String == method }, "\(run)")
                    #expect(s["grad_compression"] as? String == method)
                    let bytes = m.map { $0["exchange_bytes"] as! Int }
                    #expect(s["exchange_bytes_total"] as? Int == bytes.reduce(0, +), "\(run)")
                    if exchange == "flat" { flatBytes[method] = bytes[0] }
                    if method == "powersgd" {
                        // Plain fp32 before the start step; PowerSGD's factors from it on (fewer under full
                        // fine-tuning, where matrices compress; LoRA's thin adapters go uncompressed).
                        #expect(bytes[0] == bytes[1] && bytes[2] == bytes[3])
                        let p = try #require(s["powersgd"] as? [String: Any])
                        #expect(p["rank"] as? Int == 2 && p["start_step"] as? Int == 3)
                        if mode == "full" { #expect(bytes[2] < bytes[1] / 2, "\(run): \(bytes)") }
                    } else {
                        #expect(Set(bytes).count == 1)
                    }
                }
            }
            // 16 bits a value on the wire: half of fp32's bytes.
            let none = try #require(flatBytes["none"])
            #expect(flatBytes["bf16"] == none / 2 && flatBytes["fp16"] == none / 2, "\(mode): \(flatBytes)")
        }
    }

    /// Under full fine-tuning and under LoRA on every linear layer (whose fused groups' A
    /// matrices are adjacent in the arena: each Q is saved under its tensor's name).
    @Test("PowerSGD's error feedback and Q are checkpointed: a resume on 1 or 3 ranks continues the 2-rank run")
    func powerSGDResume() throws {
        let data = try Self.corpus()
        let root = TestPaths.tempDir("gc-resume")
        let common = ["--mode", "full", "--grad-compression", "powersgd", "--powersgd-rank", "2", "--powersgd-start-step", "2",
                      "--steps", "6"]
        for mode in ["full", "lora"] {
          let common = mode == "full" ? common : common + ["--mode", "lora", "--targets", "all-linear", "--rank", "16"]
          try Self.train(2, run: root + "/whole-\(mode)", data: data, common)
          let whole = try Self.metrics(root + "/whole-\(mode)").map { $0["loss"] as! Double }
          for n in [1, 3] {
            let run = "\(root)/parts-\(mode)-\(n)"
            let (st, _, err) = try Self.mpi(2, ["train", "--model", "tiny", "--data", data, "--batch", "6", "--seq", "24", "--lr", "5e-3",
                                                 "--warmup", "1", "--eval-seqs", "4", "--eval-every", "100", "--quiet", "--run-dir", run,
                                                 "--stop-after", "4"] + common)
            try #require(st == Preemption.exitCode, "\(err)")
            try Self.train(n, run: run, data: data, common + ["--resume", "latest"])
            let parts = try Self.metrics(run).map { $0["loss"] as! Double }
            #expect(parts.count == 6)
            for i in 0..<6 {
                #expect(abs(parts[i] - whole[i]) <= 1e-5 * abs(whole[i]), "\(mode), \(n) ranks, step \(i + 1): \(parts[i]) vs \(whole[i])")
            }
            let (si, _, ei) = try runProcess(TestPaths.binary, ["inspect", run + "/checkpoints/step-0000004"], env: cleanEnvironment())
            #expect(si == 0, "inspect of a checkpoint with PowerSGD state: \(ei)")
            // Each compressed tensor's Q under its own name, [cols, r]: some there, none flat.
            let qs = try CheckpointFiles.readManifest(run + "/checkpoints/step-0000004").slices.filter { $0.kind == "powersgd_q" }
            #expect(!qs.isEmpty && qs.allSatisfy { $0.name != "powersgd.q" && $0.shape.count == 2 && $0.shape[1] == 2 }, "\(mode): \(qs.map(\.name))")
            if mode == "lora" { #expect(qs.contains { $0.name.hasSuffix("k_proj.lora_A.weight") }) }
          }
        }
        // A checkpoint with PowerSGD state, for the refusals below.
        let lost = root + "/lost"
        _ = try Self.mpi(2, ["train", "--model", "tiny", "--data", data, "--batch", "6", "--seq", "24", "--lr", "5e-3", "--warmup", "1",
                             "--eval-seqs", "4", "--eval-every", "100", "--quiet", "--run-dir", lost, "--stop-after", "4"] + common)
        // Another method or rank on a checkpoint with PowerSGD state: one line, every rank non-zero.
        for other in [["--grad-compression", "none"], ["--powersgd-rank", "4"]] {
            var args = common
            for k in stride(from: 0, to: other.count, by: 2) {
                if let at = args.firstIndex(of: other[k]) { args[at + 1] = other[k + 1] }
            }
            let (st, out, err) = try Self.mpi(2, ["train", "--model", "tiny", "--data", data, "--batch", "6", "--seq", "24", "--quiet",
                                                   "--run-dir", lost, "--resume", "latest"] + args)
            #expect(st != 0)
            #expect(out.isEmpty)
            let lines = err.split(separator: "\n").filter { $0.contains("PowerSGD state") }
            #expect(lines.count >= 1 && lines.allSatisfy { $0.contains("--powersgd-rank 2") }, "\(err)")
        }
    }

    @Test("--grad-compression takes none, bf16, fp16, powersgd; a recipe sets it like a flag")
    func flagAndRecipe() throws {
        let data = try Self.corpus()
        let dir = TestPaths.tempDir("gc-flag")
        let (st, _, err) = try runProcess(TestPaths.binary, ["train", "--model", "tiny", "--data", data, "--grad-compression", "zip",
                                                              "--run-dir", dir + "/run"])
        #expect(st != 0 && err.contains("--grad-compression"), "\(err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/run"))
        let recipe = dir + "/r.yaml"
        try "grad-compression: powersgd\npowersgd-rank: 16\npowersgd-start-step: 5\n".write(toFile: recipe, atomically: true, encoding: .utf8)
        let (st2, out, err2) = try runProcess(TestPaths.binary, ["train", "--config", recipe, "--print-config"])
        #expect(st2 == 0, "\(err2)")
        #expect(out.contains("grad-compression: powersgd") && out.contains("powersgd-rank: 16") && out.contains("powersgd-start-step: 5"), "\(out)")
    }
}
