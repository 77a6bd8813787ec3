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
}

/// A ggml tensor type: its number in the file, name and block layout
/// (`blockSize` elements stored in `blockBytes` bytes).
public struct GGMLType: Equatable, CustomStringConvertible {
    public let rawValue: UInt32
    public let name: String
    public let blockSize: Int
    public let blockBytes: Int
    public var description: String { name }

    /// Every type ggml defines (ggml.c type_traits). Numbers 4, 5, 31–33 and 36–38 are retired.
    static let known: [UInt32: (String, Int, Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
        18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
        34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36),
        41: ("Q1_0", 128, 18),
    ]

    /// The types `GGUFFile.dequantize` turns into fp32.
    public static let dequantizable: Set<String> = [
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    ]

    init?(rawValue: UInt32) {
        guard let (n, bs, bb) = Self.known[rawValue] else { return nil }
        self.rawValue = rawValue
        name = n
        blockSize = bs
        blockBytes = bb
    }

    public static func named(_ name: String) -> GGMLType? {
        guard let raw = known.first(where: { $0.value.0 == name })?.key else { return nil }
        return GGMLType(rawValue: raw)
    }

    public var isDequantizable: Bool { Self.dequantizable.contains(name) }
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

    public init(path: String) throws {
        self.path = path
        map = try MappedFile(path: path)
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
    public func string(_ key: String) throws -> String? {
        guard let v = metadata[key] else { return nil }
        guard case .string(let s) = v else { throw typeError(key, v, "a string") }
        return s
    }

    public func int(_ key: String) throws -> Int? {
        guard let v = metadata[key] else { return nil }
        guard let n = v.intValue else { throw typeError(key, v, "an integer") }
        return n
    }

    /// Floats, and integers read as floats.
    public func float(_ key: String) throws -> Double? {
        guard let v = metadata[key] else { return nil }
        switch v {
        case .float(let f): return f
        case .uint(let u): return Double(u)
        case .int(let i): return Double(i)
        default: throw typeError(key, v, "a number")
        }
    }

    public func bool(_ key: String) throws -> Bool? {
        guard let v = metadata[key] else { return nil }
        guard case .bool(let b) = v else { throw typeError(key, v, "a bool") }
        return b
    }

    public func stringArray(_ key: String) throws -> [String]? {
        guard let v = metadata[key] else { return nil }
        guard case .array(let a) = v else { throw typeError(key, v, "an array of strings") }
        return try a.map {
            guard case .string(let s) = $0 else { throw typeError(key, $0, "an array of strings") }
            return s
        }
    }

    public func intArray(_ key: String) throws -> [Int]? {
        guard let v = metadata[key] else { return nil }
        guard case .array(let a) = v else { throw typeError(key, v, "an array of integers") }
        return try a.map {
            guard let n = $0.intValue else { throw typeError(key, $0, "an array of integers") }
            return n
        }
    }

    public func floatArray(_ key: String) throws -> [Double]? {
        guard let v = metadata[key] else { return nil }
        guard case .array(let a) = v else { throw typeError(key, v, "an array of numbers") }
        return try a.map {
            switch $0 {
            case .float(let f): return f
            case .uint(let u): return Double(u)
            case .int(let i): return Double(i)
            default: throw typeError(key, $0, "an array of numbers")
            }
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
        if elements.isEmpty { return }
        let bs = t.type.blockSize, bb = t.type.blockBytes
        let src = map.bytes.baseAddress! + t.byteRange.lowerBound
        var e = elements.lowerBound, o = out
        let end = elements.upperBound
        var scratch: [Float] = []
        while e < end {
            let block = e / bs, inBlock = e % bs
            if inBlock == 0 && end - e >= bs {
                let blocks = (end - e) / bs
                kernel(src + block * bb, o, blocks)
                e += blocks * bs
                o += blocks * bs
            } else {
                if scratch.isEmpty { scratch = [Float](repeating: 0, count: bs) }
                let n = min(bs - inBlock, end - e)
                scratch.withUnsafeMutableBufferPointer { s in
                    kernel(src + block * bb, s.baseAddress!, 1)
                    o.update(from: s.baseAddress! + inBlock, count: n)
                }
                e += n
                o += n
            }
        }
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

// MARK: dequantization kernels

/// Block dequantizers, written after ggml-quants.c (dequantize_row_*): each turns
/// `blocks` consecutive blocks at `src` into blockSize·blocks floats at `dst`.
enum Dequant {
    typealias Kernel = (UnsafeRawPointer, FPtr, Int) -> Void

    static func kernel(_ t: GGMLType) -> Kernel? {
        switch t.name {
        case "F32": return f32
        case "F16": return f16
        case "BF16": return bf16
        case "Q4_0": return q4_0
        case "Q4_1": return q4_1
        case "Q5_0": return q5_0
        case "Q5_1": return q5_1
        case "Q8_0": return q8_0
        case "Q2_K": return q2_K
        case "Q3_K": return q3_K
        case "Q4_K": return q4_K
        case "Q5_K": return q5_K
        case "Q6_K": return q6_K
        default: return nil
        }
    }

    @inline(__always) static func half(_ p: UnsafeRawPointer, _ off: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: off, as: UInt16.self))))
    }

    static func f32(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        UnsafeMutableRawPointer(d).copyMemory(from: s, byteCount: 4 * n)  // little-endian hosts only
    }

    static func f16(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for i in 0..<n { d[i] = half(s, 2 * i) }
    }

    static func bf16(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for i in 0..<n {
            d[i] = Float(bitPattern: UInt32(UInt16(littleEndian: s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
        }
    }

    /// d: f16, qs: 16 bytes of 4-bit values; x = (q − 8)·d; low nibbles are the first 16.
    static func q4_0(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 18 * b, y = d + 32 * b
            let scale = half(p, 0)
            let q = (p + 2).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                y[j] = Float(Int(q[j] & 0x0F) - 8) * scale
                y[j + 16] = Float(Int(q[j] >> 4) - 8) * scale
            }
        }
    }

    /// d, m: f16; x = q·d + m.
    static func q4_1(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 20 * b, y = d + 32 * b
            let scale = half(p, 0), m = half(p, 2)
            let q = (p + 4).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                y[j] = Float(q[j] & 0x0F) * scale + m
                y[j + 16] = Float(q[j] >> 4) * scale + m
            }
        }
    }

    /// d: f16, qh: 32 high bits, qs: 16 bytes; x = (q5 − 16)·d.
    static func q5_0(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 22 * b, y = d + 32 * b
            let scale = half(p, 0)
            let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            let q = (p + 6).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let h0 = ((qh >> UInt32(j)) << 4) & 0x10, h1 = (qh >> UInt32(j + 12)) & 0x10
                y[j] = Float(Int32(UInt32(q[j] & 0x0F) | h0) - 16) * scale
                y[j + 16] = Float(Int32(UInt32(q[j] >> 4) | h1) - 16) * scale
            }
        }
    }

    /// d, m: f16, qh, qs; x = q5·d + m.
    static func q5_1(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 24 * b, y = d + 32 * b
            let scale = half(p, 0), m = half(p, 2)
            let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            let q = (p + 8).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let h0 = ((qh >> UInt32(j)) << 4) & 0x10, h1 = (qh >> UInt32(j + 12)) & 0x10
                y[j] = Float(UInt32(q[j] & 0x0F) | h0) * scale + m
                y[j + 16] = Float(UInt32(q[j] >> 4) | h1) * scale + m
            }
        }
    }

    /// d: f16, qs: 32 int8; x = q·d.
    static func q8_0(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 34 * b, y = d + 32 * b
            let scale = half(p, 0)
            let q = (p + 2).assumingMemoryBound(to: Int8.self)
            for j in 0..<32 { y[j] = Float(q[j]) * scale }
        }
    }

    /// scales[16] (4-bit scale | 4-bit min), qs[64] (2-bit), d, dmin: f16.
    static func q2_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 84 * b
            var y = d + 256 * b
            let sc = p.assumingMemoryBound(to: UInt8.self)
            var q = (p + 16).assumingMemoryBound(to: UInt8.self)
            let dall = half(p, 80), dmin = half(p, 82)
            var i = 0
            for _ in 0..<2 {
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half16 in 0..<2 {
                        let v = sc[i]; i += 1
                        let dl = dall * Float(v & 0x0F), ml = dmin * Float(v >> 4)
                        for l in 0..<16 { y[l] = dl * Float((q[l + 16 * half16] >> shift) & 3) - ml }
                        y += 16
                    }
                    shift += 2
                }
                q += 32
            }
        }
    }

    /// hmask[32], qs[64], scales[12] (6-bit, packed), d: f16.
    static func q3_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        let kmask1: UInt32 = 0x0303_0303, kmask2: UInt32 = 0x0f0f_0f0f
        for b in 0..<n {
            let p = s + 110 * b
            var y = d + 256 * b
            let hm = p.assumingMemoryBound(to: UInt8.self)
            var q = (p + 32).assumingMemoryBound(to: UInt8.self)
            let dall = half(p, 108)
            var a0 = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 96, as: UInt32.self))
            var a1 = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 100, as: UInt32.self))
            let tmp = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 104, as: UInt32.self))
            let a2 = ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4)
            let a3 = ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
            a0 = (a0 & kmask2) | (((tmp >> 0) & kmask1) << 4)
            a1 = (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4)
            let words = [a0, a1, a2, a3]
            var scales = [Int8](repeating: 0, count: 16)
            for k in 0..<16 { scales[k] = Int8(bitPattern: UInt8(truncatingIfNeeded: words[k / 4] >> (8 * UInt32(k % 4)))) }
            var i = 0
            var m: UInt8 = 1
            for _ in 0..<2 {
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half16 in 0..<2 {
                        let dl = dall * Float(Int(scales[i]) - 32); i += 1
                        for l in 0..<16 {
                            let k = l + 16 * half16
                            let v = Int((q[k] >> shift) & 3) - ((hm[k] & m) != 0 ? 0 : 4)
                            y[l] = dl * Float(v)
                        }
                        y += 16
                    }
                    shift += 2
                    m <<= 1
                }
                q += 32
            }
        }
    }

    /// The j-th 6-bit (scale, min) pair of a Q4_K/Q5_K block's 12 scale bytes.
    @inline(__always) static func scaleMinK4(_ j: Int, _ q: UnsafePointer<UInt8>) -> (UInt8, UInt8) {
        if j < 4 { return (q[j] & 63, q[j + 4] & 63) }
        return ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }

    /// d, dmin: f16, scales[12], qs[128] (4-bit).
    static func q4_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 144 * b
            var y = d + 256 * b
            let dall = half(p, 0), dmin = half(p, 2)
            let sc = (p + 4).assumingMemoryBound(to: UInt8.self)
            var q = (p + 16).assumingMemoryBound(to: UInt8.self)
            for j in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * j, sc), (s2, m2) = scaleMinK4(2 * j + 1, sc)
                let d1 = dall * Float(s1), n1 = dmin * Float(m1), d2 = dall * Float(s2), n2 = dmin * Float(m2)
                for l in 0..<32 { y[l] = d1 * Float(q[l] & 0x0F) - n1 }
                for l in 0..<32 { y[32 + l] = d2 * Float(q[l] >> 4) - n2 }
                y += 64
                q += 32
            }
        }
    }

    /// d, dmin: f16, scales[12], qh[32], qs[128].
    static func q5_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 176 * b
            var y = d + 256 * b
            let dall = half(p, 0), dmin = half(p, 2)
            let sc = (p + 4).assumingMemoryBound(to: UInt8.self)
            let qh = (p + 16).assumingMemoryBound(to: UInt8.self)
            var ql = (p + 48).assumingMemoryBound(to: UInt8.self)
            var u1: UInt8 = 1, u2: UInt8 = 2
            for j in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * j, sc), (s2, m2) = scaleMinK4(2 * j + 1, sc)
                let d1 = dall * Float(s1), n1 = dmin * Float(m1), d2 = dall * Float(s2), n2 = dmin * Float(m2)
                for l in 0..<32 { y[l] = d1 * Float((ql[l] & 0x0F) + (qh[l] & u1 != 0 ? 16 : 0)) - n1 }
                for l in 0..<32 { y[32 + l] = d2 * Float((ql[l] >> 4) + (qh[l] & u2 != 0 ? 16 : 0)) - n2 }
                y += 64
                ql += 32
                u1 <<= 2
                u2 <<= 2
            }
        }
    }

    /// ql[128], qh[64], scales[16] (int8), d: f16; x = d·scale·(q6 − 32).
    static func q6_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for b in 0..<n {
            let p = s + 210 * b
            var y = d + 256 * b
            var ql = p.assumingMemoryBound(to: UInt8.self)
            var qh = (p + 128).assumingMemoryBound(to: UInt8.self)
            var sc = (p + 192).assumingMemoryBound(to: Int8.self)
            let dall = half(p, 208)
            for _ in 0..<2 {
                for l in 0..<32 {
                    let i = l / 16
                    let q1 = Int((ql[l] & 0x0F) | ((qh[l] >> 0) & 3) << 4) - 32
                    let q2 = Int((ql[l + 32] & 0x0F) | ((qh[l] >> 2) & 3) << 4) - 32
                    let q3 = Int((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32
                    let q4 = Int((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32
                    y[l] = dall * Float(sc[i]) * Float(q1)
                    y[l + 32] = dall * Float(sc[i + 2]) * Float(q2)
                    y[l + 64] = dall * Float(sc[i + 4]) * Float(q3)
                    y[l + 96] = dall * Float(sc[i + 6]) * Float(q4)
                }
                y += 128
                ql += 64
                qh += 32
                sc += 8
            }
        }
    }
}
