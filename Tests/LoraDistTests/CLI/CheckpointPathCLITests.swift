import Foundation
import Testing
@testable import LoraDist

/// Every command that takes a checkpoint (export, eval, generate, inspect, train --resume) takes it in
/// each of the four forms a user finds on disk: the run directory, its checkpoints folder, a
/// step directory and the `latest` pointer file (CheckpointInspector.locate resolves them all).
@Suite(.serialized, .tags(.cli)) struct CheckpointPathCLITests {
    /// One LoRA run of the tiny model saved at steps 2 and 4 (latest: step 4).
    final class Run {
        let root: String, run: String, data: String
        init() throws {
            root = TestPaths.tempDir("ckpt-paths")
            run = root + "/run"
            data = try writeCorpus("ckpt-paths-data", lines: 200) { "line \($0): the quick brown fox jumps over the lazy dog" } + "/c.txt"
            let (status, _, err) = try runProcess(TestPaths.binary, ["train"] + CheckpointPathCLITests.train(data) + ["--steps", "4", "--run-dir", run])
            guard status == 0 else { throw LoraDistError("train exited \(status): \(err)") }
        }
    }
    nonisolated(unsafe) static let shared: Result<Run, Error> = Result { try Run() }

    static func train(_ data: String) -> [String] {
        ["--model", "tiny", "--mode", "lora", "--data", data, "--batch", "2", "--seq", "16", "--save-every", "2",
         "--threads", "1", "--quiet"]
    }

    /// The four forms, for a run directory `run` whose latest checkpoint is step 4.
    static func forms(_ run: String) -> [(String, String)] {
        [("run directory", run), ("checkpoints folder", run + "/checkpoints"),
         ("step directory", run + "/checkpoints/" + CheckpointFiles.stepName(4)), ("latest pointer file", run + "/checkpoints/latest")]
    }

    @Test("CheckpointInspector.locate: the four forms name the same step directory; resume's names too")
    func locate() throws {
        let r = try Self.shared.get()
        let step4 = r.run + "/checkpoints/" + CheckpointFiles.stepName(4)
        for (what, path) in Self.forms(r.run) {
            let dir = try CheckpointInspector.locate(path)
            #expect(URL(fileURLWithPath: dir).standardizedFileURL.path == URL(fileURLWithPath: step4).standardizedFileURL.path, "\(what)")
        }
        let root = r.run + "/checkpoints"
        #expect(try CheckpointInspector.locate("latest", checkpoints: root) == step4)
        #expect(try CheckpointInspector.locate("4", checkpoints: root) == step4)
        #expect(try CheckpointInspector.locate("2", checkpoints: root) == root + "/" + CheckpointFiles.stepName(2))
        #expect(try CheckpointInspector.locate(CheckpointFiles.stepName(4), checkpoints: root) == step4)
        // what is not a checkpoint says so
        func message(_ body: () throws -> Void) -> String? {
            do { try body(); return nil } catch { return "\(error)" }
        }
        let broken = TestPaths.tempDir("ckpt-paths-broken")
        try FileManager.default.createDirectory(atPath: broken + "/step-0000009", withIntermediateDirectories: true)
        try "step-0000009\n".write(toFile: broken + "/latest", atomically: true, encoding: .utf8)
        try "hello\nworld\n".write(toFile: broken + "/notes.txt", atomically: true, encoding: .utf8)
        #expect(message { _ = try CheckpointInspector.locate(broken + "/step-0000009") }?.contains("not a complete checkpoint") == true)
        #expect(message { _ = try CheckpointInspector.locate(broken + "/latest") }?.contains("not a complete checkpoint") == true)
        #expect(message { _ = try CheckpointInspector.locate(broken + "/notes.txt") }?.contains("not a checkpoint pointer") == true)
        #expect(message { _ = try CheckpointInspector.locate(broken + "/nothing") }?.contains("does not exist") == true)
        // a pointer leads only to a step directory beside it, never into another run
        for escape in ["../../other-run/checkpoints/step-0000004", "..", "/tmp", "step-4/../../x"] {
            try (escape + "\n").write(toFile: broken + "/escape", atomically: true, encoding: .utf8)
            #expect(message { _ = try CheckpointInspector.locate(broken + "/escape") }?.contains("not a checkpoint pointer") == true, "\(escape)")
        }
        #expect(message { _ = try CheckpointInspector.locate("9", checkpoints: root) }?.contains("does not exist") == true)
    }

    @Test("export, eval, generate and inspect take a run directory, its checkpoints folder, a step directory and the latest file")
    func commands() throws {
        let r = try Self.shared.get()
        var adapters: [Data] = [], evals: [String] = [], generated: [String] = []
        for (what, path) in Self.forms(r.run) {
            let out = r.root + "/export-\(adapters.count)"
            let (s1, _, e1) = try runProcess(TestPaths.binary, ["export", "--format", "peft", "--checkpoint", path, "--out", out])
            #expect(s1 == 0, "export --checkpoint \(what): \(e1)")
            adapters.append(FileManager.default.contents(atPath: out + "/adapter_model.safetensors") ?? Data())

            let (s2, o2, e2) = try runProcess(TestPaths.binary, ["eval", "--model", "tiny", "--data", r.data, "--checkpoint", path,
                                                                 "--seq", "16", "--windows", "4"])
            #expect(s2 == 0, "eval --checkpoint \(what): \(e2)")
            // "<checkpoint> on <data>: loss ..." — the part from "loss" on must not depend on the form
            evals.append(o2.range(of: "loss ").map { String(o2[$0.lowerBound...]) } ?? "no loss in: \(o2)")

            let (s4, o4, e4) = try runProcess(TestPaths.binary, ["generate", "--checkpoint", path, "--prompt", "line 3: the",
                                                                 "--max-new-tokens", "4", "--ids"])
            #expect(s4 == 0, "generate --checkpoint \(what): \(e4)")
            generated.append(o4)

            let (s3, o3, e3) = try runProcess(TestPaths.binary, ["inspect", path])
            #expect(s3 == 0, "inspect \(what): \(e3)")
            #expect(o3.contains("step        4 "), "inspect \(what): \(o3.prefix(300))")
            #expect(o3.contains("every checksum matches"), "inspect \(what)")
        }
        #expect(adapters.allSatisfy { !$0.isEmpty && $0 == adapters[0] }, "the four exports differ")
        #expect(Set(evals).count == 1, "\(evals)")
        #expect(Set(generated).count == 1 && !generated[0].isEmpty, "\(generated)")
    }

    @Test("train --resume takes a run directory, its checkpoints folder, a step directory and the latest file")
    func resume() throws {
        let r = try Self.shared.get()
        for (i, (what, _)) in Self.forms(r.run).enumerated() {
            // a copy per form: resuming repoints latest and saves later steps
            let copy = r.root + "/resume-\(i)"
            try FileManager.default.copyItem(atPath: r.run, toPath: copy)
            let path = Self.forms(copy)[i].1
            let (status, _, err) = try runProcess(TestPaths.binary, ["train"] + Self.train(r.data) + ["--steps", "6", "--run-dir", copy, "--resume", path])
            #expect(status == 0, "--resume \(what): \(err)")
            #expect(CheckpointFiles.latest(copy + "/checkpoints") == CheckpointFiles.stepName(6), "--resume \(what)")
            let lines = (try? String(contentsOfFile: copy + "/metrics.jsonl", encoding: .utf8))?.split(separator: "\n") ?? []
            let steps = lines.compactMap { line -> Int? in
                let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                return (o?["step"] as? NSNumber)?.intValue
            }
            #expect(steps == [1, 2, 3, 4, 5, 6], "--resume \(what): steps logged \(steps)")
        }
        // A form that names nothing fails with one line, before anything else is printed.
        let (status, out, err) = try runProcess(TestPaths.binary, ["train"] + Self.train(r.data) + ["--steps", "6", "--run-dir", r.root + "/fresh",
                                                                                                     "--resume", r.root + "/fresh"])
        #expect(status != 0)
        #expect(out.isEmpty)
        #expect(err.split(separator: "\n").count == 1 && err.hasPrefix("lora-dist: error: "), "\(err)")
    }
}
