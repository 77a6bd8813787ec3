import Foundation

/// `lora-dist inspect`: what a checkpoint holds, with every checksum verified.
public enum CheckpointInspector {
    /// The one place a checkpoint argument becomes a checkpoint directory (export, eval,
    /// inspect, train --resume). Accepted, for a path:
    ///   - a step directory (RUN/checkpoints/step-NNNNNNN, holding manifest.pb);
    ///   - a pointer file (RUN/checkpoints/latest or best): the step directory it names;
    ///   - a checkpoints folder (RUN/checkpoints): its `latest`;
    ///   - a run directory (RUN): its checkpoints/latest.
    /// With `checkpoints` (the run's own checkpoints folder, for --resume) also the names
    /// `latest` and `best`, a step number and a step directory name, inside that folder.
    /// The directory returned holds a manifest.pb.
    public static func locate(_ path: String, checkpoints root: String? = nil) throws -> String {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if let root, !path.contains("/") {
            if path == CheckpointFiles.latestName || path == CheckpointFiles.bestName {
                let pointer = root + "/" + path
                guard fm.fileExists(atPath: pointer) else { throw LoraDistError("no checkpoint to resume: \(pointer) does not exist") }
                return try fromPointer(pointer)
            }
            if let n = Int(path) { return try complete(root + "/" + CheckpointFiles.stepName(n), given: path) }
            if path.hasPrefix("step-") { return try complete(root + "/" + path, given: path) }
        }
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LoraDistError(root == nil ? "\(path) does not exist"
                                : "checkpoint \(path) not found (give latest, best, a step number, a checkpoint directory, its checkpoints folder or its run directory)")
        }
        if !isDir.boolValue { return try fromPointer(path) }
        if fm.fileExists(atPath: path + "/" + CheckpointFiles.manifestName) { return path }
        for folder in [path, path + "/checkpoints"] where fm.fileExists(atPath: folder + "/" + CheckpointFiles.latestName) {
            return try fromPointer(folder + "/" + CheckpointFiles.latestName)
        }
        if (path as NSString).lastPathComponent.hasPrefix("step-") {
            throw LoraDistError("\(path) is not a complete checkpoint (no \(CheckpointFiles.manifestName): an interrupted save)")
        }
        throw LoraDistError("\(path) holds no checkpoint (no \(CheckpointFiles.manifestName), no latest, no checkpoints/latest)")
    }

    /// The step directory a pointer file (`latest`, `best`) names, beside it.
    static func fromPointer(_ file: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: file) else { throw LoraDistError("cannot read \(file)") }
        let name = String(decoding: data.prefix(256), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        // Only a step directory beside the pointer: a pointer never leads out of its own
        // checkpoints folder (into another run's, say).
        guard name.hasPrefix("step-"), name.dropFirst(5).allSatisfy(\.isASCII), Int(name.dropFirst(5)) != nil,
              data.count < 256 else {
            throw LoraDistError("\(file) is a file but not a checkpoint pointer (it should hold one step directory name, like \(CheckpointFiles.stepName(100)))")
        }
        return try complete((file as NSString).deletingLastPathComponent + "/" + name, given: file)
    }

    /// `dir` when it is a complete checkpoint; an error naming what the user gave otherwise.
    static func complete(_ dir: String, given: String) throws -> String {
        let fm = FileManager.default
        guard fm.fileExists(atPath: dir) else { throw LoraDistError("checkpoint \(dir) (from \(given)) does not exist") }
        guard fm.fileExists(atPath: dir + "/" + CheckpointFiles.manifestName) else {
            throw LoraDistError("\(dir) (from \(given)) is not a complete checkpoint (no \(CheckpointFiles.manifestName): an interrupted save)")
        }
        return dir
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
        // Whole files first: a missing or short shard file is one problem, not one per slice.
        var badFiles = Set<String>()
        if verify {
            let fm = FileManager.default
            for (file, refs) in Dictionary(grouping: m.slices, by: \.file).sorted(by: { $0.key < $1.key }) {
                let tensors = Set(refs.map(\.name)).count
                let needed = refs.map { $0.offset + $0.length }.max() ?? 0
                guard let size = (try? fm.attributesOfItem(atPath: dir + "/" + file))?[.size] as? Int else {
                    problems.append("\(file): missing (\(refs.count) slices of \(tensors) tensors)")
                    badFiles.insert(file)
                    continue
                }
                if size < needed {
                    problems.append("\(file): truncated to \(size) bytes, its slices need \(needed)")
                    badFiles.insert(file)
                }
            }
        }
        let reader = CheckpointFiles.Reader(dir: dir)
        var rows: [String] = []
        var totalBytes = 0.0   // a sum over any number of slices: Double cannot overflow
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
                for r in refs where !badFiles.contains(r.file) {
                    do { _ = try reader.read(r) } catch { problems.append("\(error)") }
                }
            }
            let bytes = refs.reduce(0.0) { $0 + Double($1.count) * 4 }
            totalBytes += bytes
            rows.append("  \(key.replacingOccurrences(of: "#", with: "  ")) \(shape) \(refs.count) slice(s) \(Units.bytes(bytes))")
        }
        out.append("tensors     \(rows.count) (name, kind, shape, slices, size), \(Units.bytes(totalBytes)) in all")
        out += rows
        out.append(verify ? (problems.isEmpty ? "verified    \(m.slices.count) slices, every checksum matches" :
                             "FAILED      \(problems.count) problem(s)") : "not verified")
        return (out.joined(separator: "\n"), problems)
    }
}
