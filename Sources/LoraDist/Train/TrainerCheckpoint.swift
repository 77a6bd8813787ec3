import Foundation

/// Saving and resuming: every writer rank writes the slices it owns, rank 0
/// gathers their slice lists and writes the manifest last, then `latest`.
extension Trainer {
    public var checkpointRoot: String { options.runDir + "/checkpoints" }

    /// The owned elements of the trainable arena, tensor by tensor:
    /// (parameter, element range within the tensor, arena offset of its first element).
    var ownedPieces: [(Param, Range<Int>, Int)] { loaded.ownedPieces }

    public func baseIdentity() -> String { BaseIdentity.of(model) }

    /// The fields of PEFT's adapter_config.json the manifest's lora_config_json keeps (docs/formats.md).
    static let manifestLoRAKeys: Set<String> = ["peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora"]

    /// lora_config_json: `LoRAConfig.peftConfig` (what a PEFT export writes) limited to the manifest's fields.
    func loraConfigJSON() -> String {
        guard let l = model.lora else { return "" }
        let d = l.peftConfig(baseModel: options.model).filter { Self.manifestLoRAKeys.contains($0.key) }
        return String(decoding: (try? JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
    }

    func optimizerConfigJSON() -> String {
        let o = options.optimizer, s = schedule
        let d: [String: Any] = ["type": "adamw", "beta1": o.beta1.shortest, "beta2": o.beta2.shortest, "eps": o.eps.shortest,
                                "weight_decay": o.weightDecay.shortest, "clip_norm": o.clipNorm.shortest, "lr": s.lr.shortest,
                                "warmup_steps": s.warmup, "total_steps": s.total, "min_lr": s.minLR.shortest]
        return String(decoding: (try? JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
    }

    /// Saves the state after `step`. Collective; a failure on any rank fails every rank.
    public func saveCheckpoint(step: Int, tokens: Int, runState: RunState?, best: Bool = false) throws {
        let root = checkpointRoot, name = CheckpointFiles.stepName(step), dir = root + "/" + name
        try cluster.agree {
            guard cluster.isRoot else { return }
            let fm = FileManager.default
            try Files.createDirectory(root)
            // An existing directory of this step is an interrupted save, or a checkpoint
            // newer than the one this run resumed from (resume repoints `latest` to the
            // checkpoint it loads). Never the one `latest` names.
            if fm.fileExists(atPath: dir) {
                guard CheckpointFiles.latest(root) != name else {
                    throw LoraDistError("refusing to overwrite \(dir): it is the latest checkpoint")
                }
                try fm.removeItem(atPath: dir)
            }
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: false)
        }
        // One node's ranks hold every owned range; the other nodes hold copies.
        let writer = cluster.writesCheckpoints
        let refs: [SliceRef] = try cluster.agree {
            guard writer else { return [] }
            let m = optimizer.m.ptr, v = optimizer.v.ptr, lo = optimizer.range.lowerBound
            var out: [CheckpointFiles.Outgoing] = []
            for (p, r, arena) in ownedPieces {
                for (kind, ptr) in [("param", model.store.values + arena), ("adam_m", m + (arena - lo)), ("adam_v", v + (arena - lo))] {
                    out.append(.init(name: p.name, kind: kind, shape: p.spec.shape, start: r.lowerBound, count: r.count,
                                     values: ptr))
                }
            }
            return try CheckpointFiles.writeShard(dir: dir, file: CheckpointFiles.shardName(cluster.rank), slices: out)
        }
        let lists = cluster.gatherAtRoot(Array(SliceRef.encodeList(refs)))
        try cluster.agree {
            guard let lists else { return }
            var m = Manifest()
            m.programVersion = LoraDistVersion.string
            m.step = step
            m.tokensSeen = tokens
            m.modelConfigJSON = String(decoding: try JSONSerialization.data(withJSONObject: model.config.huggingFaceJSON(),
                                                                            options: [.sortedKeys]), as: UTF8.self)
            m.loraConfigJSON = loraConfigJSON()
            m.optimizerConfigJSON = optimizerConfigJSON()
            m.worldSize = cluster.size
            m.nodes = cluster.nodes
            m.exchange = options.exchange.rawValue
            m.slices = try lists.flatMap { try SliceRef.decodeList(Data($0)) }
            m.baseIdentity = baseIdentity()
            m.mode = options.mode.rawValue
            m.samplerSeed = options.seed
            m.optimizerStep = optimizer.t
            m.createdUTC = ISO8601DateFormatter().string(from: Date())
            m.modelSource = options.model
            m.runStateJSON = try RunState.json(runState)
            try Files.writeAtomically(m.encoded(), to: dir + "/" + CheckpointFiles.manifestName)
            if best { try Files.writeAtomically(Data((name + "\n").utf8), to: root + "/" + CheckpointFiles.bestName) }
            try Files.writeAtomically(Data((name + "\n").utf8), to: root + "/" + CheckpointFiles.latestName)
            CheckpointFiles.prune(root, keep: options.keepLast, protect: name)
        }
    }

    /// The checkpoint `which` names (any form CheckpointInspector.locate accepts), checked
    /// against this run: mode, model config, LoRA config and base weights. Reads the manifest
    /// only. `lora-dist train` calls it before printing anything, so a checkpoint that cannot
    /// be resumed fails with one line.
    public func resumable(_ which: String) throws -> (dir: String, manifest: Manifest) {
        let dir = try CheckpointInspector.locate(which, checkpoints: checkpointRoot)
        let manifest = try CheckpointFiles.readManifest(dir)
        let src = dir + "/" + CheckpointFiles.manifestName
        guard manifest.mode == options.mode.rawValue else {
            throw LoraDistError("\(src) is a \(manifest.mode) checkpoint; this run is --mode \(options.mode.rawValue)")
        }
        try loaded.check(manifest, source: src)
        return (dir, manifest)
    }

    /// Loads a checkpoint into this run (any world size). Collective. Everything
    /// is read and verified into private buffers first; the shared weights and
    /// the optimizer change only when every rank has succeeded.
    /// Returns (step, tokens seen, run state).
    /// With `continuing` (a resumed run) `latest` is pointed at the loaded checkpoint.
    public func resume(_ which: String, continuing: Bool = true) throws -> (step: Int, tokens: Int, state: RunState?) {
        let (manifest, values, m, v) = try cluster.agree { () throws -> (Manifest, [Float], [Float], [Float]) in
            let (dir, manifest) = try resumable(which)
            let read = try loaded.readOwned(["param", "adam_m", "adam_v"], manifest: manifest, dir: dir)
            return (manifest, read[0], read[1], read[2])
        }
        let state = try cluster.agree { try RunState.from(json: manifest.runStateJSON, source: "checkpoint \(which)") }
        // From here this run continues from that checkpoint: `latest` names it, so
        // saves of later steps may replace checkpoints newer than it.
        try cluster.agree {
            guard cluster.isRoot, continuing else { return }
            let dir = try CheckpointInspector.locate(which, checkpoints: checkpointRoot)
            let name = (dir as NSString).lastPathComponent
            // However the checkpoint was named (latest, a step, this run's directory, a path to the
            // pointer file), it is this run's own when its folder is this run's checkpoints folder.
            func canonical(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.resolvingSymlinksInPath().path }
            if canonical((dir as NSString).deletingLastPathComponent) == canonical(checkpointRoot), CheckpointFiles.latest(checkpointRoot) != name {
                try Files.writeAtomically(Data((name + "\n").utf8), to: checkpointRoot + "/" + CheckpointFiles.latestName)
            }
        }
        let range = optimizer.range
        loaded.setOwnedTrainable(values)
        m.withUnsafeBufferPointer { optimizer.m.ptr.update(from: $0.baseAddress!, count: range.count) }
        v.withUnsafeBufferPointer { optimizer.v.ptr.update(from: $0.baseAddress!, count: range.count) }
        optimizer.setStep(manifest.optimizerStep)
        loaded.publish()
        return (manifest.step, manifest.tokensSeen, state)
    }
}

public enum LoraDistVersion {
    public static let string = "0.1.0"
}
