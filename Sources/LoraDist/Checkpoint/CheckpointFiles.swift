import Foundation

/// The files of a checkpoint directory and how they are written and read.
///
///     RUN/checkpoints/
///       latest                      "step-0000100\n", replaced by atomic rename
///       step-0000100/
///         shard-00000.pb            ShardChunk messages written by world rank 0
///         shard-00001.pb            ... by rank 1 (each writer rank writes its owned slices)
///         manifest.pb               Manifest, written last by rank 0
///
/// A step directory without manifest.pb is an interrupted save and is never read.
public enum CheckpointFiles {
    public static let manifestName = "manifest.pb"
    public static let latestName = "latest"
    /// Names the checkpoint with the lowest dev loss when early stopping is on.
    public static let bestName = "best"
    /// Elements per slice message: 64 MiB of payload, far below protobuf's 2 GiB limit.
    public static let maxSliceElements = 16 * 1024 * 1024

    public static func stepName(_ step: Int) -> String { String(format: "step-%07d", step) }
    public static func shardName(_ rank: Int) -> String { String(format: "shard-%05d.pb", rank) }

    /// One slice to write: elements [start, start + count) of a tensor, from memory.
    public struct Outgoing {
        public let name: String, kind: String, shape: [Int], start: Int, count: Int
        public let values: UnsafePointer<Float>
        public init(name: String, kind: String, shape: [Int], start: Int, count: Int, values: UnsafePointer<Float>) {
            self.name = name; self.kind = kind; self.shape = shape; self.start = start; self.count = count; self.values = values
        }
    }

    /// Writes `slices` (chunked) into dir/file and fsyncs it; returns where each landed.
    public static func writeShard(dir: String, file: String, slices: [Outgoing]) throws -> [SliceRef] {
        let path = dir + "/" + file
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw Files.ioError("cannot create", path) }
        defer { close(fd) }
        var refs: [SliceRef] = []
        var offset = 0
        for s in slices {
            var done = 0
            repeat {
                let n = min(maxSliceElements, s.count - done)
                let values = Array(UnsafeBufferPointer(start: s.values + done, count: n))
                let rec = TensorSliceRecord(name: s.name, kind: s.kind, shape: s.shape, start: s.start + done, values: values)
                let bytes = rec.encoded()
                try Files.writeAll(fd, bytes, path: path)
                let crc = values.withUnsafeBytes { CRC32C.checksum($0) }
                refs.append(SliceRef(name: s.name, kind: s.kind, shape: s.shape, start: s.start + done, count: n,
                                     file: file, offset: offset, length: bytes.count, crc32c: crc))
                offset += bytes.count
                done += n
            } while done < s.count
        }
        guard fsync(fd) == 0 else { throw Files.ioError("cannot fsync", path) }
        return refs
    }

    // MARK: reading

    /// A checkpoint directory from `--resume`: "latest", "best", a step number, a step
    /// directory name inside `root`, or any path CheckpointInspector.locate accepts.
    public static func resolve(_ which: String, checkpoints root: String) throws -> String {
        try CheckpointInspector.locate(which, checkpoints: root)
    }

    /// The step directory name `latest` holds, if any.
    public static func latest(_ root: String) -> String? { pointer(root, latestName) }

    /// The step directory name a pointer file (`latest`, `best`) holds, if any.
    public static func pointer(_ root: String, _ name: String) -> String? {
        (try? String(contentsOfFile: root + "/" + name, encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public static func readManifest(_ dir: String) throws -> Manifest {
        let path = dir + "/" + manifestName
        guard FileManager.default.fileExists(atPath: dir) else { throw LoraDistError("checkpoint \(dir) does not exist") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoraDistError("\(path) is missing: \(dir) is not a complete checkpoint")
        }
        return try Manifest(decoding: data, source: path)
    }

    /// Reads slices from one checkpoint, keeping files open, verifying each checksum.
    public final class Reader {
        let dir: String
        var handles: [String: FileHandle] = [:]

        public init(dir: String) { self.dir = dir }
        deinit { for h in handles.values { try? h.close() } }

        public func read(_ ref: SliceRef) throws -> TensorSliceRecord {
            let path = dir + "/" + ref.file
            let h: FileHandle
            if let open = handles[ref.file] { h = open } else {
                guard let fh = FileHandle(forReadingAtPath: path) else {
                    throw LoraDistError("\(path) is missing (needed for '\(ref.name)')")
                }
                handles[ref.file] = fh
                h = fh
            }
            let data: Data
            do {
                try h.seek(toOffset: UInt64(ref.offset))
                data = try h.read(upToCount: ref.length) ?? Data()
            } catch { throw LoraDistError("cannot read \(path): \(error.localizedDescription)") }
            guard data.count == ref.length else {
                throw LoraDistError("\(path) is truncated: '\(ref.name)' (\(ref.kind)) needs bytes \(ref.offset)..<\(ref.offset + ref.length)")
            }
            let rec = try TensorSliceRecord(decoding: data, crc32c: ref.crc32c, source: path)
            guard rec.name == ref.name, rec.kind == ref.kind, rec.start == ref.start, rec.values.count == ref.count,
                  rec.shape == ref.shape else {
                throw LoraDistError("\(path): the slice at byte \(ref.offset) is not '\(ref.name)' (\(ref.kind)) as the manifest says")
            }
            // Training never saves a NaN or ∞ (the step stops first), so one here is a checkpoint
            // made otherwise: named, not evaluated into "perplexity nan" or resumed.
            if let i = rec.values.firstIndex(where: { !$0.isFinite }) {
                throw LoraDistError("\(path): tensor '\(ref.name)' (\(ref.kind)) holds a non-finite value (NaN or infinity) at element \(ref.start + i)")
            }
            return rec
        }
    }

    /// Fills dst with elements `range` of tensor `name` (kind) from the manifest's
    /// slices. Fails when any element is not covered.
    public static func gather(_ name: String, kind: String, range: Range<Int>, into dst: FPtr,
                              manifest: Manifest, reader: Reader, index: [String: [SliceRef]]) throws {
        // The index lists slices by start: each one read must begin where the last ended, so
        // overlapping slices cannot stand in for missing ones.
        var next = range.lowerBound
        for ref in index[name + "#" + kind] ?? [] {
            let span = (ref.start..<(ref.start + ref.count)).clamped(to: range)
            guard !span.isEmpty else { continue }
            guard span.lowerBound == next else {
                throw LoraDistError(span.lowerBound > next
                    ? "checkpoint lacks elements \(next)..<\(span.lowerBound) of '\(name)' (\(kind))"
                    : "checkpoint slices of '\(name)' (\(kind)) overlap at elements \(span.lowerBound)..<\(next)")
            }
            let rec = try reader.read(ref)
            rec.values.withUnsafeBufferPointer { v in
                (dst + (span.lowerBound - range.lowerBound)).update(from: v.baseAddress! + (span.lowerBound - ref.start),
                                                                    count: span.count)
            }
            next = span.upperBound
        }
        guard next == range.upperBound else {
            throw LoraDistError("checkpoint lacks elements \(next)..<\(range.upperBound) of '\(name)' (\(kind))")
        }
    }

    /// Slices by "name#kind", sorted by start.
    public static func index(_ m: Manifest) -> [String: [SliceRef]] {
        Dictionary(grouping: m.slices) { $0.name + "#" + $0.kind }.mapValues { $0.sorted { $0.start < $1.start } }
    }

    /// Removes all but the newest `keep` complete step directories (never `protect`,
    /// nor the one the `best` pointer names),
    /// and any interrupted save older than the newest complete one.
    public static func prune(_ root: String, keep: Int, protect: String) {
        let fm = FileManager.default
        guard keep > 0, let names = try? fm.contentsOfDirectory(atPath: root) else { return }
        let steps = names.filter { $0.hasPrefix("step-") && Int($0.dropFirst(5)) != nil }
            .sorted { Int($0.dropFirst(5))! < Int($1.dropFirst(5))! }
        let complete = steps.filter { fm.fileExists(atPath: root + "/" + $0 + "/" + manifestName) }
        var kept = Set(complete.suffix(keep)).union([protect])
        if let best = Self.pointer(root, bestName) { kept.insert(best) }
        guard let newest = complete.last else { return }
        let newestStep = Int(newest.dropFirst(5))!
        for s in steps where !kept.contains(s) && Int(s.dropFirst(5))! <= newestStep {
            try? fm.removeItem(atPath: root + "/" + s)
        }
    }
}
