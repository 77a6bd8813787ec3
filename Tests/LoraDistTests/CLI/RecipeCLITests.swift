import Foundation
import Testing
@testable import LoraDist

/// Recipes (`train --config`, `compare --config`), `--print-config`, RUN/config.yaml, the
/// recipes in recipes/, `--version` and the shell completion scripts.
@Suite(.serialized, .tags(.cli)) struct RecipeCLITests {
    static func lora(_ args: [String]) throws -> (Int32, String, String) { try runProcess(TestPaths.binary, args) }

    static func write(_ text: String, _ name: String = "recipe.yaml") throws -> String {
        let path = TestPaths.tempDir("recipe") + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A printed configuration as key → value text (comments and blank lines dropped).
    static func config(_ yaml: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in yaml.split(separator: "\n") where !line.hasPrefix("#") {
            guard let colon = line.range(of: ": ") else { continue }
            out[String(line[..<colon.lowerBound])] = String(line[colon.upperBound...])
        }
        return out
    }

    /// Two configurations that say the same: every key, values equal as text or as numbers (16 and 16.0).
    static func same(_ a: [String: String], _ b: [String: String], ignoring: Set<String> = []) -> [String] {
        var diffs: [String] = []
        for k in Set(a.keys).union(b.keys) where !ignoring.contains(k) {
            let x = a[k], y = b[k]
            if x == y { continue }
            if let x, let y, let dx = Double(x), let dy = Double(y), dx == dy { continue }
            diffs.append("\(k): \(x ?? "absent") vs \(y ?? "absent")")
        }
        return diffs.sorted()
    }

    static func printConfig(_ args: [String]) throws -> [String: String] {
        let (status, out, err) = try lora(args + ["--print-config"])
        try #require(status == 0, "\(args) --print-config exited \(status): \(err)")
        return config(out)
    }

    static func losses(_ run: String) throws -> [String] {
        // Each line's loss and dev loss as written: equal text is equal bits.
        try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map { line in
            let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return "\(o["step"]!) \(o["loss"]!) \(o["dev_loss"] ?? "-")"
        }
    }

    @Test("a recipe sets train options, the command line overrides it, and RUN/config.yaml repeats the run")
    func repeatRun() throws {
        let data = try MultiRankCLITests.corpus()
        let dir = TestPaths.tempDir("recipe-run")
        let recipe = try Self.write("""
            # a recipe
            model: tiny
            data: \(data)
            steps: 5
            batch: 4
            seq: 24
            lr: 5e-3          # a comment
            warmup: 1
            rank: 4
            alpha: 8
            targets: q_proj,v_proj
            rslora: yes
            eval-every: 2
            eval-seqs: 4
            quiet: true
            run-dir: \(dir)/wrong
            """)
        let run1 = dir + "/run1", run2 = dir + "/run2"
        var (status, _, err) = try Self.lora(["train", "--config", recipe, "--run-dir", run1, "--lora-dropout", "0.1"])
        try #require(status == 0, "train exited \(status): \(err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/wrong"), "the command line's --run-dir overrides the recipe's")
        let written = try String(contentsOfFile: run1 + "/config.yaml", encoding: .utf8)
        let c = Self.config(written)
        #expect(c["lr"] == "5e-3" && c["rslora"] == "true" && c["targets"] == "q_proj,v_proj" && c["lora-dropout"] == "0.1")
        #expect(c["run-dir"] == run1 && c["quiet"] == "true" && c["steps"] == "5" && c["data"] == data)
        #expect(c["resume"] == nil && c["stop-after"] == nil, "per-invocation keys are left out")
        // Every option is there: config.yaml has the keys --print-config has, but resume and stop-after.
        let all = try Self.printConfig(["train", "--config", recipe])
        #expect(Set(all.keys).subtracting(c.keys) == ["resume", "stop-after"])

        (status, _, err) = try Self.lora(["train", "--config", run1 + "/config.yaml", "--run-dir", run2])
        try #require(status == 0, "the repeat exited \(status): \(err)")
        #expect(try Self.losses(run1) == Self.losses(run2))
        #expect(try Self.losses(run1).count == 5)
        let again = Self.config(try String(contentsOfFile: run2 + "/config.yaml", encoding: .utf8))
        #expect(Self.same(c, again, ignoring: ["run-dir"]).isEmpty, "\(Self.same(c, again, ignoring: ["run-dir"]))")
    }

    @Test("command-line flags override the recipe, inverted flags both ways")
    func overrides() throws {
        let recipe = try Self.write("lr: 0.01\nrslora: true\nquiet: true\nsteps: 7\nmode: full\n")
        let c = try Self.printConfig(["train", "--config", recipe, "--lr", "0.02", "--no-rslora", "--steps=9"])
        #expect(c["lr"] == "0.02" && c["rslora"] == "false" && c["quiet"] == "true" && c["steps"] == "9" && c["mode"] == "full")
        // The default subcommand takes a recipe too.
        let d = try Self.printConfig(["--config", recipe])
        #expect(d["lr"] == "0.01" && d["steps"] == "7")
        // A null or empty recipe sets nothing.
        let empty = try Self.write("# nothing\nlr:\n")
        #expect(Self.same(try Self.printConfig(["train", "--config", empty]), try Self.printConfig(["train"])).isEmpty)
    }

    static let refused: [(String, String, String)] = [
        // recipe, expected "file:line: ..." head, and a part of the message
        ("model: tiny\nlearning_rate: 0.1\n", ":2: unknown key 'learning_rate'", "lora-dist train"),
        ("model: tiny\neval_every: 3\n", ":2: unknown key 'eval_every'", "did you mean eval-every?"),
        ("model: tiny\nlr: abc\n", ":2: lr:", "'abc' is invalid"),
        ("model: tiny\n\nsteps: 0\n", ":3: steps:", "must be in 1..."),
        ("lr: 20\n", ":1: lr:", "must be a number in (0, 10]"),
        ("min-lr-ratio: -1\n", ":1: min-lr-ratio:", "must be a number in [0, 1]"),
        ("rank: 0\n", ":1: rank:", "LoRA rank"),
        ("mode: bogus\n", ":1: mode:", "'bogus' is invalid"),
        ("rslora: 3\n", ":1: rslora:", "expected true or false"),
        ("targets: [q_proj, v_proj]\n", ":1: targets:", "expected a single value"),
        ("exchange: {a: 1}\n", ":1: exchange:", "expected a single value"),
        ("lr: 0.1\nlr: 0.2\n", ":2: lr is set twice", "line 1"),
        ("config: other.yaml\n", ":1: config cannot be set", "recipe"),
        ("steps: [\n", ":2:1: not valid YAML", "flow"),
        ("- steps\n", ":1: a recipe is a mapping", "option names"),
    ]

    @Test("a recipe's unknown key, wrong type or out-of-range value is one line naming file, line and key; nothing is written",
          arguments: refused.indices)
    func refusedRecipe(_ i: Int) throws {
        let (text, head, says) = Self.refused[i]
        let data = try writeCorpus("recipe-bad") { "line \($0) of a small corpus" }
        let run = TestPaths.tempDir("recipe-bad") + "/run"
        let recipe = try Self.write(text, "bad.yaml")
        let (status, out, err) = try Self.lora(["train", "--config", recipe, "--data", data, "--run-dir", run])
        #expect(status != 0)
        #expect(out.isEmpty, "\(out)")
        let lines = err.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains(recipe + head) && lines[0].contains(says), "\(text): \(err)")
        #expect(!FileManager.default.fileExists(atPath: run))
    }

    @Test("under mpirun a recipe's error is one line, from rank 0")
    func refusedOnRanks() throws {
        let recipe = try Self.write("model: tiny\nsteps: -3\n", "bad.yaml")
        let (status, _, err) = try MultiRankCLITests.launch(2, ["train", "--config", recipe])
        #expect(status != 0)
        let lines = err.split(separator: "\n").filter { $0.hasPrefix("lora-dist") }
        #expect(lines.count == 1 && lines[0].contains(recipe + ":2: steps:"), "\(err)")
    }

    @Test("recipes/default.yaml is the default job")
    func defaultRecipe() throws {
        let diffs = Self.same(try Self.printConfig(["train", "--config", TestPaths.repo + "/recipes/default.yaml"]),
                              try Self.printConfig(["train"]))
        #expect(diffs.isEmpty, "\(diffs)")
    }

    /// docs/results.md's commands before they used recipes, and the recipe plus the command-line
    /// flags that replace each.
    static let resultsCommands: [(recipe: String, extra: [String], original: [String])] = [
        ("seeds-small.yaml", ["--domain", "legal", "--out", "runs/seeds3-small-legal"],
         ["compare", "--base", "runs/small-general", "--domain", "legal", "--out", "runs/seeds3-small-legal", "--ranks", "8,32",
          "--targets", "all-linear", "--qlora", "--no-compressed", "--steps", "150", "--batch", "8", "--seq", "128",
          "--lr-lora", "5e-3", "--lr-full", "1.5e-3", "--eval-every", "25", "--patience", "3", "--seeds", "3"]),
        ("earlystop-smollm2.yaml", ["--base", "G.gguf", "--domain", "legal", "--out", "runs/earlystop-smollm2-legal"],
         ["compare", "--base", "G.gguf", "--domain", "legal", "--out", "runs/earlystop-smollm2-legal", "--data-sizes", "5k",
          "--ranks", "32", "--targets", "all-linear", "--steps", "100", "--batch", "4", "--seq", "64", "--lr-lora", "1e-3",
          "--lr-full", "5e-5", "--eval-every", "10", "--patience", "3", "--eval-seqs", "8", "--test-seqs", "16", "--seeds", "1"]),
        ("pretrain-small.yaml", ["--data", "C/general/train", "--dev-data", "C/general/dev"],
         ["train", "--mode", "full", "--model", "small", "--data", "C/general/train", "--dev-data", "C/general/dev", "--steps", "600",
          "--batch", "16", "--seq", "128", "--lr", "3e-3", "--warmup", "30", "--eval-every", "100", "--run-dir", "runs/pretrain-small",
          "--export-merged", "runs/small-general"]),
        ("compare-small.yaml", ["--domain", "legal", "--out", "runs/compare-small-legal"],
         ["compare", "--base", "runs/small-general", "--domain", "legal", "--out", "runs/compare-small-legal", "--steps", "150",
          "--batch", "8", "--seq", "128", "--lr-lora", "2e-3,5e-3", "--lr-full", "5e-4,1.5e-3", "--eval-every", "25", "--patience", "3"]),
        ("compare-smollm2-legal.yaml", ["--base", "G.gguf"],
         ["compare", "--base", "G.gguf", "--domain", "legal", "--out", "runs/compare-smollm2-legal", "--ranks", "8", "--targets",
          "q_proj,k_proj,v_proj,o_proj", "--steps", "30", "--batch", "4", "--seq", "64", "--lr-lora", "1e-3", "--lr-full", "5e-5",
          "--eval-every", "10", "--patience", "2", "--eval-seqs", "8", "--test-seqs", "16"]),
        ("compare-qlora-small.yaml", ["--domain", "legal", "--out", "runs/compare-qlora-small-legal"],
         ["compare", "--base", "runs/small-general", "--domain", "legal", "--out", "runs/compare-qlora-small-legal", "--ranks", "8",
          "--targets", "all-linear", "--no-full", "--steps", "150", "--batch", "8", "--seq", "128", "--lr-lora", "2e-3,5e-3",
          "--eval-every", "25", "--patience", "3"]),
        ("compare-qlora-smollm2-legal.yaml", ["--base", "G.gguf"],
         ["compare", "--base", "G.gguf", "--domain", "legal", "--out", "runs/compare-qlora-smollm2-legal", "--ranks", "8",
          "--targets", "all-linear", "--no-full", "--steps", "30", "--batch", "4", "--seq", "64", "--lr-lora", "1e-3",
          "--eval-every", "10", "--patience", "2", "--eval-seqs", "8", "--test-seqs", "16"]),
        ("compare-smollm2.yaml", ["--base", "G.gguf", "--domain", "legal", "--out", "runs/smollm2-legal"],
         ["compare", "--base", "G.gguf", "--domain", "legal", "--out", "runs/smollm2-legal", "--ranks", "8,32", "--targets",
          "all-linear", "--no-compressed", "--steps", "50", "--batch", "4", "--seq", "64", "--lr-lora", "1e-3", "--lr-full", "5e-5",
          "--eval-every", "10", "--patience", "2", "--eval-seqs", "8", "--test-seqs", "16"]),
        ("compare-compression.yaml", ["--domain", "technical", "--out", "runs/compare-compression-technical"],
         ["compare", "--base", "runs/small-general", "--domain", "technical", "--out", "runs/compare-compression-technical",
          "--steps", "150", "--batch", "8", "--seq", "128", "--ranks", "8", "--targets", "all-linear", "--no-qlora",
          "--lr-lora", "5e-3", "--lr-full", "1.5e-3", "--eval-every", "25", "--patience", "3", "--exchange", "flat",
          "--powersgd-ranks", "4,16"]),
        ("compare-compression-smollm2.yaml", ["--base", "G.gguf", "--out", "runs/compression-smollm2-legal"],
         ["compare", "--base", "G.gguf", "--domain", "legal", "--out", "runs/compression-smollm2-legal", "--steps", "40",
          "--batch", "4", "--seq", "64", "--ranks", "8", "--targets", "all-linear", "--no-qlora", "--lr-lora", "1e-3",
          "--lr-full", "5e-5", "--eval-every", "10", "--patience", "3", "--eval-seqs", "8", "--test-seqs", "16",
          "--exchange", "flat", "--powersgd-ranks", "4,16"]),
        ("continual-small.yaml", [],
         ["compare", "--base", "runs/small-general", "--continual", "technical,legal,medical", "--out", "runs/continual-small",
          "--ranks", "32", "--targets", "all-linear", "--steps", "150", "--batch", "8", "--seq", "128", "--lr-lora", "5e-3",
          "--lr-full", "1.5e-3", "--eval-every", "25", "--patience", "3"]),
        ("compare-datasizes-small.yaml", ["--domain", "legal", "--out", "runs/datasizes-small-legal"],
         ["compare", "--base", "runs/small-general", "--domain", "legal", "--out", "runs/datasizes-small-legal",
          "--data-sizes", "5k,50k,500k", "--ranks", "32", "--targets", "all-linear", "--steps", "150", "--batch", "8",
          "--seq", "128", "--lr-lora", "5e-3", "--lr-full", "1.5e-3", "--eval-every", "25", "--patience", "3", "--seeds", "3"]),
        ("noearlystop-datasizes-small.yaml", ["--domain", "legal", "--out", "runs/noes-datasizes-small-legal"],
         ["compare", "--base", "runs/small-general", "--domain", "legal", "--out", "runs/noes-datasizes-small-legal",
          "--data-sizes", "5k", "--ranks", "32", "--targets", "all-linear", "--steps", "150", "--batch", "8",
          "--seq", "128", "--lr-lora", "5e-3", "--lr-full", "1.5e-3", "--eval-every", "25", "--no-early-stopping", "--seeds", "3"]),
        ("noearlystop-smollm2.yaml", ["--base", "G.gguf", "--domain", "legal", "--seeds", "3", "--out", "runs/noes-smollm2-legal"],
         ["compare", "--base", "G.gguf", "--domain", "legal", "--out", "runs/noes-smollm2-legal", "--data-sizes", "5k",
          "--ranks", "32", "--targets", "all-linear", "--steps", "100", "--batch", "4", "--seq", "64", "--lr-lora", "1e-3",
          "--lr-full", "5e-5", "--eval-every", "10", "--no-early-stopping", "--eval-seqs", "8", "--test-seqs", "16", "--seeds", "3"]),
        ("continual-smollm2.yaml", ["--base", "G.gguf"],
         ["compare", "--base", "G.gguf", "--continual", "technical,legal,medical", "--out", "runs/continual-smollm2",
          "--ranks", "8", "--targets", "all-linear", "--steps", "40", "--batch", "4", "--seq", "64", "--lr-lora", "1e-3",
          "--lr-full", "5e-5", "--eval-every", "20", "--patience", "2", "--eval-seqs", "8", "--test-seqs", "16"]),
    ]

    @Test("recipes/ holds the runs behind docs/results.md: each recipe is its command's configuration")
    func resultsRecipes() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: TestPaths.repo + "/recipes").filter { $0.hasSuffix(".yaml") }
        #expect(Set(files) == Set(Self.resultsCommands.map(\.recipe) + ["default.yaml"]), "a recipe without a check: \(files)")
        let results = try String(contentsOfFile: TestPaths.repo + "/docs/results.md", encoding: .utf8)
        for (recipe, extra, original) in Self.resultsCommands {
            #expect(results.contains("recipes/" + recipe), "docs/results.md does not use \(recipe)")
            let viaRecipe = try Self.printConfig([original[0], "--config", TestPaths.repo + "/recipes/" + recipe] + extra)
            let diffs = Self.same(viaRecipe, try Self.printConfig(original))
            #expect(diffs.isEmpty, "\(recipe): \(diffs)")
        }
    }

    @Test("compare --config: DIR/config.yaml, and each run's config.yaml and event file; a run repeats from its config.yaml")
    func compareRecipe() throws {
        if !FileManager.default.fileExists(atPath: CacheFolders.corpora + "/.complete") {
            let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-corpora.sh"])
            try #require(status == 0, "fetch-corpora.sh failed: \(err)")
        }
        let out = TestPaths.tempDir("recipe-compare") + "/cmp"
        let recipe = try Self.write("""
            base: tiny
            domain: legal
            ranks: 2
            targets: q_proj,v_proj
            full: false
            qlora: false
            steps: 3
            batch: 2
            seq: 16
            lr-lora: 1e-3
            eval-every: 1
            eval-seqs: 2
            test-seqs: 2
            seeds: 1
            """)
        var (status, _, err) = try Self.lora(["compare", "--config", recipe, "--out", out])
        try #require(status == 0, "compare exited \(status): \(err)")
        let top = Self.config(try String(contentsOfFile: out + "/config.yaml", encoding: .utf8))
        #expect(top["ranks"] == "2" && top["full"] == "false" && top["out"] == out && top["lr-lora"] == "1e-3")
        let run = out + "/runs/lora-r2-attn/lr-0.001"
        let runConfig = Self.config(try String(contentsOfFile: run + "/config.yaml", encoding: .utf8))
        #expect(runConfig["model"] == "tiny" && runConfig["rank"] == "2" && runConfig["targets"] == "q_proj,v_proj", "\(runConfig)")
        #expect(EventFile.files(in: run).count == 1)
        let again = TestPaths.tempDir("recipe-compare") + "/again"
        (status, _, err) = try Self.lora(["train", "--config", run + "/config.yaml", "--run-dir", again])
        try #require(status == 0, "train --config \(run)/config.yaml exited \(status): \(err)")
        #expect(try Self.losses(run) == Self.losses(again))
    }

    @Test("--version prints the version and the commit it was built from")
    func version() throws {
        let (status, out, _) = try Self.lora(["--version"])
        #expect(status == 0)
        let line = out.trimmingCharacters(in: .whitespacesAndNewlines)
        let pattern = try Regex(#"(\d+\.\d+\.\d+) \((commit ([0-9a-f]{12})|unknown commit)\)"#)
        let parts = try #require(line.wholeMatch(of: pattern), "\(line)")
        if let commit = parts.output[3].substring {  // a commit of this repository
            let (known, _, _) = try runProcess("/usr/bin/git", ["-C", TestPaths.repo, "cat-file", "-e", String(commit) + "^{commit}"])
            #expect(known == 0, "\(commit) is not a commit of \(TestPaths.repo)")
        }
    }

    @Test("completion scripts for bash, zsh and fish know the subcommands and --config; tools/install-completions.sh installs them")
    func completions() throws {
        for shell in ["bash", "zsh", "fish"] {
            let (status, out, err) = try Self.lora(["--generate-completion-script", shell])
            #expect(status == 0, "\(shell): \(err)")
            #expect(out.contains("compare") && out.contains("print-config") && out.contains("config"), "\(shell)")
        }
        let home = TestPaths.tempDir("completions")
        var env = cleanEnvironment()
        env["HOME"] = home
        env["XDG_DATA_HOME"] = nil
        env["LORA_DIST"] = TestPaths.binary
        let (status, out, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/install-completions.sh"], env: env)
        #expect(status == 0, "\(out)\(err)")
        for path in [".local/share/bash-completion/completions/lora-dist", ".zfunc/_lora-dist", ".config/fish/completions/lora-dist.fish"] {
            let text = try? String(contentsOfFile: home + "/" + path, encoding: .utf8)
            #expect(text?.contains("print-config") == true, "\(path) missing")
        }
    }
}
