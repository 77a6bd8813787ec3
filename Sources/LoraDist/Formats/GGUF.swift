import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A GGUF metadata value. Integers keep their sign class (the exact width is not kept);
/// floats are widened to Double.
public enum GGUFValue: Equatable, CustomStringConvertible {
    case uint(UInt64)
    case int(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])

    public var description: String {
        switch self {
        case .uint(let v): return "\(v)"
        case .int(let v): return "\(v)"
        case .float(let v): return "\(v)"
        case .bool(let v): return "\(v)"
        case .string(let s): return "\"\(s)\""
        case .array(let a):
            let head = a.prefix(8).map(\.description).joined(separator: ", ")
            return "[" + head + (a.count > 8 ? ", … (\(a.count) values)" : "") + "]"
        }
    }

    /// The kind, for error messages.
    var kind: String {
        switch self {
        case .uint, .int: return "an integer"
        case .float: return "a float"
        case .bool: return "a bool"
        case .string: return "a string"
        case .array: return "an array"
        }
    }

    var intValue: Int? {
        switch self {
        case .uint(let v): return v <= UInt64(Int.max) ? Int(v) : nil
        case .int(let v): return Int(v)
        default: return nil
        }
    }

    var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// Floats, and integers read as floats.
    var doubleValue: Double? {
        switch self {
        case .float(let f): return f
        case .uint(let u): return Double(u)
        case .int(let i): return Double(i)
        default: return nil
        }
    }
}

/// Where one tensor lives in a GGUF file.
public struct GGUFTensorInfo {
    public let name: String
    /// ggml order: ne0 (the contiguous dimension) first.
    public let dims: [Int]
    public let type: GGMLType
    /// Byte offset as stored: relative to the start of the data section.
    public let offset: Int
    /// Absolute byte range in the file.
    public let byteRange: Range<Int>
    public var count: Int { dims.reduce(1, *) }
    /// Row-major shape (Hugging Face / PyTorch order): dims reversed.
    public var shape: [Int] { dims.reversed() }
}

/// A GGUF file (versions 2 and 3, little-endian), memory-mapped read-only.
///
/// Layout: "GGUF", u32 version, u64 tensor count, u64 key/value count, the
/// key/values, the tensor infos (name, u32 n_dims, u64 dims[n_dims] ne0 first,
/// u32 ggml type, u64 offset), padding to `general.alignment` (default 32), then
/// the tensor data. Every length, count and range is checked against the file
/// while parsing, so a corrupt or truncated file is refused with one message
/// instead of crashing; tensors are only read when dequantized.
public final class GGUFFile {
    public let path: String
    public let version: Int
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let keys: [String]
    public let tensors: [String: GGUFTensorInfo]
    /// Tensor names in file order.
    public let tensorNames: [String]
    public let alignment: Int
    /// Absolute offset of the data section.
    public let dataStart: Int
    public let fileSize: Int
    private let map: MappedFile

    static let maxDims = 4
    static let maxArrayDepth = 8

    public convenience init(path: String) throws {
        try self.init(map: try MappedFile(path: path))
    }

    /// The file's bytes held in memory (tests, fuzzing).
    public convenience init(data: Data, path: String = "gguf") throws {
        try self.init(map: MappedFile(data: data, path: path))
    }

    init(map: MappedFile) throws {
        let path = map.path
        self.path = path
        self.map = map
        fileSize = map.bytes.count
        var c = Cursor(base: map.bytes.baseAddress.map(UnsafeRawPointer.init), end: map.bytes.count, path: path)

        // header
        guard fileSize >= 4, c.peekMagic() else {
            throw LoraDistError("\(path): not a GGUF file (the first 4 bytes are not \"GGUF\")")
        }
        c.pos = 4
        let v = try c.u32("version")
        if v != 2 && v != 3 {
            if v.byteSwapped == 2 || v.byteSwapped == 3 {
                throw LoraDistError("\(path): big-endian GGUF (version \(v.byteSwapped)) is not supported")
            }
            throw LoraDistError("\(path): GGUF version \(v) is not supported (only 2 and 3)")
        }
        version = Int(v)
        let nTensors = try c.count("tensor count", minBytesEach: 32)
        let nKV = try c.count("metadata count", minBytesEach: 13)

        // metadata
        var meta: [String: GGUFValue] = [:], keys: [String] = []
        keys.reserveCapacity(nKV)
        for i in 0..<nKV {
            let key = try c.string("key of metadata entry \(i)")
            let t = try c.u32("type of '\(key)'")
            let value = try c.value(type: t, key: key, depth: 0)
            guard meta[key] == nil else { throw LoraDistError("\(path): metadata key '\(key)' appears twice") }
            meta[key] = value
            keys.append(key)
        }
        metadata = meta
        self.keys = keys

        var align = 32
        if let a = meta["general.alignment"] {
            guard let n = a.intValue, n > 0, n & (n - 1) == 0, n <= 1 << 20 else {
                throw LoraDistError("\(path): general.alignment \(a) is not a power of two")
            }
            align = n
        }
        alignment = align

        // tensor infos
        struct Raw { let name: String; let dims: [Int]; let type: GGMLType; let offset: Int; let bytes: Int }
        var raws: [Raw] = []
        raws.reserveCapacity(nTensors)
        var seen = Set<String>()
        for i in 0..<nTensors {
            let name = try c.string("name of tensor \(i)")
            guard seen.insert(name).inserted else { throw LoraDistError("\(path): tensor '\(name)' appears twice") }
            let nd = try c.u32("dimension count of '\(name)'")
            guard nd >= 1, nd <= Self.maxDims else {
                throw LoraDistError("\(path): tensor '\(name)' has \(nd) dimensions (1 to \(Self.maxDims) allowed)")
            }
            var dims: [Int] = [], count = 1
            for _ in 0..<Int(nd) {
                let d = try c.u64("dimension of '\(name)'")
                guard d <= UInt64(Int32.max) else {
                    throw LoraDistError("\(path): tensor '\(name)' has an impossible dimension \(d)")
                }
                let (p, o) = count.multipliedReportingOverflow(by: Int(d))
                guard !o, p <= 1 << 48 else { throw LoraDistError("\(path): tensor '\(name)' is impossibly large") }
                dims.append(Int(d))
                count = p
            }
            let rawType = try c.u32("type of '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else {
                throw LoraDistError("\(path): tensor '\(name)' has unknown ggml type \(rawType)")
            }
            let off = try c.u64("offset of '\(name)'")
            guard dims[0] % type.blockSize == 0 else {
                throw LoraDistError("\(path): tensor '\(name)' row length \(dims[0]) is not a multiple of the \(type.name) block size \(type.blockSize)")
            }
            guard off <= UInt64(fileSize) else {
                throw LoraDistError("\(path): tensor '\(name)' data offset \(off) lies past the end of the file (\(fileSize) bytes)")
            }
            guard Int(off) % align == 0 else {
                throw LoraDistError("\(path): tensor '\(name)' data offset \(off) is not aligned to \(align)")
            }
            raws.append(Raw(name: name, dims: dims, type: type, offset: Int(off),
                            bytes: count / type.blockSize * type.blockBytes))
        }
        let start = (c.pos + align - 1) / align * align
        dataStart = start

        // data ranges: inside the file, not overlapping
        var infos: [String: GGUFTensorInfo] = [:]
        for r in raws {
            let lo = start + r.offset, hi = lo + r.bytes
            guard hi <= fileSize else {
                throw LoraDistError("\(path): tensor '\(r.name)' data (bytes \(lo)..<\(hi)) runs past the end of the file (\(fileSize) bytes): truncated or corrupt")
            }
            infos[r.name] = GGUFTensorInfo(name: r.name, dims: r.dims, type: r.type, offset: r.offset, byteRange: lo..<hi)
        }
        let byStart = infos.values.filter { !$0.byteRange.isEmpty }.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }
        for (a, b) in zip(byStart, byStart.dropFirst()) where a.byteRange.upperBound > b.byteRange.lowerBound {
            throw LoraDistError("\(path): tensors '\(a.name)' and '\(b.name)' overlap in the data section")
        }
        tensors = infos
        tensorNames = raws.map(\.name)
    }

    // MARK: typed metadata

    /// nil when absent; an error when present with another type.
    public func string(_ key: String) throws -> String? { try scalar(key, "a string", \.stringValue) }
    public func int(_ key: String) throws -> Int? { try scalar(key, "an integer", \.intValue) }
    /// Floats, and integers read as floats.
    public func float(_ key: String) throws -> Double? { try scalar(key, "a number", \.doubleValue) }
    public func bool(_ key: String) throws -> Bool? { try scalar(key, "a bool", \.boolValue) }

    public func stringArray(_ key: String) throws -> [String]? { try array(key, "an array of strings", \.stringValue) }
    public func intArray(_ key: String) throws -> [Int]? { try array(key, "an array of integers", \.intValue) }
    public func floatArray(_ key: String) throws -> [Double]? { try array(key, "an array of numbers", \.doubleValue) }

    private func scalar<T>(_ key: String, _ want: String, _ value: (GGUFValue) -> T?) throws -> T? {
        guard let v = metadata[key] else { return nil }
        guard let x = value(v) else { throw typeError(key, v, want) }
        return x
    }

    private func array<T>(_ key: String, _ want: String, _ element: (GGUFValue) -> T?) throws -> [T]? {
        guard let v = metadata[key] else { return nil }
        guard case .array(let a) = v else { throw typeError(key, v, want) }
        return try a.map {
            guard let x = element($0) else { throw typeError(key, $0, want) }
            return x
        }
    }

    private func typeError(_ key: String, _ v: GGUFValue, _ want: String) -> LoraDistError {
        LoraDistError("\(path): metadata '\(key)' is \(v.kind) (\(v)), expected \(want)")
    }

    // MARK: tensors

    public func tensor(_ name: String) throws -> GGUFTensorInfo {
        guard let t = tensors[name] else { throw LoraDistError("\(path): no tensor named '\(name)'") }
        return t
    }

    /// Writes fp32 values of elements `elements` of tensor `name`, in ggml's linear
    /// order (ne0 fastest, i.e. row-major over `shape`), to `out[0..<elements.count]`.
    /// Only the blocks that hold those elements are read.
    public func dequantize(_ name: String, elements: Range<Int>, into out: FPtr) throws {
        try dequantize(try tensor(name), elements: elements, into: out)
    }

    public func dequantize(_ t: GGUFTensorInfo, elements: Range<Int>, into out: FPtr) throws {
        guard elements.lowerBound >= 0, elements.upperBound <= t.count else {
            throw LoraDistError("\(path): elements \(elements) lie outside tensor '\(t.name)' (\(t.count) elements)")
        }
        guard let kernel = Dequant.kernel(t.type) else {
            throw LoraDistError("\(path): tensor '\(t.name)' has ggml type \(t.type.name), which lora-dist cannot dequantize (supported: \(GGMLType.dequantizable.sorted().joined(separator: ", ")))")
        }
        Dequant.elements(elements, of: t.type, at: map.bytes.baseAddress! + t.byteRange.lowerBound, kernel: kernel, into: out)
    }

    /// The whole tensor as fp32, in ggml's linear order.
    public func floats(_ name: String) throws -> [Float] {
        let t = try tensor(name)
        var out = [Float](repeating: 0, count: t.count)
        try out.withUnsafeMutableBufferPointer { try dequantize(t, elements: 0..<t.count, into: $0.baseAddress!) }
        return out
    }
}

/// Bounds-checked little-endian reads from the mapping.
private struct Cursor {
    let base: UnsafeRawPointer?
    let end: Int
    let path: String
    var pos = 0

    init(base: UnsafeRawPointer?, end: Int, path: String) {
        self.base = base
        self.end = end
        self.path = path
    }

    func peekMagic() -> Bool {
        guard let base, end >= 4 else { return false }
        return base.load(as: UInt8.self) == 0x47 && (base + 1).load(as: UInt8.self) == 0x47
            && (base + 2).load(as: UInt8.self) == 0x55 && (base + 3).load(as: UInt8.self) == 0x46
    }

    /// Claims n bytes; the returned position is where they start.
    mutating func take(_ n: Int, _ what: @autoclosure () -> String) throws -> Int {
        guard n >= 0, n <= end - pos else {
            throw LoraDistError("\(path): truncated at byte \(pos) while reading \(what()) (\(n) bytes needed, \(end - pos) left)")
        }
        let p = pos
        pos += n
        return p
    }

    mutating func load<T: FixedWidthInteger>(_ type: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let p = try take(MemoryLayout<T>.size, what())
        return T(littleEndian: base!.loadUnaligned(fromByteOffset: p, as: T.self))
    }

    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 { try load(UInt32.self, what()) }
    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 { try load(UInt64.self, what()) }

    /// A u64 count of items that each take at least `minBytesEach` bytes of what is left.
    mutating func count(_ what: String, minBytesEach: Int) throws -> Int {
        let n = try u64(what)
        guard n <= UInt64((end - pos) / minBytesEach) else {
            throw LoraDistError("\(path): \(what) \(n) cannot fit in the \(end - pos) bytes left: truncated or corrupt")
        }
        return Int(n)
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let n = try u64("length of " + what())
        guard n <= UInt64(end - pos) else {
            throw LoraDistError("\(path): \(what()) claims \(n) bytes, only \(end - pos) left: truncated or corrupt")
        }
        let p = try take(Int(n), what())
        return String(decoding: UnsafeRawBufferPointer(start: base! + p, count: Int(n)), as: UTF8.self)
    }

    /// Smallest encoded size of one value of GGUF type t (nil: no such type).
    static func minSize(_ t: UInt32) -> Int? {
        switch t {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 10, 11, 12: return 8
        case 8: return 8
        case 9: return 12
        default: return nil
        }
    }

    mutating func value(type t: UInt32, key: String, depth: Int) throws -> GGUFValue {
        switch t {
        case 0: return .uint(UInt64(try load(UInt8.self, "'\(key)'")))
        case 1: return .int(Int64(try load(Int8.self, "'\(key)'")))
        case 2: return .uint(UInt64(try load(UInt16.self, "'\(key)'")))
        case 3: return .int(Int64(try load(Int16.self, "'\(key)'")))
        case 4: return .uint(UInt64(try load(UInt32.self, "'\(key)'")))
        case 5: return .int(Int64(try load(Int32.self, "'\(key)'")))
        case 6: return .float(Double(Float(bitPattern: try load(UInt32.self, "'\(key)'"))))
        case 7:
            let b = try load(UInt8.self, "'\(key)'")
            guard b <= 1 else { throw LoraDistError("\(path): metadata '\(key)' is a bool with byte value \(b)") }
            return .bool(b == 1)
        case 8: return .string(try string("'\(key)'"))
        case 9:
            guard depth < GGUFFile.maxArrayDepth else {
                throw LoraDistError("\(path): metadata '\(key)' nests arrays deeper than \(GGUFFile.maxArrayDepth)")
            }
            let et = try u32("array type of '\(key)'")
            guard let size = Cursor.minSize(et) else {
                throw LoraDistError("\(path): metadata '\(key)' is an array of unknown value type \(et)")
            }
            let n = try count("array length of '\(key)'", minBytesEach: size)
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(type: et, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint(try load(UInt64.self, "'\(key)'"))
        case 11: return .int(try load(Int64.self, "'\(key)'"))
        case 12: return .float(Double(bitPattern: try load(UInt64.self, "'\(key)'")))
        default: throw LoraDistError("\(path): metadata '\(key)' has unknown value type \(t)")
        }
    }
}
