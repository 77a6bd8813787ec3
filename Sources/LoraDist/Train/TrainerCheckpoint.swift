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

    /// PowerSGD's state in a checkpoint (docs/formats.md): the error feedback summed over the
    /// ranks, per trainable tensor, and each compressed tensor's Q ([cols, r]) under its name.
    /// Checkpoints before the fused projections held every Q in one tensor, `powersgd.q`, in the
    /// arena order of that time, which moved under LoRA (the A matrices of a group are adjacent).
    static let powerSGDErrorKind = "powersgd_error", powerSGDQKind = "powersgd_q", powerSGDQName = "powersgd.q"

    /// The compressed matrices (rank > 0) with the names of their tensors.
    func powerSGDMatrices(_ p: PowerSGD) -> [(name: String, matrix: PowerSGD.Matrix)] {
        let byOffset = Dictionary(model.store.trainable.map { ($0.offset, $0.name) }, uniquingKeysWith: { a, _ in a })
        return p.matrices.filter { $0.rank > 0 }.map { (byOffset[$0.offset]!, $0) }
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
        let powerSGD = exchange.powerSGD.flatMap { $0.hasQ ? $0 : nil }
        // PowerSGD's error feedback is saved as its sum over the ranks: the compressed result
        // depends on the ranks' errors only through their sum (PowerSGD.swift), so a run
        // resumed on any world size continues as it would have.
        let errorSum = powerSGD.map { p -> FloatBuffer in
            let b = FloatBuffer(p.count)
            b.ptr.update(from: p.error.ptr, count: p.count)
            exchange.sum(b.ptr, count: p.count)
            return b
        }
        let refs: [SliceRef] = try cluster.agree {
            guard writer else { return [] }
            let m = optimizer.m.ptr, v = optimizer.v.ptr, lo = optimizer.range.lowerBound
            var out: [CheckpointFiles.Outgoing] = []
            for (p, r, arena) in ownedPieces {
                var kinds = [("param", model.store.values + arena), ("adam_m", m + (arena - lo)), ("adam_v", v + (arena - lo))]
                if let errorSum { kinds.append((Self.powerSGDErrorKind, errorSum.ptr + arena)) }
                for (kind, ptr) in kinds {
                    out.append(.init(name: p.name, kind: kind, shape: p.spec.shape, start: r.lowerBound, count: r.count,
                                     values: ptr))
                }
            }
            // Q is the same on every rank: rank 0 writes it, a tensor's Q under the tensor's name.
            if let powerSGD, cluster.isRoot {
                for (name, m) in powerSGDMatrices(powerSGD) {
                    out.append(.init(name: name, kind: Self.powerSGDQKind, shape: [m.cols, m.rank], start: 0,
                                     count: m.cols * m.rank, values: powerSGD.q.ptr + m.q))
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
        _ = try powerSGDState(try RunState.from(json: manifest.runStateJSON, source: src), dir: dir)
        return (dir, manifest)
    }

    /// Whether the checkpoint carries PowerSGD state this run takes over. A checkpoint with such
    /// state resumes only with PowerSGD at the same rank: another method or rank would drop the
    /// error feedback (gradient not yet applied) without saying so.
    func powerSGDState(_ state: RunState?, dir: String) throws -> Bool {
        guard state?.powersgdState == true else { return false }
        let r = state?.powersgdRank ?? 0, c = options.compression
        guard c.method == .powersgd, c.powerSGDRank == r else {
            throw LoraDistError("\(dir) holds PowerSGD state (rank \(r): error feedback and Q); resume it with --grad-compression powersgd --powersgd-rank \(r)")
        }
        return true
    }

    /// Loads a checkpoint into this run (any world size). Collective. Everything
    /// is read and verified into private buffers first; the shared weights and
    /// the optimizer change only when every rank has succeeded.
    /// Returns (step, tokens seen, run state).
    /// With `continuing` (a resumed run) `latest` is pointed at the loaded checkpoint.
    public func resume(_ which: String, continuing: Bool = true) throws -> (step: Int, tokens: Int, state: RunState?) {
        let (manifest, values, m, v, state, compression) = try cluster.agree {
            () throws -> (Manifest, [Float], [Float], [Float], RunState?, (error: [Float], q: [Float]?)?) in
            let (dir, manifest) = try resumable(which)
            let state = try RunState.from(json: manifest.runStateJSON, source: "checkpoint \(which)")
            let withPowerSGD = try powerSGDState(state, dir: dir)
            let read = try loaded.readOwned(["param", "adam_m", "adam_v"] + (withPowerSGD ? [Self.powerSGDErrorKind] : []),
                                            manifest: manifest, dir: dir)
            var compression: (error: [Float], q: [Float]?)?
            if withPowerSGD, let p = exchange.powerSGD {
                var q: [Float]? = [Float](repeating: 0, count: p.q.count)
                let index = CheckpointFiles.index(manifest), reader = CheckpointFiles.Reader(dir: dir)
                let flat = index[Self.powerSGDQName + "#" + Self.powerSGDQKind] != nil
                try q!.withUnsafeMutableBufferPointer { qs in
                    if flat && options.mode.hasAdapters {
                        return   // the old layout: its order of the adapters' matrices is not this one's
                    } else if flat {
                        // Full fine-tuning: the weight matrices kept their order.
                        try CheckpointFiles.gather(Self.powerSGDQName, kind: Self.powerSGDQKind, range: 0..<p.q.count,
                                                   into: qs.baseAddress!, manifest: manifest, reader: reader, index: index)
                    } else {
                        for (name, m) in powerSGDMatrices(p) {
                            try CheckpointFiles.gather(name, kind: Self.powerSGDQKind, range: 0..<(m.cols * m.rank),
                                                       into: qs.baseAddress! + m.q, manifest: manifest, reader: reader, index: index)
                        }
                    }
                }
                if flat && options.mode.hasAdapters {
                    q = nil
                    if cluster.isRoot {
                        FileHandle.standardError.write(Data("lora-dist: note: \(dir) holds PowerSGD's Q in the layout of lora-dist before fused projections; under LoRA its order of the adapters' matrices differs, so Q starts afresh (as at PowerSGD's first step; the error feedback is kept)\n".utf8))
                    }
                }
                compression = (read[3], q)
            }
            return (manifest, read[0], read[1], read[2], state, compression)
        }
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
        if let p = exchange.powerSGD {
            p.hasQ = compression?.1 != nil
            p.hasError = compression != nil
            p.error.zero()
            if let (error, q) = compression {
                q?.withUnsafeBufferPointer { p.q.ptr.update(from: $0.baseAddress!, count: $0.count) }
                // One node's owners hold the sum; the others start from zero: the sum is what counts.
                if cluster.writesCheckpoints {
                    error.withUnsafeBufferPointer { (p.error.ptr + range.lowerBound).update(from: $0.baseAddress!, count: range.count) }
                }
            }
        }
        loaded.publish()
        return (manifest.step, manifest.tokensSeen, state)
    }
}

public enum LoraDistVersion {
    public static let string = "0.1.0"
}
