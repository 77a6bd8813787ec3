import Foundation

/// metrics.jsonl: one JSON object per optimizer step, appended and flushed as it goes.
public final class MetricsLog {
    let handle: FileHandle

    /// A new log; or, when resuming, the existing one cut back to the steps up
    /// to the checkpoint (a run killed after its last save logged steps that
    /// the resumed run will redo).
    public init(path: String, keepingStepsUpTo last: Int? = nil) throws {
        var kept = Data()
        if let last, let old = FileManager.default.contents(atPath: path) {
            for line in old.split(separator: UInt8(ascii: "\n")) {
                guard let record = try? JSONDecoder().decode(MetricsRecord.Losses.self, from: Data(line)),
                      record.step <= last else { continue }
                kept.append(contentsOf: line)
                kept.append(UInt8(ascii: "\n"))
            }
            try Files.writeAtomically(kept, to: path)
        } else {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw LoraDistError("cannot create \(path)")
            }
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw LoraDistError("cannot open \(path)") }
        h.seekToEndOfFile()
        handle = h
    }

    public func append(_ record: MetricsRecord) throws {
        var line = try JSONCoding.encode(record, pretty: false)
        line.append(UInt8(ascii: "\n"))
        handle.write(line)
    }

    deinit { try? handle.close() }
}
