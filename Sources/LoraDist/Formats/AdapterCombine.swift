import Foundation

/// A PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors) read whole and
/// checked on its own: every tensor is a lora_A/lora_B of a projection its target_modules name,
/// with its config's rank, A and B paired, every target in every layer, every value finite.
/// `check(fits:)` then checks it against a base's config.
public struct PEFTAdapter {
    /// One projection's adapter: A [rank, inDim], B [outDim, rank], row-major.
    public struct Module {
        public let a: [Float], b: [Float]
        public let rank: Int, inDim: Int, outDim: Int
    }

    public let name: String
    public let dir: String
    public let lora: LoRAConfig
    /// base_model_name_or_path of adapter_config.json (nil when absent or empty).
    public let baseModel: String?
    /// Module path (model.layers.0.self_attn.q_proj) → its A and B.
    public let modules: [String: Module]
    public let layers: Int

    /// The name this adapter is called by in messages: "legal (runs/legal/peft)".
    public var label: String { name == dir ? dir : "\(name) (\(dir))" }

    public init(name: String, dir: String) throws {
        self.name = name
        self.dir = dir
        let configPath = dir + "/adapter_config.json", weightsPath = dir + "/adapter_model.safetensors"
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw LoraDistError("adapter \(name): \(configPath) does not exist")
        }
        lora = try LoRAConfig.fromPEFT(json: data, source: configPath)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        baseModel = (object?["base_model_name_or_path"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            throw LoraDistError("adapter \(name): \(weightsPath) does not exist")
        }
        let st = try SafeTensors(path: weightsPath)
        let prefix = HuggingFace.peftPrefix
        var halves: [String: (a: SafeTensors.Entry?, b: SafeTensors.Entry?)] = [:]
        var layers = 0
        for key in st.names {
            let which = key.hasSuffix(".lora_A.weight") ? "A" : key.hasSuffix(".lora_B.weight") ? "B" : nil
            guard key.hasPrefix(prefix), let which else {
                throw LoraDistError("\(weightsPath): '\(key)' is not a LoRA tensor of a projection (lora-dist reads plain LoRA on whole projections)")
            }
            let module = String(key.dropFirst(prefix.count).dropLast(".lora_A.weight".count))
            guard let (layer, proj) = Self.parse(module: module) else {
                throw LoraDistError("\(weightsPath): '\(key)' is not a LoRA tensor of a projection of a decoder layer")
            }
            guard lora.targets.contains(proj) else {
                throw LoraDistError("\(weightsPath): '\(key)' adapts \(proj), which its target_modules (\(lora.targets.joined(separator: ","))) do not name")
            }
            let e = try st.entry(key)
            guard e.shape.count == 2, e.shape.allSatisfy({ $0 > 0 }) else {
                throw LoraDistError("\(weightsPath): '\(key)' has shape \(e.shape), not a matrix")
            }
            let rank = which == "A" ? e.shape[0] : e.shape[1]
            guard rank == lora.rank else {
                throw LoraDistError("\(weightsPath): '\(key)' has shape \(e.shape), of rank \(rank), but adapter_config.json says r \(lora.rank)")
            }
            if which == "A" { halves[module, default: (nil, nil)].a = e } else { halves[module, default: (nil, nil)].b = e }
            layers = max(layers, layer + 1)
        }
        guard layers > 0 else { throw LoraDistError("\(weightsPath) holds no LoRA tensor") }
        for layer in 0..<layers {
            for proj in lora.targets where halves[Self.module(layer: layer, projection: proj)] == nil {
                throw LoraDistError("\(weightsPath): no adapter on layer \(layer)'s \(proj), though target_modules names it and layer \(layers - 1) has adapters")
            }
        }
        var modules: [String: Module] = [:]
        for (module, pair) in halves {
            let which = pair.a == nil ? "lora_A" : "lora_B"
            guard let a = pair.a, let b = pair.b else {
                throw LoraDistError("\(weightsPath): \(module) has no \(which).weight")
            }
            var values: [[Float]] = []
            for e in [a, b] {
                let v = try st.floats(e.name)
                if let i = v.firstIndex(where: { !$0.isFinite }) {
                    throw LoraDistError("\(weightsPath): tensor '\(e.name)' holds a non-finite value (NaN or infinity) at element \(i)")
                }
                values.append(v)
            }
            modules[module] = Module(a: values[0], b: values[1], rank: a.shape[0], inDim: a.shape[1], outDim: b.shape[0])
        }
        self.modules = modules
        self.layers = layers
    }

    /// "model.layers.{layer}.self_attn.{projection}" (or ".mlp." for gate, up and down).
    public static func module(layer: Int, projection p: String) -> String {
        "model.layers.\(layer)." + (["gate_proj", "up_proj", "down_proj"].contains(p) ? "mlp." : "self_attn.") + p
    }

    /// (layer, projection) of a module path, nil when it is not one of a decoder layer's projections.
    static func parse(module: String) -> (Int, String)? {
        let parts = module.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]), layer >= 0,
              String(layer) == parts[2], LoRAConfig.projections.contains(parts[4]),
              Self.module(layer: layer, projection: parts[4]) == module else { return nil }
        return (layer, parts[4])
    }

    /// Module paths in order: layer by layer, projections in forward order.
    public var moduleOrder: [String] {
        (0..<layers).flatMap { l in lora.targets.map { Self.module(layer: l, projection: $0) } }
    }

    /// Checks that the adapter fits a model of `config`: the same tensors, with the same shapes,
    /// as a model built with this adapter's LoRA config would have.
    public func check(fits config: ModelConfig, base: String) throws {
        let specs: [ParamSpec]
        do { specs = try LlamaModel.specs(config: config, lora: lora) } catch let e as LoraDistError {
            throw LoraDistError("adapter \(label) does not fit \(base): \(e.message)")
        }
        let expected = Dictionary(uniqueKeysWithValues: specs.filter { $0.name.hasSuffix(".lora_A.weight") }.map {
            (String($0.name.dropLast(".lora_A.weight".count)), $0.shape)
        })
        for module in moduleOrder {
            guard let shape = expected[module] else {
                throw LoraDistError("adapter \(label): \(module) has no place in \(base) (\(config.numHiddenLayers) layers): the adapter was made for another base")
            }
            let m = modules[module]!
            let outDim = specs.first { $0.name == module + ".weight" }!.shape[0]
            guard m.inDim == shape[1], m.outDim == outDim else {
                throw LoraDistError("adapter \(label): \(module) is [\(m.outDim), \(m.inDim)] through its adapter, \(base) has [\(outDim), \(shape[1])]: the adapter was made for another base")
            }
        }
        guard layers == config.numHiddenLayers else {
            throw LoraDistError("adapter \(label) has adapters on \(layers) layers, \(base) has \(config.numHiddenLayers): the adapter was made for another base")
        }
    }

    /// The adapters were made for one base: with `base` (a config and its name), each fits it;
    /// without, they agree with each other (layers, and every projection's in and out sizes)
    /// and name the same base_model_name_or_path.
    public static func checkOneBase(_ adapters: [PEFTAdapter], base: (config: ModelConfig, name: String)?) throws {
        if let base {
            for a in adapters { try a.check(fits: base.config, base: base.name) }
            return
        }
        guard let first = adapters.first else { return }
        var dims: [String: (out: Int, in: Int, from: PEFTAdapter)] = [:]
        for a in adapters {
            guard a.layers == first.layers else {
                throw LoraDistError("adapters \(first.label) and \(a.label) were made for different bases: \(first.layers) and \(a.layers) layers")
            }
            for module in a.moduleOrder {
                let m = a.modules[module]!, proj = String(module.split(separator: ".").last!)
                if let d = dims[proj] {
                    guard d.out == m.outDim, d.in == m.inDim else {
                        throw LoraDistError("adapters \(d.from.label) and \(a.label) were made for different bases: \(proj) is [\(d.out), \(d.in)] in one, [\(m.outDim), \(m.inDim)] in the other")
                    }
                } else {
                    dims[proj] = (m.outDim, m.inDim, a)
                }
            }
            if let x = first.baseModel, let y = a.baseModel, x != y {
                throw LoraDistError("adapters \(first.label) and \(a.label) name different bases (\(x), \(y)): give --model BASE to check both fit one")
            }
        }
    }
}

/// PEFT's `LoraModel.add_weighted_adapter` (peft 0.21) for the `linear` and `cat` combination
/// types, on adapter files: the result is the adapter peft would build and save.
///
/// The new config is the first adapter's with r = the new rank, lora_alpha = the new rank (its
/// scaling is therefore 1, or √r when the first adapter uses rsLoRA) and target_modules the
/// union of the adapters'. With sᵢ the scaling of adapter i (alphaᵢ/rᵢ, or alphaᵢ/√rᵢ):
/// - linear (equal ranks; the new rank is theirs): per module, over the adapters that target it,
///   A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ and B = Σ √|wᵢsᵢ|·Bᵢ. (B·A then holds cross terms: an
///   approximation, as peft's documentation says.)
/// - cat (new rank Σ rᵢ): per module, the adapters that target it stack their rows wᵢ·sᵢ·Aᵢ
///   into A and their columns Bᵢ into B from the first row/column on; the rest stays zero.
///   B·A = Σ wᵢ·sᵢ·Bᵢ·Aᵢ exactly.
/// - one adapter: peft always combines it as linear.
/// Arithmetic is float32 in peft's order (weights rounded to float32 first).
/// lora-dist is stricter than peft in one place: linear needs equal target modules (peft
/// would combine, per module, only the adapters that target it).
public enum AdapterCombine {
    public enum Method: String, CaseIterable { case linear, cat }

    public struct Result {
        public let lora: LoRAConfig
        public let baseModel: String
        public let method: Method          // the method applied (one adapter: linear)
        public let tensors: [(name: String, shape: [Int], values: [Float])]   // PEFT names
    }

    /// peft's scaling of an adapter, in double as Python computes it.
    static func scaling(_ c: LoRAConfig) -> Double {
        c.useRSLoRA ? Double(c.alpha) / Double(c.rank).squareRoot() : Double(c.alpha) / Double(c.rank)
    }

    public static func combine(_ adapters: [PEFTAdapter], weights: [Double], method requested: Method) throws -> Result {
        guard let first = adapters.first else { throw LoraDistError("no adapter to combine: give --adapter NAME=DIR") }
        try AdapterArgument.checkUnique(adapters.map(\.name))
        guard weights.count == adapters.count else {
            throw LoraDistError("--weights has \(weights.count) value\(weights.count == 1 ? "" : "s") for \(adapters.count) adapter\(adapters.count == 1 ? "" : "s")")
        }
        if let i = weights.firstIndex(where: { !$0.isFinite }) {
            throw LoraDistError("--weights: the weight of \(adapters[i].name) is \(weights[i]), not a finite number")
        }
        let method = adapters.count == 1 ? .linear : requested
        let rank: Int
        switch method {
        case .linear:
            if let other = adapters.first(where: { $0.lora.rank != first.lora.rank }) {
                throw LoraDistError("linear needs adapters of one rank: \(first.name) has r \(first.lora.rank), \(other.name) r \(other.lora.rank) (--method cat concatenates ranks)")
            }
            if let other = adapters.first(where: { $0.lora.targets != first.lora.targets }) {
                throw LoraDistError("linear needs adapters on the same target modules: \(first.name) adapts \(first.lora.targets.joined(separator: ",")), \(other.name) \(other.lora.targets.joined(separator: ",")) (--method cat combines them)")
            }
            rank = first.lora.rank
        case .cat:
            rank = adapters.reduce(0) { $0 + $1.lora.rank }
        }
        try PEFTAdapter.checkOneBase(adapters, base: nil)  // same layers and sizes, whatever the base names
        let targets = LoRAConfig.projections.filter { p in adapters.contains { $0.lora.targets.contains(p) } }
        let lora = try LoRAConfig(rank: rank, alpha: Float(rank), dropout: first.lora.dropout, targets: targets,
                                  useRSLoRA: first.lora.useRSLoRA)
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for layer in 0..<first.layers {
            for proj in targets {
                let module = PEFTAdapter.module(layer: layer, projection: proj)
                let present = adapters.indices.filter { adapters[$0].modules[module] != nil }
                let m0 = adapters[present[0]].modules[module]!
                let inDim = m0.inDim, outDim = m0.outDim
                var a = [Float](repeating: 0, count: rank * inDim), b = [Float](repeating: 0, count: outDim * rank)
                switch method {
                case .linear:
                    for i in present {
                        let m = adapters[i].modules[module]!
                        let ws = weights[i] * scaling(adapters[i].lora)
                        let wb = Float(abs(ws).squareRoot()), wa = ws >= 0 ? wb : -wb
                        for k in a.indices { a[k] += m.a[k] * wa }
                        for k in b.indices { b[k] += m.b[k] * wb }
                    }
                case .cat:
                    var row = 0
                    for i in present {
                        let m = adapters[i].modules[module]!
                        let w = Float(weights[i]), s = Float(scaling(adapters[i].lora))
                        for k in 0..<(m.rank * inDim) { a[row * inDim + k] = (m.a[k] * w) * s }
                        for o in 0..<outDim {
                            for j in 0..<m.rank { b[o * rank + row + j] = m.b[o * m.rank + j] }
                        }
                        row += m.rank
                    }
                }
                let name = HuggingFace.peftPrefix + module
                tensors.append((name + ".lora_A.weight", [rank, inDim], a))
                tensors.append((name + ".lora_B.weight", [outDim, rank], b))
            }
        }
        return Result(lora: lora, baseModel: first.baseModel ?? "", method: method, tensors: tensors)
    }

    /// Writes the combination as a PEFT adapter directory.
    public static func write(_ r: Result, to dir: String) throws {
        try Files.createDirectory(dir)
        try SafeTensors.write(r.tensors, to: dir + "/adapter_model.safetensors")
        try Files.writeAtomically(try JSONCoding.object(r.lora.peftConfig(baseModel: r.baseModel)), to: dir + "/adapter_config.json")
    }
}

/// `--adapter NAME=DIR` (or a bare `DIR`, named by its last path component) as eval, generate,
/// export and adapters combine take it, and `--weights w1,w2,...`.
public struct AdapterArgument: Equatable {
    public let name: String
    public let dir: String
    public let named: Bool    // given as NAME=DIR

    public init(name: String, dir: String, named: Bool) {
        self.name = name; self.dir = dir; self.named = named
    }

    /// A name: letters, digits, '_', '-', '.'.
    static func isName(_ s: Substring) -> Bool {
        !s.isEmpty && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }
    }

    /// Each value is NAME=DIR, or a DIR (an existing directory is always a DIR, even with '=' in it).
    /// Names must differ.
    public static func parse(_ values: [String]) throws -> [AdapterArgument] {
        var out: [AdapterArgument] = []
        for v in values {
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: v, isDirectory: &isDir) && isDir.boolValue
            if !exists, let eq = v.firstIndex(of: "="), isName(v[..<eq]) {
                let dir = String(v[v.index(after: eq)...])
                guard !dir.isEmpty else { throw LoraDistError("--adapter \(v): no directory after '='") }
                out.append(AdapterArgument(name: String(v[..<eq]), dir: dir, named: true))
            } else {
                guard !v.isEmpty, !v.contains("=") || exists else {
                    throw LoraDistError("--adapter \(v): give NAME=DIR with a name of letters, digits, '_', '-' or '.'")
                }
                var trimmed = Substring(v)
                while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
                let base = trimmed.split(separator: "/").last.map(String.init) ?? v
                out.append(AdapterArgument(name: base, dir: v, named: false))
            }
        }
        try checkUnique(out.map(\.name))
        return out
    }

    static func checkUnique(_ names: [String]) throws {
        var seen: Set<String> = []
        for n in names where !seen.insert(n).inserted {
            throw LoraDistError("adapter name '\(n)' is given twice: each adapter needs its own (NAME=DIR)")
        }
    }

    /// Reads every adapter (each checked on its own).
    public static func load(_ args: [AdapterArgument]) throws -> [PEFTAdapter] {
        try args.map { try PEFTAdapter(name: $0.name, dir: $0.dir) }
    }

    /// "0.7,0.3": one finite number per adapter. nil: `default` for each (an error when nil too).
    public static func weights(_ text: String?, count: Int, default d: Double? = nil) throws -> [Double] {
        guard let text else {
            guard let d else { throw LoraDistError("--weights is needed: one number per adapter") }
            return [Double](repeating: d, count: count)
        }
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        var out: [Double] = []
        for p in parts {
            guard let w = Double(p) else { throw LoraDistError("--weights \(text): '\(p)' is not a number") }
            guard w.isFinite else { throw LoraDistError("--weights \(text): \(p) is not a finite number") }
            out.append(w)
        }
        guard out.count == count else {
            throw LoraDistError("--weights has \(out.count) value\(out.count == 1 ? "" : "s") for \(count) adapter\(count == 1 ? "" : "s")")
        }
        return out
    }
}
