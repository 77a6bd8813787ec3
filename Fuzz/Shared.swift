// Compiled into every fuzz target (tools/fuzz.sh). Each target defines
// `fuzzOne(_:)` (one input) and `fuzzSeeds()` (extra seed inputs made in code).
import Foundation
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = size == 0 ? Data() : Data(bytes: bytes!, count: size)
    fuzzOne(data)
    return 0
}

/// With LORADIST_FUZZ_SEEDS=<dir> the target writes its code-made seeds there and exits.
@_cdecl("LLVMFuzzerInitialize")
public func LLVMFuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    if let dir = ProcessInfo.processInfo.environment["LORADIST_FUZZ_SEEDS"] {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (i, d) in fuzzSeeds().enumerated() {
            _ = FileManager.default.createFile(atPath: dir + "/made-\(i)", contents: d)
        }
        _exit(0)   // not exit: the leak checker would run
    }
    return 0
}

/// A private scratch directory for targets whose API takes a path.
let scratch: String = {
    let dir = NSTemporaryDirectory() + "/loradist-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "/loradist-fuzz-\(getpid())") }
    return dir
}()

/// Writes `data` to `path` (replacing it) with plain POSIX calls.
func put(_ data: Data, _ path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "cannot create \(path)")
    data.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            let n = write(fd, raw.baseAddress! + done, raw.count - done)
            precondition(n > 0, "cannot write \(path)")
            done += n
        }
    }
    close(fd)
}

func json(_ object: Any) -> Data {
    try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
}

/// A tensor no bigger than this is read whole; the decoder is fuzzed, not the bandwidth.
let maxElements = 1 << 20
