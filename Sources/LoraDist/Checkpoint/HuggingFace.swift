import Foundation

/// Moving weights between a model and Hugging Face / PEFT safetensors files.
/// Names are Hugging Face's, so tensors move unchanged; shapes are checked.
public enum HuggingFace {
    /// PEFT saves adapters under this prefix (with the ".default" adapter name stripped).
    public static let peftPrefix = "base_model.model."

    /// Loads every base weight of `model` from a model.safetensors file.
    /// A tied model's missing lm_head is fine; any other missing tensor is an error.
    /// Checks that `st` holds every base tensor of `specs` with the right shape.
    public static func checkBase(_ specs: [ParamSpec], in st: SafeTensors) throws {
        for spec in specs where !spec.name.contains(".lora_") {
            let e = try st.entry(spec.name)
            guard ["F32", "F16", "BF16", "F64"].contains(e.dtype) else {
                throw LoraDistError("\(st.path): '\(spec.name)' is \(e.dtype), not a floating tensor")
            }
            guard e.shape == spec.shape else {
                throw LoraDistError("\(st.path): '\(spec.name)' has shape \(e.shape), the model expects \(spec.shape)")
            }
        }
    }

    /// Shapes are checked for every tensor; values are written for the `owned` arena ranges only.
    public static func loadBase(_ model: LlamaModel, from st: SafeTensors, owned: [Range<Int>]? = nil) throws {
        for p in model.store.params where !p.name.contains(".lora_") {
            try copy(st, name: p.name, into: p, store: model.store, owned: owned)
        }
    }

    /// Loads LoRA A and B from a PEFT adapter_model.safetensors.
    public static func loadAdapter(_ model: LlamaModel, from st: SafeTensors, owned: [Range<Int>]? = nil) throws {
        let loraParams = model.store.params.filter { $0.name.contains(".lora_") }
        guard !loraParams.isEmpty else { throw LoraDistError("the model has no LoRA adapters to load into") }
        for p in loraParams { try copy(st, name: peftPrefix + p.name, into: p, store: model.store, owned: owned) }
    }

    static func copy(_ st: SafeTensors, name: String, into p: Param, store: ParameterStore, owned: [Range<Int>]?) throws {
        let e = try st.entry(name)
        guard e.shape == p.spec.shape else {
            throw LoraDistError("\(st.path): '\(name)' has shape \(e.shape), the model expects \(p.spec.shape)")
        }
        try store.write(p, owned: owned ?? store.all) { try st.floats(name) }
    }

    /// The model directory's weights file, when it has one.
    public static func weightsFile(modelPath: String) -> String? {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: modelPath, isDirectory: &isDir), isDir.boolValue else { return nil }
        let f = modelPath + "/model.safetensors"
        return FileManager.default.fileExists(atPath: f) ? f : nil
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
        guard let r = (o["r"] as? NSNumber)?.intValue else { throw LoraDistError("\(source): missing \"r\"") }
        let targets: [String]
        if let list = o["target_modules"] as? [String] { targets = list }
        else if let one = o["target_modules"] as? String { targets = [one] }
        else { throw LoraDistError("\(source): missing \"target_modules\"") }
        return try LoRAConfig(rank: r, alpha: (o["lora_alpha"] as? NSNumber)?.floatValue ?? Float(r),
                              dropout: (o["lora_dropout"] as? NSNumber)?.floatValue ?? 0, targets: targets,
                              useRSLoRA: (o["use_rslora"] as? NSNumber)?.boolValue ?? false)
    }
}

extension HuggingFace {
    /// Writes a Hugging Face model directory (config.json, model.safetensors) with
    /// every adapter folded into its base weight: W + s·B·A.
    public static func saveMerged(_ model: LlamaModel, to dir: String) throws {
        try RunFiles.createDirectory(dir)
        var fused: [String: [Float]] = [:]
        for lin in model.linears where lin.loraA != nil { fused[lin.weight.name] = lin.fused() }
        let tensors = model.store.params.filter { !$0.name.contains(".lora_") }.map { p in
            (name: p.name, shape: p.spec.shape,
             values: fused[p.name] ?? Array(UnsafeBufferPointer(start: p.value, count: p.count)))
        }
        try SafeTensors.write(tensors, to: dir + "/model.safetensors")
        try RunFiles.writeAtomically(try RunFiles.json(model.config.huggingFaceJSON()), to: dir + "/config.json")
    }
}
