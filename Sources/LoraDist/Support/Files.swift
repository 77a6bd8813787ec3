import Foundation

/// Writing files whole or not at all, and the folders they go in: the one write-then-rename
/// (checkpoint manifests and pointers, summary.json, metrics.jsonl when a resume cuts it back,
/// reports, exported models and adapters, the calibration).
public enum Files {
    /// Writes `data` to `path` durably and atomically: a temporary file beside the target,
    /// fsync, rename over the target, fsync of the directory. A reader sees the old file or the
    /// new one, never a part; after a crash the new one is there or the old one is.
    public static func writeAtomically(_ data: Data, to path: String) throws {
        let parent = (path as NSString).deletingLastPathComponent
        let dir = parent.isEmpty ? "." : parent
        let tmp = dir + "/." + (path as NSString).lastPathComponent + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ioError("cannot create", tmp) }
        do {
            try writeAll(fd, data, path: tmp)
            guard fsync(fd) == 0 else { throw ioError("cannot fsync", tmp) }
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        guard rename(tmp, path) == 0 else {
            let e = ioError("cannot rename \(tmp) to", path)
            unlink(tmp)
            throw e
        }
        try syncDirectory(dir)
    }

    public static func syncDirectory(_ dir: String) throws {
        let fd = open(dir, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw ioError("cannot open directory", dir) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("cannot fsync directory", dir) }
    }

    /// A run or output directory, with its parents.
    public static func createDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw LoraDistError("cannot create run directory \(path): \(error.localizedDescription)")
        }
    }

    /// All of `data` to `fd`, through short writes and EINTR.
    static func writeAll(_ fd: Int32, _ data: Data, path: String) throws {
        try data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw ioError("cannot write", path) }
                done += n
            }
        }
    }

    /// "what path: strerror(errno)".
    static func ioError(_ what: String, _ path: String) -> LoraDistError {
        LoraDistError("\(what) \(path): \(String(cString: strerror(errno)))")
    }
}
