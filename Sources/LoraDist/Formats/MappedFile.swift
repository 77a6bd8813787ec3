import Foundation

/// A read-only memory map of a whole file. Model weights are read through maps,
/// so a rank touches only the pages of the slices it loads and no rank copies a
/// whole file into private memory.
public final class MappedFile {
    public let path: String
    public let bytes: UnsafeRawBufferPointer
    private let base: UnsafeMutableRawPointer?

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw LoraDistError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw LoraDistError("cannot stat \(path): \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw LoraDistError("\(path): not a regular file") }
        let size = Int(st.st_size)
        guard size > 0 else {
            base = nil
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw LoraDistError("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        base = p
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    /// Bytes held in memory instead (tests, small inputs).
    public init(data: Data, path: String) {
        self.path = path
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(data.count, 1), alignment: 16)
        data.withUnsafeBytes { if $0.count > 0 { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        base = nil
        bytes = UnsafeRawBufferPointer(start: p, count: data.count)
        owned = p
    }

    private var owned: UnsafeMutableRawPointer?

    deinit {
        if let base { munmap(base, bytes.count) }
        owned?.deallocate()
    }
}
