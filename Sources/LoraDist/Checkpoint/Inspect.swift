import Foundation

/// `lora-dist inspect`: what a checkpoint holds, with every checksum verified.
public enum CheckpointInspector {
    /// A checkpoint directory, a checkpoints folder (its latest), or a run directory (its latest).
    public static func locate(_ path: String) throws -> String {
        let fm = FileManager.default
        if fm.fileExists(atPath: path + "/" + CheckpointFiles.manifestName) { return path }
        for root in [path, path + "/checkpoints"] where fm.fileExists(atPath: root + "/" + CheckpointFiles.latestName) {
            return try CheckpointFiles.resolve("latest", checkpoints: root)
        }
        guard fm.fileExists(atPath: path) else { throw LoraDistError("\(path) does not exist") }
        throw LoraDistError("\(path) holds no checkpoint (no manifest.pb, no checkpoints/latest)")
    }

    /// Returns the report and the problems found (empty when every check passed).
    public static func inspect(_ dir: String, verify: Bool = true) throws -> (report: String, problems: [String]) {
        let m = try CheckpointFiles.readManifest(dir)
        var out = [
            "checkpoint  \(dir)",
            "format      \(m.formatVersion), written by lora-dist \(m.programVersion) at \(m.createdUTC)",
            "step        \(m.step) (\(m.tokensSeen.formatted()) tokens seen, optimizer step \(m.optimizerStep))",
            "mode        \(m.mode)",
            "saved on    \(m.worldSize) rank(s), \(m.nodes) node(s), \(m.exchange) exchange",
            "seed        \(m.samplerSeed)",
        ]
        if !m.loraConfigJSON.isEmpty { out.append("lora        \(m.loraConfigJSON)") }
        if !m.baseIdentity.isEmpty { out.append("base        \(m.baseIdentity)") }
        out.append("optimizer   \(m.optimizerConfigJSON)")
        out.append("model       \(m.modelConfigJSON.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "  ", with: ""))")
        var problems: [String] = []
        let reader = CheckpointFiles.Reader(dir: dir)
        var rows: [String] = []
        var totalBytes = 0
        for (key, refs) in CheckpointFiles.index(m).sorted(by: { $0.key < $1.key }) {
            let shape = refs[0].shape, count = shape.reduce(1, *)
            // The slices of a tensor must tile it exactly once.
            var next = 0
            for r in refs {
                if r.start != next { problems.append("\(key): elements \(next)..<\(r.start) missing or overlapping"); break }
                next = r.start + r.count
            }
            if next != count && problems.last?.hasPrefix(key) != true {
                problems.append("\(key): slices cover \(next) of \(count) elements")
            }
            if verify {
                for r in refs {
                    do { _ = try reader.read(r) } catch { problems.append("\(error)") }
                }
            }
            let bytes = refs.reduce(0) { $0 + $1.count * 4 }
            totalBytes += bytes
            rows.append("  \(key.replacingOccurrences(of: "#", with: "  ")) \(shape) \(refs.count) slice(s) \(Units.bytes(Double(bytes)))")
        }
        out.append("tensors     \(rows.count) (name, kind, shape, slices, size), \(Units.bytes(Double(totalBytes))) in all")
        out += rows
        out.append(verify ? (problems.isEmpty ? "verified    \(m.slices.count) slices, every checksum matches" :
                             "FAILED      \(problems.count) problem(s)") : "not verified")
        return (out.joined(separator: "\n"), problems)
    }
}
