// A checkpoint's manifest.pb, through `lora-dist inspect` (CheckpointInspector.inspect on a
// step directory: Manifest decoding, the slice index and tiling, every slice read through
// CheckpointFiles.Reader and checked against its checksum), then the JSON it carries as
// resume and export read it (model config, LoRA config, run state). The step directory holds
// a fixed, valid shard-00000.pb, so mutated slice references land on real slices.
// A format-2 manifest ends with its own CRC-32C, which a mutation almost always breaks: each
// input is tried as it is and sealed (its CRC-32C appended as the last field, as
// Manifest.encoded does), so the fields behind the checksum are fuzzed too. The code-made
// seeds are bodies without their seal.
import Foundation
@testable import LoraDist

/// A small checkpoint: two tensors, each as param/adam_m/adam_v in two slices.
func makeShard(_ dir: String) -> [SliceRef] {
    var out: [CheckpointFiles.Outgoing] = []
    let values = UnsafeMutablePointer<Float>.allocate(capacity: 6)
    defer { values.deallocate() }
    for i in 0..<6 { values[i] = Float(i) * 0.25 - 0.5 }
    for (name, shape) in [("model.norm.weight", [6]), ("model.layers.0.self_attn.q_proj.lora_A.weight", [2, 3])] {
        for kind in ["param", "adam_m", "adam_v"] {
            out.append(.init(name: name, kind: kind, shape: shape, start: 0, count: 4, values: values))
            out.append(.init(name: name, kind: kind, shape: shape, start: 4, count: 2, values: values + 4))
        }
    }
    return try! CheckpointFiles.writeShard(dir: dir, file: CheckpointFiles.shardName(0), slices: out)
}

/// The step directory (made with its shard on first use) and the shard's slice references.
let (stepDir, shardRefs): (String, [SliceRef]) = {
    let d = scratch + "/" + CheckpointFiles.stepName(7)
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return (d, makeShard(d))
}()

func sealed(_ body: Data) -> Data {
    var d = body
    d.append(contentsOf: Manifest.crcTag)
    withUnsafeBytes(of: CRC32C.checksum(body).littleEndian) { d.append(contentsOf: $0) }
    return d
}

func fuzzOne(_ data: Data) {
    inspect(data)
    inspect(sealed(data))
}

func inspect(_ data: Data) {
    put(data, stepDir + "/" + CheckpointFiles.manifestName)
    _ = try? CheckpointInspector.inspect(stepDir, verify: true)
    guard let m = try? CheckpointFiles.readManifest(stepDir) else { return }
    if let c = try? ModelConfig.fromHuggingFace(json: Data(m.modelConfigJSON.utf8), source: "manifest"), c.numHiddenLayers <= 1024 {
        _ = try? LlamaModel.specs(config: c, lora: try? LoRAConfig.fromPEFT(json: Data(m.loraConfigJSON.utf8), source: "manifest"))
    }
    _ = try? RunState.from(json: m.runStateJSON, source: "manifest")
    let reader = CheckpointFiles.Reader(dir: stepDir)
    let index = CheckpointFiles.index(m)
    for (key, refs) in index.sorted(by: { $0.key < $1.key }) {
        let total = refs[0].shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        guard total >= 0, total <= 64 else { continue }
        var dst = [Float](repeating: 0, count: total)
        let parts = key.split(separator: "#").map(String.init)
        guard parts.count == 2 else { continue }
        dst.withUnsafeMutableBufferPointer {
            try? CheckpointFiles.gather(parts[0], kind: parts[1], range: 0..<total, into: $0.baseAddress!,
                                        manifest: m, reader: reader, index: index)
        }
    }
}

func fuzzSeeds() -> [Data] {
    var m = Manifest()
    m.programVersion = "fuzz"
    m.step = 7
    m.tokensSeen = 7168
    m.modelConfigJSON = String(decoding: json(ModelConfig.builtIn["tiny"]!.huggingFaceJSON()), as: UTF8.self)
    m.loraConfigJSON = String(decoding: json(try! LoRAConfig(rank: 2, alpha: 4).peftConfig(baseModel: "tiny")), as: UTF8.self)
    m.optimizerConfigJSON = #"{"beta1":0.9,"beta2":0.999,"clip_norm":1,"eps":1e-08,"lr":0.002,"min_lr":0,"total_steps":10,"type":"adamw","warmup_steps":1,"weight_decay":0}"#
    m.worldSize = 2
    m.nodes = 1
    m.exchange = "allreduce"
    m.slices = shardRefs
    m.baseIdentity = "tiny"
    m.mode = "lora"
    m.samplerSeed = 1
    m.optimizerStep = 7
    m.createdUTC = "2026-01-01T00:00:00Z"
    m.runStateJSON = try! RunState.json(RunState(initialDevLoss: 5.5, devLoss: 4, finalLoss: 4.1, trainSeconds: 2, waitSeconds: 0.1,
                                                 bestDevLoss: 4, bestStep: 6, evalsSinceBest: 0))
    m.modelSource = "tiny"
    var bare = Manifest()
    bare.slices = Array(shardRefs.prefix(2))
    var old = m
    old.formatVersion = 1
    return [m, bare, Manifest()].map { $0.encoded().dropLast(6) } + [old.encoded()]
}
