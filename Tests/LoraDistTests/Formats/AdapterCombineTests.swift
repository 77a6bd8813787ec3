import Foundation
import Testing
@testable import LoraDist

/// Several PEFT adapters on one base, against peft (fixtures from tools/make_adapter_fixtures.py,
/// Tests/Fixtures/adapters/): `adapters combine` (peft's add_weighted_adapter, linear and cat),
/// adapters switched in place on one model (eval and generate with several --adapter), and the
/// weighted merge of several adapters into the base (export --format merged --adapter ...).
///
/// Tolerances, max |Δ| / max |ref|: combined tensors 1e-5 (the brief's; lora-dist reproduces
/// peft's float32 arithmetic in peft's order, and `make_adapter_fixtures.py --check` measured them
/// equal bit for bit); logits 1e-5 (ReferenceTests' reference-logits tolerance).
@Suite struct AdapterCombineTests {
    static let dir = TestPaths.fixtures + "/adapters"
    static let tensorTolerance: Float = 1e-5
    static let logitsTolerance: Float = 1e-5
    static let combinations = ["linear", "linear_negative", "linear_rslora", "cat", "cat_rslora", "single"]

    struct Combination {
        let name: String, method: AdapterCombine.Method, adapters: [String], weights: [Double]
    }

    /// combinations.json: what the fixture script combined and merged.
    static func spec() throws -> (combinations: [String: Combination], merge: (adapters: [String], weights: [Double])) {
        let o = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/combinations.json"))) as? [String: Any])
        var out: [String: Combination] = [:]
        for c in try #require(o["combinations"] as? [[String: Any]]) {
            let name = try #require(c["name"] as? String), method = try #require(c["method"] as? String)
            out[name] = Combination(name: name, method: try #require(AdapterCombine.Method(rawValue: method)),
                                    adapters: try #require(c["adapters"] as? [String]),
                                    weights: try #require(c["weights"] as? [NSNumber]).map(\.doubleValue))
        }
        let m = try #require(o["merge"] as? [String: Any])
        let adapters = try #require(m["adapters"] as? [String]), weights = try #require(m["weights"] as? [NSNumber])
        return (out, (adapters, weights.map(\.doubleValue)))
    }

    static func adapter(_ name: String) throws -> PEFTAdapter { try PEFTAdapter(name: name, dir: dir + "/" + name) }

    static func json(_ path: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    /// The base, the reference batch and peft's logits.
    struct Fixture {
        let config: ModelConfig
        let reference: SafeTensors
        let ids: [Int32]
        let batch: Int, seqLen: Int

        init() throws {
            config = try ModelConfig.load(AdapterCombineTests.dir + "/base")
            reference = try SafeTensors(path: AdapterCombineTests.dir + "/reference.safetensors")
            let e = try reference.entry("input_ids")
            batch = e.shape[0]
            seqLen = e.shape[1]
            ids = try reference.ints("input_ids").map { Int32($0) }
        }

        /// A model on the fixture's base with LoRA slots `lora` (nil: none).
        func model(_ lora: LoRAConfig?) throws -> LlamaModel {
            let m = try LlamaModel(config: config, lora: lora, maxBatch: batch, seqLen: seqLen)
            try HuggingFace.loadBase(m, from: SafeTensors(path: AdapterCombineTests.dir + "/base/model.safetensors"))
            return m
        }

        func logits(_ model: LlamaModel) -> [Float] {
            ids.withUnsafeBufferPointer { p in
                let out = model.forward(ids: p.baseAddress!, batch: batch)
                return Array(UnsafeBufferPointer(start: out, count: batch * seqLen * config.vocabSize))
            }
        }
    }

    @Test("combinations.json names the combinations these tests check")
    func listed() throws {
        #expect(Set(try Self.spec().combinations.keys) == Set(Self.combinations))
    }

    @Test("adapters combine equals peft's add_weighted_adapter: tensors, r, lora_alpha, targets, and the combined model's logits",
          arguments: combinations)
    func combination(name: String) throws {
        let c = try #require(try Self.spec().combinations[name])
        let adapters = try c.adapters.map(Self.adapter)
        let result = try AdapterCombine.combine(adapters, weights: c.weights, method: c.method)
        let out = TestPaths.tempDir("combine-" + name)
        defer { try? FileManager.default.removeItem(atPath: out) }
        try AdapterCombine.write(result, to: out)

        // Tensors: the same names and shapes as peft saved, values within tolerance.
        let peftDir = Self.dir + "/combined/" + name
        let ours = try SafeTensors(path: out + "/adapter_model.safetensors")
        let theirs = try SafeTensors(path: peftDir + "/adapter_model.safetensors")
        #expect(ours.names == theirs.names)
        var worst: Float = 0
        for n in theirs.names {
            #expect(try ours.entry(n).shape == (try theirs.entry(n)).shape, "\(n)")
            let err = relativeError(try ours.floats(n), try theirs.floats(n))
            #expect(err <= Self.tensorTolerance, "\(name) \(n): relative error \(err)")
            worst = max(worst, err)
        }
        recordFixtureError("adapters.combine.\(name).tensors", worst)

        // Config: peft's r, lora_alpha, target modules, rsLoRA, dropout and base name.
        let cfg = try Self.json(out + "/adapter_config.json"), ref = try Self.json(peftDir + "/adapter_config.json")
        for key in ["r", "lora_alpha", "lora_dropout"] {
            #expect((cfg[key] as? NSNumber)?.doubleValue == (ref[key] as? NSNumber)?.doubleValue, "\(name) \(key): \(cfg[key] ?? "nil") vs \(ref[key] ?? "nil")")
        }
        #expect(cfg["use_rslora"] as? Bool == ref["use_rslora"] as? Bool)
        #expect(Set(cfg["target_modules"] as? [String] ?? []) == Set(ref["target_modules"] as? [String] ?? ["?"]))
        #expect(cfg["base_model_name_or_path"] as? String == ref["base_model_name_or_path"] as? String)
        #expect(result.method == (adapters.count == 1 ? .linear : c.method))

        // The written directory reads back strictly, and the combined model gives peft's logits.
        let back = try PEFTAdapter(name: name, dir: out)
        #expect(back.lora == result.lora)
        let f = try Fixture()
        let model = try f.model(back.lora)
        try HuggingFace.loadAdapter(model, from: ours)
        let err = relativeError(f.logits(model), try f.reference.floats("combined.\(name).logits"))
        recordFixtureError("adapters.combine.\(name).logits", err)
        #expect(err <= Self.logitsTolerance, "\(name) logits: relative error \(err)")
    }

    @Test("adapters switched in place on one model give peft's logits for each, and the same numbers as each loaded alone")
    func switching() throws {
        let f = try Fixture()
        let all = try ["legal", "medical", "code", "rs", "brief"].map(Self.adapter)
        // Each alone: a model built with its own LoRA config, loaded as eval/generate did before.
        var alone: [String: [Float]] = [:]
        for a in all {
            let m = try f.model(a.lora)
            try HuggingFace.loadAdapter(m, from: SafeTensors(path: a.dir + "/adapter_model.safetensors"))
            alone[a.name] = f.logits(m)
        }
        // Same rank and targets: the layout is each one's own, and switching gives their numbers bit for bit.
        let same = all.filter { ["legal", "medical", "rs"].contains($0.name) }
        let sameModel = try f.model(try AdapterSwitching.layout(same))
        for a in same + same.reversed() {
            try sameModel.use(a, owned: sameModel.store.all)
            #expect(f.logits(sameModel) == alone[a.name]!, "\(a.name) switched in differs from \(a.name) alone")
        }
        // Every adapter in one layout (union of targets, largest rank): peft's logits, and alone's within rounding.
        let layout = try AdapterSwitching.layout(all)
        #expect(layout.rank == 4 && layout.targets == LoRAConfig.projections)  // q,k,v,o + q,v,gate,down + q,v,up
        let model = try f.model(layout)
        for a in all + [all[0], all[2]] {
            try model.use(a, owned: model.store.all)
            let got = f.logits(model)
            let err = relativeError(got, try f.reference.floats("adapter.\(a.name).logits"))
            recordFixtureError("adapters.switch.\(a.name).logits", err)
            #expect(err <= Self.logitsTolerance, "\(a.name): relative error \(err) against peft")
            #expect(relativeError(got, alone[a.name]!) <= 1e-6, "\(a.name) switched in vs alone")
        }
        // The base alone: no adapter is what the base computes.
        let base = try f.model(nil)
        #expect(relativeError(f.logits(base), try f.reference.floats("base.logits")) <= Self.logitsTolerance)
    }

    @Test("export --format merged of several adapters: W + Σ wᵢ·(Mᵢ − W) of the merges of each alone, and the logits of peft's weighted merge")
    func mergedSeveral() throws {
        let f = try Fixture()
        let merge = try Self.spec().merge
        let adapters = try merge.adapters.map(Self.adapter)
        let out = TestPaths.tempDir("merge-several")
        defer { try? FileManager.default.removeItem(atPath: out) }
        try Exporter.mergeAdapters(model: Self.dir + "/base", adapters: adapters, weights: merge.weights, out: out)
        let merged = try SafeTensors(path: out + "/model.safetensors")
        let base = try SafeTensors(path: Self.dir + "/base/model.safetensors")
        #expect(merged.names == base.names)
        #expect(merged.metadata["lora_dist_merge"]?.contains("legal 0.5") == true)

        // Each adapter merged alone (the existing single-adapter path), then combined by hand.
        var singles: [SafeTensors] = []
        for a in adapters {
            let m = try f.model(a.lora)
            try HuggingFace.loadAdapter(m, from: SafeTensors(path: a.dir + "/adapter_model.safetensors"))
            let d = TestPaths.tempDir("merge-one")
            defer { try? FileManager.default.removeItem(atPath: d) }
            try HuggingFace.saveMerged(m, tokenizerOf: try ModelSource(Self.dir + "/base"), to: d)
            singles.append(try SafeTensors(path: d + "/model.safetensors"))
        }
        let adapted = Set(adapters.flatMap { $0.modules.keys.map { $0 + ".weight" } })
        for n in base.names {
            let w = try base.floats(n), got = try merged.floats(n)
            if !adapted.contains(n) {
                #expect(got == w, "\(n) is adapted by no adapter but changed")
                continue
            }
            var want = w
            for (i, s) in singles.enumerated() {
                let mi = try s.floats(n)
                for k in want.indices { want[k] += Float(merge.weights[i]) * (mi[k] - w[k]) }
            }
            let err = relativeError(got, want)
            #expect(err <= 1e-6, "\(n): relative error \(err) against the per-adapter merges")
        }

        // The merged directory loads as a plain model and gives the logits of peft's weighted merge.
        let plain = try LlamaModel(config: try ModelConfig.load(out), lora: nil, maxBatch: f.batch, seqLen: f.seqLen)
        try HuggingFace.loadBase(plain, from: HuggingFace.Weights(modelDir: out))
        let err = relativeError(f.logits(plain), try f.reference.floats("merged.logits"))
        recordFixtureError("adapters.merged.logits", err)
        #expect(err <= Self.logitsTolerance, "merged logits: relative error \(err)")
    }

    // MARK: bad input

    /// A copy of a fixture adapter with its config and tensors changed.
    static func altered(_ name: String, config change: (inout [String: Any]) -> Void = { _ in },
                        tensors edit: (inout [(name: String, shape: [Int], values: [Float])]) -> Void = { _ in }) throws -> String {
        let out = TestPaths.tempDir("altered-" + name)
        var cfg = try json(dir + "/" + name + "/adapter_config.json")
        change(&cfg)
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: out + "/adapter_config.json"))
        let st = try SafeTensors(path: dir + "/" + name + "/adapter_model.safetensors")
        var tensors = try st.names.map { (name: $0, shape: try st.entry($0).shape, values: try st.floats($0)) }
        edit(&tensors)
        try SafeTensors.write(tensors, to: out + "/adapter_model.safetensors")
        return out
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body(); return "(accepted)" } catch let e as LoraDistError { return e.message } catch { return "\(error)" }
    }

    @Test("bad combinations are refused with one line naming the problem")
    func refusals() throws {
        let legal = try Self.adapter("legal"), medical = try Self.adapter("medical"), code = try Self.adapter("code")
        let brief = try Self.adapter("brief"), foreign = try Self.adapter("foreign")
        let cases: [(String, () throws -> Void)] = [
            ("linear needs adapters of one rank: legal has r 4, code r 2", { _ = try AdapterCombine.combine([legal, code], weights: [1, 1], method: .linear) }),
            ("linear needs adapters on the same target modules", { _ = try AdapterCombine.combine([legal, brief], weights: [1, 1], method: .linear) }),
            ("adapter name 'legal' is given twice", { _ = try AdapterCombine.combine([legal, legal], weights: [1, 1], method: .cat) }),
            ("--weights has 1 value for 2 adapters", { _ = try AdapterCombine.combine([legal, medical], weights: [1], method: .cat) }),
            ("the weight of medical is nan", { _ = try AdapterCombine.combine([legal, medical], weights: [1, .nan], method: .linear) }),
            ("were made for different bases", { _ = try AdapterCombine.combine([legal, foreign], weights: [1, 1], method: .linear) }),
            ("no adapter to combine", { _ = try AdapterCombine.combine([], weights: [], method: .cat) }),
            // against a base: the foreign adapter's shapes are not this base's
            ("the adapter was made for another base", { try PEFTAdapter.checkOneBase([legal, foreign], base: (try ModelConfig.load(Self.dir + "/base"), "base")) }),
            ("adapter name 'a' is given twice", { _ = try AdapterArgument.parse(["a=" + Self.dir + "/legal", "a=" + Self.dir + "/medical"]) }),
            ("--weights 0.5,nan: nan is not a finite number", { _ = try AdapterArgument.weights("0.5,nan", count: 2) }),
            ("--weights 1,inf: inf is not a finite number", { _ = try AdapterArgument.weights("1,inf", count: 2) }),
            ("--weights 1,x: 'x' is not a number", { _ = try AdapterArgument.weights("1,x", count: 2) }),
            ("--weights has 3 values for 2 adapters", { _ = try AdapterArgument.weights("1,2,3", count: 2) }),
            ("--weights is needed", { _ = try AdapterArgument.weights(nil, count: 2) }),
            ("adapter missing: /nonexistent/adapter_config.json does not exist", { _ = try PEFTAdapter(name: "missing", dir: "/nonexistent") }),
        ]
        for (want, body) in cases {
            let got = Self.message(body)
            #expect(got.contains(want), "want '\(want)', got '\(got)'")
            #expect(!got.contains("\n"))
        }
    }

    @Test("a bad adapter directory is refused as it is read: rank, names, base, values")
    func badAdapters() throws {
        var dirs: [String] = []
        defer { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
        func check(_ want: String, _ make: () throws -> String, combineWith other: String? = nil) throws {
            let d = try make()
            dirs.append(d)
            let got = Self.message {
                let a = try PEFTAdapter(name: "bad", dir: d)
                if let other { _ = try AdapterCombine.combine([try Self.adapter(other), a], weights: [1, 1], method: .cat) }
            }
            #expect(got.contains(want), "want '\(want)', got '\(got)'")
        }
        try check("adapter_config.json says r 8") { try Self.altered("legal", config: { $0["r"] = 8 }) }
        try check("holds a non-finite value (NaN or infinity) at element 3") {
            try Self.altered("legal", tensors: { $0[0].values[3] = .nan })
        }
        try check("has no lora_B.weight") {
            try Self.altered("legal", tensors: { t in t.removeAll { $0.name == "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight" } })
        }
        try check("no adapter on layer 0's o_proj") {
            try Self.altered("legal", tensors: { t in t.removeAll { $0.name.contains("layers.0.self_attn.o_proj") } })
        }
        try check("adapts up_proj, which its target_modules") {
            try Self.altered("legal", tensors: { t in
                t.append((name: "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", shape: [4, 32], values: [Float](repeating: 0, count: 128)))
            })
        }
        try check("is not a LoRA tensor of a projection") {
            try Self.altered("legal", tensors: { t in t.append((name: "base_model.model.lm_head.weight", shape: [2, 2], values: [0, 0, 0, 0])) })
        }
        try check("\"use_dora\" is") { try Self.altered("legal", config: { $0["use_dora"] = true }) }
        try check("made for different bases: q_proj is [32, 32] in one, [48, 32] in the other", {
            try Self.altered("legal", tensors: { t in
                for i in t.indices where t[i].name.contains("q_proj.lora_B") {
                    t[i] = (name: t[i].name, shape: [48, 4], values: [Float](repeating: 0.01, count: 192))
                }
            })
        }, combineWith: "medical")
        // adapters naming different bases (combine without --model)
        let renamed = try Self.altered("medical", config: { $0["base_model_name_or_path"] = "elsewhere/base" })
        dirs.append(renamed)
        let got = Self.message {
            try PEFTAdapter.checkOneBase([try Self.adapter("legal"), try PEFTAdapter(name: "medical", dir: renamed)], base: nil)
        }
        #expect(got.contains("name different bases (Tests/Fixtures/adapters/base, elsewhere/base): give --model BASE"), "\(got)")
        // ... which a base given on the command line settles (the shapes fit it)
        try PEFTAdapter.checkOneBase([try Self.adapter("legal"), try PEFTAdapter(name: "medical", dir: renamed)],
                                     base: (try ModelConfig.load(Self.dir + "/base"), "base"))
    }

    @Test("--adapter values: NAME=DIR, or a DIR named by its last component")
    func arguments() throws {
        let legal = Self.dir + "/legal"
        #expect(try AdapterArgument.parse(["x=" + legal, legal + "/"]) == [
            AdapterArgument(name: "x", dir: legal, named: true), AdapterArgument(name: "legal", dir: legal + "/", named: false)])
        #expect(Self.message { _ = try AdapterArgument.parse(["=" + legal]) }.contains("give NAME=DIR"))
        #expect(Self.message { _ = try AdapterArgument.parse(["x="]) }.contains("no directory after '='"))
        #expect(try AdapterArgument.weights("0.5, -1,2e-1", count: 3) == [0.5, -1, 0.2])
        #expect(try AdapterArgument.weights(nil, count: 2, default: 1) == [1, 1])
    }
}
