import Foundation
import Testing
@testable import LoraDist

/// Several PEFT adapters through the binary: `adapters combine`, eval and generate with several
/// `--adapter NAME=DIR` (the base loaded once, one line per adapter, the same numbers as each
/// adapter alone; eval under mpirun too), `export --format merged --adapter ...`, and bad input.
/// The numbers themselves are checked against peft in-process (AdapterCombineTests).
@Suite(.serialized, .tags(.cli)) struct AdapterCLITests {
    static let dir = AdapterCombineTests.dir
    static var base: String { dir + "/base" }
    static func adapter(_ name: String) -> [String] { ["--adapter", "\(name)=\(dir)/\(name)"] }

    static func run(_ args: [String]) throws -> (Int32, String, String) { try runProcess(TestPaths.binary, args) }

    /// A failure: non-zero exit, one line on stderr naming the problem.
    static func expectRefused(_ args: [String], _ want: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (status, out, err) = try run(args)
        #expect(status != 0, "\(args) exited 0: \(out)", sourceLocation: sourceLocation)
        let lines = err.split(separator: "\n")
        #expect(lines.count == 1 && err.hasPrefix("lora-dist: error: ") && err.contains(want),
                "\(args): want one line with '\(want)', got: \(err)", sourceLocation: sourceLocation)
    }

    static func lines(_ s: String) -> [String] { s.split(separator: "\n").map(String.init) }

    @Test("adapters combine writes what the library computes (peft's combination), and says what it wrote")
    func combine() throws {
        let out = TestPaths.tempDir("cli-combine")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let (s, o, e) = try Self.run(["adapters", "combine"] + Self.adapter("legal") + Self.adapter("medical") + Self.adapter("code")
                                     + ["--weights", "0.5,-0.3,0.2", "--method", "cat", "--out", out + "/cat", "--model", Self.base])
        try #require(s == 0, "\(e)")
        #expect(o.contains("wrote cat combination 0.5·legal + -0.3·medical + 0.2·code") && o.contains("r 10, lora_alpha 10"), "\(o)")
        let want = try AdapterCombine.combine(["legal", "medical", "code"].map(AdapterCombineTests.adapter), weights: [0.5, -0.3, 0.2], method: .cat)
        let st = try SafeTensors(path: out + "/cat/adapter_model.safetensors")
        #expect(st.names == want.tensors.map(\.name).sorted())
        for t in want.tensors { #expect(try st.floats(t.name) == t.values, "\(t.name)") }
        #expect(try PEFTAdapter(name: "cat", dir: out + "/cat").lora == want.lora)
    }

    @Test("bad input to adapters combine: one line, non-zero exit")
    func combineRefusals() throws {
        let out = TestPaths.tempDir("cli-combine-bad")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let c = ["adapters", "combine", "--out", out + "/x"]
        try Self.expectRefused(c + Self.adapter("legal") + Self.adapter("code") + ["--weights", "1,1", "--method", "linear"],
                               "linear needs adapters of one rank: legal has r 4, code r 2")
        try Self.expectRefused(c + Self.adapter("legal") + Self.adapter("brief") + ["--weights", "1,1", "--method", "linear"],
                               "linear needs adapters on the same target modules")
        try Self.expectRefused(c + Self.adapter("legal") + ["--adapter", "legal=\(Self.dir)/medical", "--weights", "1,1", "--method", "cat"],
                               "adapter name 'legal' is given twice")
        try Self.expectRefused(c + Self.adapter("legal") + Self.adapter("medical") + ["--weights", "1", "--method", "cat"],
                               "--weights has 1 value for 2 adapters")
        try Self.expectRefused(c + Self.adapter("legal") + Self.adapter("medical") + ["--weights", "0.5,nan", "--method", "linear"],
                               "nan is not a finite number")
        try Self.expectRefused(c + Self.adapter("legal") + Self.adapter("foreign") + ["--weights", "1,1", "--method", "cat"],
                               "were made for different bases")
        try Self.expectRefused(c + Self.adapter("foreign") + ["--weights", "1", "--method", "cat", "--model", Self.base],
                               "the adapter was made for another base")
        try Self.expectRefused(c + ["--adapter", "gone=/nonexistent", "--weights", "1", "--method", "cat"],
                               "/nonexistent/adapter_config.json does not exist")
        try Self.expectRefused(c + ["--weights", "1", "--method", "cat"], "--adapter NAME=DIR is needed")
        try Self.expectRefused(c + Self.adapter("legal") + ["--weights", "1", "--method", "svd"], "svd")
        #expect(!FileManager.default.fileExists(atPath: out + "/x"), "a refused combination wrote its output")
    }

    static func corpus() throws -> String {
        try writeCorpus("adapters-eval", lines: 80) { "Line \($0): the quick brown fox jumps over the lazy dog, \($0 % 7) times." } + "/c.txt"
    }

    /// "NAME on DATA: loss X nats/token, ..." → NAME and the rest after it.
    static func split(_ line: String) -> (String, String) {
        let r = line.range(of: " on ")!
        return (String(line[..<r.lowerBound]), String(line[r.lowerBound...]))
    }

    @Test("eval with several adapters: the base loaded once, one line per adapter, each the number of that adapter alone; the same under mpirun -n 2")
    func eval() throws {
        let data = try Self.corpus()
        defer { try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent) }
        let common = ["eval", "--model", Self.base, "--data", data, "--seq", "16", "--windows", "6", "--batch", "2"]
        let names = ["legal", "code", "medical"]
        let (s, o, e) = try Self.run(common + names.flatMap(Self.adapter))
        try #require(s == 0, "\(e)")
        let lines = Self.lines(o)
        try #require(lines.count == 3, "\(o)")
        #expect(lines.map { Self.split($0).0 } == names)
        var seen: Set<String> = []
        for (name, line) in zip(names, lines) {
            let (s1, o1, e1) = try Self.run(common + Self.adapter(name))
            try #require(s1 == 0, "\(e1)")
            #expect(Self.lines(o1) == [line], "\(name) alone: \(o1) vs in a set: \(line)")
            seen.insert(Self.split(line).1)
        }
        let (_, plain, _) = try Self.run(common)
        seen.insert(Self.split(Self.lines(plain)[0]).1)
        #expect(seen.count == 4, "the adapters and the base should give four different losses: \(seen)")
        // An unnamed adapter keeps the model + DIR label.
        let (_, o2, _) = try Self.run(common + ["--adapter", Self.dir + "/legal"])
        #expect(o2.hasPrefix("\(Self.base) + \(Self.dir)/legal on "), "\(o2)")

        let (sm, om, em) = try MultiRankCLITests.launch(2, common + names.flatMap(Self.adapter))
        try #require(sm == 0, "\(em)")
        #expect(Self.lines(om) == lines, "2 ranks: \(om) vs 1 rank: \(o)")

        try Self.expectRefused(common + Self.adapter("foreign"), "the adapter was made for another base")
        try Self.expectRefused(common + Self.adapter("legal") + ["--checkpoint", Self.dir], "give --checkpoint or --adapter, not both")
        try Self.expectRefused(common + Self.adapter("legal") + ["--adapter", "legal=\(Self.dir)/code"], "adapter name 'legal' is given twice")
    }

    @Test("generate with several adapters: one line per adapter, each what that adapter alone generates")
    func generate() throws {
        let common = ["generate", "--model", Self.base, "--prompt", "the quick", "--max-new-tokens", "8"]
        let names = ["legal", "code", "rs"]
        let (s, o, e) = try Self.run(common + ["--ids"] + names.flatMap(Self.adapter))
        try #require(s == 0, "\(e)")
        let lines = Self.lines(o)
        try #require(lines.count == 3, "\(o)")
        for (name, line) in zip(names, lines) {
            #expect(line.hasPrefix(name + ": "))
            let (s1, o1, e1) = try Self.run(common + ["--ids", "--adapter", Self.dir + "/" + name])
            try #require(s1 == 0, "\(e1)")
            #expect(line == name + ": " + o1.trimmingCharacters(in: .whitespacesAndNewlines), "\(name) alone: \(o1)")
        }
        #expect(Set(lines.map { $0.split(separator: ":")[1] }).count == 3, "three adapters, three continuations: \(o)")
        // Text: one line each, whatever bytes the tiny model produces.
        let (st, ot, et) = try Self.run(common + names.flatMap(Self.adapter))
        try #require(st == 0, "\(et)")
        #expect(Self.lines(ot).count == 3 && Self.lines(ot).allSatisfy { $0.contains(": the quick") }, "\(ot)")
        try Self.expectRefused(common + Self.adapter("foreign"), "the adapter was made for another base")
    }

    @Test("export --format merged --adapter ... writes what the library merges; bad input refused")
    func export() throws {
        let out = TestPaths.tempDir("cli-merge")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let args = ["export", "--format", "merged", "--model", Self.base] + Self.adapter("legal") + Self.adapter("code")
        // Bit for bit against this process's merge: the binary must run the kernels OpenBLAS picked
        // here, not the ones it would pick for itself where OpenBLAS falls back (BLASCore).
        var env = cleanEnvironment()
        env[BLASCore.choiceVariable] = "detected"
        let (s, o, e) = try runProcess(TestPaths.binary, args + ["--weights", "0.5,-0.25", "--out", out + "/cli"], env: env)
        try #require(s == 0, "\(e)")
        #expect(o.contains("wrote merged export of legal, code"))
        try Exporter.mergeAdapters(model: Self.base, adapters: ["legal", "code"].map(AdapterCombineTests.adapter), weights: [0.5, -0.25], out: out + "/lib")
        let a = try SafeTensors(path: out + "/cli/model.safetensors"), b = try SafeTensors(path: out + "/lib/model.safetensors")
        #expect(a.names == b.names)
        for n in b.names { #expect(try a.floats(n) == (try b.floats(n)), "\(n)") }
        // weights default to 1
        let (s1, _, e1) = try Self.run(args + ["--out", out + "/ones"])
        try #require(s1 == 0, "\(e1)")

        try Self.expectRefused(["export", "--format", "peft", "--model", Self.base] + Self.adapter("legal") + ["--out", out + "/x"],
                               "lora-dist adapters combine")
        try Self.expectRefused(["export", "--format", "merged"] + Self.adapter("legal") + ["--out", out + "/x"], "--model")
        try Self.expectRefused(args + ["--weights", "1", "--out", out + "/x"], "--weights has 1 value for 2 adapters")
        try Self.expectRefused(args + ["--weights", "1,inf", "--out", out + "/x"], "inf is not a finite number")
        try Self.expectRefused(["export", "--format", "merged", "--model", Self.base] + Self.adapter("foreign") + ["--out", out + "/x"],
                               "the adapter was made for another base")
        try Self.expectRefused(["export", "--format", "merged", "--out", out + "/x"], "--checkpoint (or --adapter with --model) is needed")
        #expect(!FileManager.default.fileExists(atPath: out + "/x"))
    }
}
