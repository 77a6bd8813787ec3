import Foundation

/// Files of a run directory. Reports are written whole or not at all: to a
/// temporary file beside the target, then renamed over it.
public enum RunFiles {
    public static func writeAtomically(_ data: Data, to path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = (dir.isEmpty ? "." : dir) + "/.\((path as NSString).lastPathComponent).tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: data) else {
            throw LoraDistError("cannot write \(tmp)")
        }
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw LoraDistError("cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))")
        }
    }

    public static func json(_ obj: Any) throws -> Data {
        try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
    }

    public static func createDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw LoraDistError("cannot create run directory \(path): \(error.localizedDescription)")
        }
    }
}

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
            try RunFiles.writeAtomically(kept, to: path)
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

/// Rounds for JSON so reports stay readable (doubles print 17 digits otherwise).
func rounded(_ x: Double, _ digits: Int = 6) -> Double {
    guard x.isFinite else { return x }
    let p = Foundation.pow(10.0, Double(digits))
    return (x * p).rounded() / p
}

public func formatDuration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", t % 3600 / 60))m" }
    if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
    return "\(t)s"
}
