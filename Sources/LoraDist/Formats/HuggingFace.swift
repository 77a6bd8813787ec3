import Foundation

/// Moving weights between a model and Hugging Face / PEFT safetensors files.
/// Names are Hugging Face's, so tensors move unchanged; shapes are checked.
public enum HuggingFace {
    /// PEFT saves adapters under this prefix (with the ".default" adapter name stripped).
    public static let peftPrefix = "base_model.model."

    /// The weights of a Hugging Face model directory: model.safetensors, or the
    /// shards a model.safetensors.index.json names. Files are memory-mapped.
    public struct Weights {
        public let files: [String: SafeTensors]     // file name → file
        public let fileOf: [String: String]         // tensor name → file name

        public init(modelDir dir: String) throws {
            let fm = FileManager.default
            let index = dir + "/model.safetensors.index.json"
            if fm.fileExists(atPath: index) {
                guard let data = fm.contents(atPath: index),
                      let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                      let map = obj["weight_map"] as? [String: String] else {
                    throw LoraDistError("\(index): not a safetensors index (no \"weight_map\" object)")
                }
                var files: [String: SafeTensors] = [:]
                for file in Set(map.values).sorted() {
                    guard !file.contains("/") else { throw LoraDistError("\(index): shard name \(file) must be a file in \(dir)") }
                    files[file] = try SafeTensors(path: dir + "/" + file)
                }
                for (name, file) in map where files[file]!.entries[name] == nil {
                    throw LoraDistError("\(index) puts '\(name)' in \(file), which does not hold it")
                }
                self.files = files
                fileOf = map
            } else {
                let single = dir + "/model.safetensors"
                guard fm.fileExists(atPath: single) else {
                    throw LoraDistError("\(dir) holds neither model.safetensors nor model.safetensors.index.json")
                }
                let st = try SafeTensors(path: single)
                files = ["model.safetensors": st]
                fileOf = Dictionary(uniqueKeysWithValues: st.names.map { ($0, "model.safetensors") })
            }
        }

        public func locate(_ name: String) throws -> (SafeTensors, SafeTensors.Entry) {
            guard let file = fileOf[name], let st = files[file] else {
                throw LoraDistError("the model's weights hold no tensor named '\(name)'")
            }
            return (st, try st.entry(name))
        }
    }

    /// Checks that `weights` hold every base tensor of `specs`, floating, with the right shape,
    /// and nothing else: a tensor the model would not consume means the config describes
    /// another model (say, biases a config does not announce), so it is refused by name.
    /// RoPE's inv_freq buffers, which old Llama checkpoints saved, are derived from the config.
    public static func checkBase(_ specs: [ParamSpec], in weights: Weights) throws {
        let expected = Set(specs.map(\.name))
        for name in weights.fileOf.keys.sorted() where !expected.contains(name) && !name.hasSuffix(".rotary_emb.inv_freq") {
            let file = weights.fileOf[name]!
            let hint = name == "lm_head.weight" ? " (the config ties the head to the embedding: tie_word_embeddings is true)"
                : name.hasSuffix(".bias") ? " (the config announces no bias there)"
                : name.contains("_norm.") ? " (the config's model_type has no such norm)" : ""
            throw LoraDistError("\(file): tensor '\(name)' is not consumed by this model\(hint): refusing to ignore it")
        }
        for spec in specs where !spec.name.contains(".lora_") {
            let (st, e) = try weights.locate(spec.name)
            guard SafeTensors.floating.contains(e.dtype) else {
                throw LoraDistError("\(st.path): '\(spec.name)' is \(e.dtype), not a floating tensor")
            }
            guard e.shape == spec.shape else {
                throw LoraDistError("\(st.path): '\(spec.name)' has shape \(e.shape), the model expects \(spec.shape)")
            }
        }
    }

    /// Loads the base weights; only the `owned` arena ranges are read from the files.
    public static func loadBase(_ model: LlamaModel, from weights: Weights, owned: [Range<Int>]? = nil) throws {
        try checkBase(model.store.params.map(\.spec), in: weights)
        for p in model.store.params where !p.name.contains(".lora_") {
            let (st, _) = try weights.locate(p.name)
            try model.store.fill(p, owned: owned ?? model.store.all) { try st.floats(p.name, elements: $0, into: $1) }
        }
    }

    /// Loads the base from one safetensors file (tests, small models).
    public static func loadBase(_ model: LlamaModel, from st: SafeTensors, owned: [Range<Int>]? = nil) throws {
        let w = try Weights(single: st)
        try loadBase(model, from: w, owned: owned)
    }

    /// Loads LoRA A and B from a PEFT adapter_model.safetensors; checks that the
    /// adapter fits this model (every tensor present with its shape, none extra).
    public static func loadAdapter(_ model: LlamaModel, from st: SafeTensors, owned: [Range<Int>]? = nil) throws {
        let loraParams = model.store.params.filter { $0.name.contains(".lora_") }
        guard !loraParams.isEmpty else { throw LoraDistError("the model has no LoRA adapters to load into") }
        let expected = Set(loraParams.map { peftPrefix + $0.name })
        if let extra = st.names.first(where: { !expected.contains($0) }) {
            throw LoraDistError("\(st.path): '\(extra)' has no place in this model: the adapter was made for another base or other target modules")
        }
        for p in loraParams {
            let name = peftPrefix + p.name
            let e = try st.entry(name)
            guard e.shape == p.spec.shape else {
                throw LoraDistError("\(st.path): '\(name)' has shape \(e.shape), the model expects \(p.spec.shape): the adapter was made for another base or rank")
            }
            try model.store.fill(p, owned: owned ?? model.store.all) { try st.floats(name, elements: $0, into: $1) }
        }
    }
}

extension HuggingFace.Weights {
    init(single st: SafeTensors) throws {
        files = [st.path: st]
        fileOf = Dictionary(uniqueKeysWithValues: st.names.map { ($0, st.path) })
    }
}

extension LoRAConfig {
    /// Reads a PEFT adapter_config.json (r, lora_alpha, lora_dropout, target_modules, use_rslora).
    public static func fromPEFT(json data: Data, source: String = "adapter_config.json") throws -> LoRAConfig {
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoraDistError("\(source): not a JSON object")
        }
        guard (o["peft_type"] as? String ?? "LORA") == "LORA" else {
            throw LoraDistError("\(source): peft_type \(o["peft_type"]!) is not LORA")
        }
        // PEFT writes every LoraConfig field; a variant (DoRA, per-layer ranks, trained biases,
        // excluded layers, ...) shows as a field that is not off. Those are refused by name,
        // as is any field lora-dist does not know that holds something.
        let read: Set<String> = ["r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "peft_type", "bias"]
        let inert: Set<String> = ["task_type", "base_model_name_or_path", "revision", "peft_version", "inference_mode",
                                  "init_lora_weights", "auto_mapping", "megatron_core", "qalora_group_size", "loftq_config"]
        for key in o.keys.sorted() where !read.contains(key) && !inert.contains(key) {
            let v = o[key]!
            let off = v is NSNull || (v as? Bool) == false || (v as? [String: Any])?.isEmpty == true || (v as? [Any])?.isEmpty == true
            if !off { throw LoraDistError("\(source): \"\(key)\" is \(v): not implemented (lora-dist trains plain LoRA on whole projections)") }
        }
        if let bias = o["bias"], !(bias is NSNull), bias as? String != "none" {
            throw LoraDistError("\(source): \"bias\" is \(bias): only \"none\" is implemented (biases stay frozen under LoRA)")
        }
        guard let rv = o["r"] else { throw LoraDistError("\(source): missing \"r\"") }
        guard let rn = rv as? NSNumber, rn.doubleValue.isFinite, rn.doubleValue == rn.doubleValue.rounded(),
              abs(rn.doubleValue) < 1e9 else {
            throw LoraDistError("\(source): \"r\" must be an integer, got \(rv)")
        }
        func number(_ key: String, default d: Float) throws -> Float {
            guard let v = o[key], !(v is NSNull) else { return d }
            guard let n = v as? NSNumber else { throw LoraDistError("\(source): \"\(key)\" must be a number, got \(v)") }
            return n.floatValue
        }
        let targets: [String]
        if let list = o["target_modules"] as? [String] { targets = list }
        else if let one = o["target_modules"] as? String { targets = [one] }
        else { throw LoraDistError("\(source): missing \"target_modules\"") }
        do {
            return try LoRAConfig(rank: rn.intValue, alpha: try number("lora_alpha", default: Float(rn.intValue)),
                                  dropout: try number("lora_dropout", default: 0), targets: targets,
                                  useRSLoRA: (o["use_rslora"] as? Bool) ?? false)
        } catch let e as LoraDistError where !e.message.hasPrefix(source) { throw LoraDistError("\(source): \(e.message)") }
    }

    /// PEFT's adapter_config.json for this adapter.
    public func peftConfig(baseModel: String) -> [String: Any] {
        ["peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha.shortest, "lora_dropout": dropout.shortest,
         "target_modules": targets, "use_rslora": useRSLoRA, "bias": "none", "base_model_name_or_path": baseModel,
         "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "modules_to_save": NSNull(),
         "use_dora": false]
    }
}

extension HuggingFace {
    /// Writes a Hugging Face model directory (config.json, model.safetensors, and the tokenizer
    /// of `source`, the base the model came from: ModelSource.saveTokenizer) with every adapter
    /// folded into its base weight: W + s·B·A.
    public static func saveMerged(_ model: LlamaModel, tokenizerOf source: ModelSource, to dir: String) throws {
        var fused: [String: [Float]] = [:]
        for lin in model.linears where lin.loraA != nil { fused[lin.weight.name] = lin.fused() }
        try saveMerged(model, fused: fused, tokenizerOf: source, to: dir)
    }

    /// Writes `model`'s config and weights, with `fused` (weight name → values) in place of those
    /// weights, and `source`'s tokenizer; `note` goes into the safetensors metadata (lora_dist_merge).
    static func saveMerged(_ model: LlamaModel, fused: [String: [Float]], tokenizerOf source: ModelSource, to dir: String,
                           note: String? = nil) throws {
        try Files.createDirectory(dir)
        try source.saveTokenizer(to: dir)
        let tensors = model.store.params.filter { !$0.name.contains(".lora_") }.map { p in
            (name: p.name, shape: p.spec.shape, values: fused[p.name] ?? p.floats)
        }
        var config = model.config.huggingFaceJSON()
        var metadata = ["format": "pt"]
        if let note { metadata["lora_dist_merge"] = note }
        if model.nf4Base {
            // The weights are fp32 again, but their values are those of the NF4 base the
            // adapters were trained on, not of the original checkpoint: say so.
            let note = "adapters merged into the NF4-dequantized base (QLoRA): projection weights carry 4-bit quantization error"
            config["lora_dist"] = ["merged_from": "qlora", "base_storage": "nf4", "block_size": NF4Layout.blockSize,
                                   "double_quant_block_size": NF4Layout.scaleBlockSize, "note": note]
            metadata["lora_dist_merge"] = note
        }
        try SafeTensors.write(tensors, to: dir + "/model.safetensors", metadata: metadata)
        try Files.writeAtomically(try JSONCoding.object(config), to: dir + "/config.json")
    }

    /// Writes a PEFT adapter directory (adapter_config.json, adapter_model.safetensors).
    public static func savePEFT(_ model: LlamaModel, baseModel: String, to dir: String) throws {
        guard let lora = model.lora else { throw LoraDistError("a full fine-tuning model has no adapter to export as PEFT") }
        try Files.createDirectory(dir)
        let tensors = model.store.params.filter { $0.name.contains(".lora_") }.map { p in
            (name: peftPrefix + p.name, shape: p.spec.shape, values: Array(UnsafeBufferPointer(start: p.value, count: p.count)))
        }
        try SafeTensors.write(tensors, to: dir + "/adapter_model.safetensors")
        try Files.writeAtomically(try JSONCoding.object(lora.peftConfig(baseModel: baseModel)), to: dir + "/adapter_config.json")
    }
}
