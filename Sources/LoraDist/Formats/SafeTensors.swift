import Foundation

/// Hugging Face safetensors: an 8-byte little-endian header length N, N bytes of
/// JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
/// then the raw little-endian data. Every offset is checked against the file
/// before any tensor is read, so a truncated or lying file is refused whole.
public struct SafeTensors {
    public struct Entry {
        public let name: String
        public let dtype: String
        public let shape: [Int]
        public let range: Range<Int>     // byte range within the data section
        public var count: Int { shape.reduce(1, *) }
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    let file: MappedFile
    let dataStart: Int

    static let sizes: [String: Int] = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                                       "I8": 1, "U8": 1, "BOOL": 1]

    /// Maps the file; only the header is read now, tensors when asked for.
    public init(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else { throw LoraDistError("cannot read safetensors file \(path)") }
        try self.init(file: try MappedFile(path: path))
    }

    public init(data: Data, path: String = "safetensors") throws {
        try self.init(file: MappedFile(data: data, path: path))
    }

    init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        self.path = path
        let d = file.bytes
        guard d.count >= 8 else { throw LoraDistError("\(path): too short for a safetensors header (\(d.count) bytes)") }
        let n = UInt64(littleEndian: d.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard n <= UInt64(d.count - 8), n <= 100_000_000 else {
            throw LoraDistError("\(path): header length \(n) exceeds the file (\(d.count) bytes): truncated or not safetensors")
        }
        dataStart = 8 + Int(n)
        let header = Data(d[8..<dataStart])
        guard let obj = (try? JSONSerialization.jsonObject(with: header)) as? [String: Any] else {
            throw LoraDistError("\(path): header is not a JSON object")
        }
        let dataLen = d.count - dataStart
        var entries: [String: Entry] = [:], meta: [String: String] = [:]
        for (name, value) in obj {
            if name == "__metadata__" {
                for (k, v) in (value as? [String: Any]) ?? [:] { meta[k] = v as? String ?? "\(v)" }
                continue
            }
            guard let e = value as? [String: Any], let dtype = e["dtype"] as? String,
                  let shape = (e["shape"] as? [NSNumber])?.map(\.intValue),
                  let offs = (e["data_offsets"] as? [NSNumber])?.map(\.intValue), offs.count == 2 else {
                throw LoraDistError("\(path): malformed header entry for '\(name)'")
            }
            guard let size = Self.sizes[dtype] else { throw LoraDistError("\(path): '\(name)' has unsupported dtype \(dtype)") }
            guard shape.allSatisfy({ $0 >= 0 }) else { throw LoraDistError("\(path): '\(name)' has a negative dimension") }
            var count = 1, overflow = false
            for dim in shape + [size] where !overflow { (count, overflow) = count.multipliedReportingOverflow(by: dim) }
            guard !overflow else { throw LoraDistError("\(path): '\(name)' shape \(shape) is too large") }
            count /= size
            guard offs[0] >= 0, offs[0] <= offs[1], offs[1] <= dataLen else {
                throw LoraDistError("\(path): '\(name)' data_offsets \(offs) lie outside the \(dataLen)-byte data section")
            }
            guard offs[1] - offs[0] == count * size else {
                throw LoraDistError("\(path): '\(name)' holds \(offs[1] - offs[0]) bytes but shape \(shape) of \(dtype) needs \(count * size)")
            }
            entries[name] = Entry(name: name, dtype: dtype, shape: shape, range: offs[0]..<offs[1])
        }
        // The data section is the tensors back to back: no overlap, no hole, nothing after.
        var next = 0
        for e in entries.values.sorted(by: { ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound) }) {
            guard e.range.lowerBound <= next else {
                throw LoraDistError("\(path): '\(e.name)' starts at byte \(e.range.lowerBound), leaving a hole after byte \(next)")
            }
            guard e.range.lowerBound == next else {
                throw LoraDistError("\(path): '\(e.name)' overlaps the tensor before it (bytes \(e.range.lowerBound)..<\(next))")
            }
            next = e.range.upperBound
        }
        guard next == dataLen else {
            throw LoraDistError("\(path): the data section holds \(dataLen) bytes but the tensors cover \(next)")
        }
        self.entries = entries
        metadata = meta
    }

    public var names: [String] { entries.keys.sorted() }

    public func entry(_ name: String) throws -> Entry {
        guard let e = entries[name] else { throw LoraDistError("\(path): no tensor named '\(name)'") }
        return e
    }

    static let floating: Set<String> = ["F32", "F16", "BF16", "F64"]

    /// A floating tensor converted to fp32 (F32, F16, BF16, F64).
    public func floats(_ name: String) throws -> [Float] {
        let e = try entry(name)
        var out = [Float](repeating: 0, count: e.count)
        try out.withUnsafeMutableBufferPointer { try floats(name, elements: 0..<e.count, into: $0.baseAddress!) }
        return out
    }

    /// Elements `elements` (row-major) of a floating tensor, converted to fp32 into `dst`.
    /// Reads only those bytes of the mapped file.
    public func floats(_ name: String, elements: Range<Int>, into dst: FPtr) throws {
        let e = try entry(name)
        guard Self.floating.contains(e.dtype) else { throw LoraDistError("\(path): '\(name)' is \(e.dtype), not a floating tensor") }
        guard elements.lowerBound >= 0, elements.upperBound <= e.count else {
            throw LoraDistError("\(path): elements \(elements) are outside '\(name)' (\(e.count) elements)")
        }
        let base = file.bytes.baseAddress! + dataStart + e.range.lowerBound
        let lo = elements.lowerBound
        switch e.dtype {
        case "F32":
            for i in elements { dst[i - lo] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case "F16":
            for i in elements { dst[i - lo] = Float(Float16(bitPattern: UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
        case "BF16":
            for i in elements { dst[i - lo] = Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
        default:
            for i in elements { dst[i - lo] = Float(Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
        }
    }

    /// An integer tensor (I64, I32, U8) as Int.
    public func ints(_ name: String) throws -> [Int] {
        let e = try entry(name)
        let base = file.bytes.baseAddress! + dataStart + e.range.lowerBound
        switch e.dtype {
        case "I64": return (0..<e.count).map { Int(Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
        case "I32": return (0..<e.count).map { Int(Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
        case "U8": return (0..<e.count).map { Int(base.load(fromByteOffset: $0, as: UInt8.self)) }
        default: throw LoraDistError("\(path): '\(name)' is \(e.dtype), not an integer tensor")
        }
    }

    /// Writes F32 tensors in the layout transformers uses: keys sorted, data in
    /// key order, header padded with spaces to a multiple of 8.
    public static func write(_ tensors: [(name: String, shape: [Int], values: [Float])], to path: String,
                             metadata: [String: String] = ["format": "pt"]) throws {
        let sorted = tensors.sorted { $0.name < $1.name }
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for t in sorted {
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.values.count]]
            offset += 4 * t.values.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for t in sorted {
            t.values.withUnsafeBufferPointer { buf in
                buf.withMemoryRebound(to: UInt32.self) { u in
                    for v in u { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
                }
            }
        }
        try Files.writeAtomically(out, to: path)
    }
}
