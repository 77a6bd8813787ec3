import CProto
import Foundation

// Swift values for the messages of proto/checkpoint.proto, encoded and decoded
// with protobuf-c. Encoding builds the C structs in a CArena that owns every
// string and array until the message is packed.

/// C memory for one message being built; freed together.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    func array<T>(_ xs: [T]) -> UnsafeMutablePointer<T>? {
        guard !xs.isEmpty else { return nil }
        let p = UnsafeMutablePointer<T>.allocate(capacity: xs.count)
        p.initialize(from: xs, count: xs.count)
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    func one<T>(_ x: T) -> UnsafeMutablePointer<T> { array([x])! }

    deinit { for b in blocks { free(b) } }
}

/// Packs a message with protobuf-c's generic packer.
func packMessage<M>(_ msg: inout M) -> Data {
    withUnsafeMutablePointer(to: &msg) { p in
        let base = UnsafeMutableRawPointer(p).assumingMemoryBound(to: ProtobufCMessage.self)
        let size = protobuf_c_message_get_packed_size(base)
        var out = Data(count: size)
        out.withUnsafeMutableBytes { _ = protobuf_c_message_pack(base, $0.bindMemory(to: UInt8.self).baseAddress) }
        return out
    }
}

/// Unpacks bytes with a generated `*__unpack`; nil when they do not parse.
func unpack<M>(_ data: Data, _ fn: (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<M>?)
    -> UnsafeMutablePointer<M>? {
    data.withUnsafeBytes { fn(nil, $0.count, $0.bindMemory(to: UInt8.self).baseAddress) }
}

private func str(_ p: UnsafeMutablePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }

// MARK: - TensorSlice / ShardChunk

/// One slice of one tensor: elements [start, start + values.count) of `name`.
public struct TensorSliceRecord: Equatable {
    public var name: String
    public var kind: String
    public var shape: [Int]
    public var start: Int
    public var values: [Float]

    public init(name: String, kind: String = "param", shape: [Int], start: Int, values: [Float]) {
        self.name = name; self.kind = kind; self.shape = shape; self.start = start; self.values = values
    }

    /// A ShardChunk message holding this one slice.
    public func encoded() -> Data {
        let arena = CArena()
        return values.withUnsafeBytes { raw in
            var s = Loradist__TensorSlice()
            loradist__tensor_slice__init(&s)
            s.name = arena.string(name)
            s.dtype = arena.string("F32")
            s.kind = arena.string(kind)
            s.n_shape = shape.count
            s.shape = arena.array(shape.map { Int64($0) })
            s.start = Int64(start)
            s.count = Int64(values.count)
            s.data = ProtobufCBinaryData(len: raw.count,
                                         data: UnsafeMutablePointer(mutating: raw.bindMemory(to: UInt8.self).baseAddress))
            var chunk = Loradist__ShardChunk()
            loradist__shard_chunk__init(&chunk)
            chunk.n_slices = 1
            chunk.slices = arena.one(Optional(arena.one(s)))
            return packMessage(&chunk)
        }
    }

    /// Decodes a ShardChunk holding one slice; checks the payload against
    /// `crc32c` when given, before anything is returned.
    public init(decoding data: Data, crc32c: UInt32? = nil, source: String = "shard") throws {
        guard let m = unpack(data, loradist__shard_chunk__unpack) else {
            throw LoraDistError("\(source): corrupt slice message (\(data.count) bytes do not parse)")
        }
        defer { loradist__shard_chunk__free_unpacked(m, nil) }
        guard m.pointee.n_slices == 1, let sp = m.pointee.slices[0] else {
            throw LoraDistError("\(source): expected one slice in the message, found \(m.pointee.n_slices)")
        }
        let s = sp.pointee
        name = str(s.name)
        kind = str(s.kind)
        guard str(s.dtype) == "F32" else { throw LoraDistError("\(source): '\(name)' has dtype \(str(s.dtype)), not F32") }
        guard s.count >= 0, s.data.len % 4 == 0, s.data.len / 4 == s.count else {   // no multiplication: count is untrusted
            throw LoraDistError("\(source): '\(name)' holds \(s.data.len) bytes for \(s.count) floats")
        }
        guard s.start >= 0, s.start <= Int64(ModelConfig.maxParameters) else {
            throw LoraDistError("\(source): '\(name)' starts at an impossible element \(s.start)")
        }
        let payload = UnsafeRawBufferPointer(start: s.data.data, count: s.data.len)
        if let crc32c, CRC32C.checksum(payload) != crc32c {
            throw LoraDistError("\(source): checksum mismatch in '\(name)' (\(kind)) elements \(s.start)..<\(s.start + s.count)")
        }
        shape = (0..<s.n_shape).map { Int(s.shape[$0]) }
        start = Int(s.start)
        var v = [Float](repeating: 0, count: Int(s.count))
        v.withUnsafeMutableBytes { if payload.count > 0 { $0.copyMemory(from: payload) } }
        values = v
    }
}

// MARK: - SliceRef / SliceList / Manifest

public struct SliceRef: Equatable {
    public var name: String
    public var kind: String
    public var shape: [Int]
    public var start: Int
    public var count: Int
    public var file: String
    public var offset: Int
    public var length: Int
    public var crc32c: UInt32

    public init(name: String, kind: String, shape: [Int], start: Int, count: Int, file: String, offset: Int,
                length: Int, crc32c: UInt32) {
        self.name = name; self.kind = kind; self.shape = shape; self.start = start; self.count = count
        self.file = file; self.offset = offset; self.length = length; self.crc32c = crc32c
    }

    fileprivate func c(_ arena: CArena) -> UnsafeMutablePointer<Loradist__SliceRef> {
        var r = Loradist__SliceRef()
        loradist__slice_ref__init(&r)
        r.name = arena.string(name)
        r.kind = arena.string(kind)
        r.dtype = arena.string("F32")
        r.n_shape = shape.count
        r.shape = arena.array(shape.map { Int64($0) })
        r.start = Int64(start)
        r.count = Int64(count)
        r.file = arena.string(file)
        r.offset = Int64(offset)
        r.length = Int64(length)
        r.crc32c = crc32c
        return arena.one(r)
    }

    fileprivate init(_ r: Loradist__SliceRef) {
        self.init(name: str(r.name), kind: str(r.kind), shape: (0..<r.n_shape).map { Int(r.shape[$0]) },
                  start: Int(r.start), count: Int(r.count), file: str(r.file), offset: Int(r.offset),
                  length: Int(r.length), crc32c: r.crc32c)
    }

    /// A decoded reference, its numbers bounded before anything computes with them: the shape
    /// holds at most ModelConfig.maxParameters elements, the slice lies inside it, and its bytes
    /// lie at a non-negative offset, at most 2 GiB long (protobuf's limit on one message).
    fileprivate init(decoding r: Loradist__SliceRef, source: String) throws {
        self.init(r)
        func refuse(_ why: String) -> LoraDistError { LoraDistError("\(source): slice of '\(name)' (\(kind)) \(why)") }
        var elements = 1
        for d in shape {
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            guard d >= 0, !o, p <= ModelConfig.maxParameters else { throw refuse("has an impossible shape \(shape)") }
            elements = p
        }
        guard start >= 0, count >= 0, start <= elements, count <= elements - start else {
            throw refuse("starts at element \(start) with \(count) elements, outside its shape \(shape)")
        }
        guard offset >= 0, length >= 0, length <= Int(Int32.max), offset <= Int.max - length else {
            throw refuse("has an impossible byte range (offset \(offset), length \(length))")
        }
        // Read as <step directory>/<file>: a name, never a path out of the checkpoint.
        guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
            throw refuse("names the file '\(file)', not a shard file of the checkpoint")
        }
    }

    public static func encodeList(_ refs: [SliceRef]) -> Data {
        let arena = CArena()
        var l = Loradist__SliceList()
        loradist__slice_list__init(&l)
        l.n_slices = refs.count
        l.slices = arena.array(refs.map { Optional($0.c(arena)) })
        return packMessage(&l)
    }

    public static func decodeList(_ data: Data) throws -> [SliceRef] {
        guard let m = unpack(data, loradist__slice_list__unpack) else {
            throw LoraDistError("corrupt slice list (\(data.count) bytes)")
        }
        defer { loradist__slice_list__free_unpacked(m, nil) }
        return try (0..<m.pointee.n_slices).map { try SliceRef(decoding: m.pointee.slices[$0]!.pointee, source: "slice list") }
    }
}

public struct Manifest: Equatable {
    /// 2: the manifest ends with its own CRC-32C (manifest_crc32c). Version 1 files are still read.
    public static let formatVersion: UInt32 = 2
    static let crcTag: [UInt8] = [0xAD, 0x01]   // field 21, wire type 5 (fixed32)

    public var formatVersion = Manifest.formatVersion
    public var programVersion = ""
    public var step = 0
    public var tokensSeen = 0
    public var modelConfigJSON = ""
    public var loraConfigJSON = ""
    public var optimizerConfigJSON = ""
    public var worldSize = 0
    public var nodes = 0
    public var exchange = ""
    public var slices: [SliceRef] = []
    public var baseIdentity = ""
    public var mode = ""
    public var samplerSeed: UInt64 = 0
    public var optimizerStep = 0
    public var createdUTC = ""
    public var runStateJSON = ""
    public var modelSource = ""

    public init() {}

    public func encoded() -> Data {
        let arena = CArena()
        var m = Loradist__Manifest()
        loradist__manifest__init(&m)
        m.format_version = formatVersion
        m.program_version = arena.string(programVersion)
        m.step = Int64(step)
        m.tokens_seen = Int64(tokensSeen)
        m.model_config_json = arena.string(modelConfigJSON)
        m.lora_config_json = arena.string(loraConfigJSON)
        m.optimizer_config_json = arena.string(optimizerConfigJSON)
        m.world_size = Int64(worldSize)
        m.nodes = Int64(nodes)
        m.exchange = arena.string(exchange)
        m.n_slices = slices.count
        m.slices = arena.array(slices.map { Optional($0.c(arena)) })
        m.base_identity = arena.string(baseIdentity)
        m.mode = arena.string(mode)
        m.sampler_seed = samplerSeed
        m.optimizer_step = Int64(optimizerStep)
        m.created_utc = arena.string(createdUTC)
        m.run_state_json = arena.string(runStateJSON)
        m.model_source = arena.string(modelSource)
        var data = packMessage(&m)
        guard formatVersion >= 2 else { return data }
        // The checksum of everything before it, appended as the last field.
        let crc = CRC32C.checksum(data)
        data.append(contentsOf: Manifest.crcTag)
        withUnsafeBytes(of: crc.littleEndian) { data.append(contentsOf: $0) }
        return data
    }

    public init(decoding data: Data, source: String = "manifest") throws {
        guard let p = unpack(data, loradist__manifest__unpack) else {
            throw LoraDistError("\(source): corrupt manifest (\(data.count) bytes do not parse)")
        }
        defer { loradist__manifest__free_unpacked(p, nil) }
        let m = p.pointee
        formatVersion = m.format_version
        guard formatVersion >= 1, formatVersion <= Manifest.formatVersion else {
            throw LoraDistError("\(source): format version \(formatVersion) is not one this program reads (1...\(Manifest.formatVersion))")
        }
        if formatVersion >= 2 {
            let n = data.count
            let body = data.prefix(max(n - 6, 0))
            guard n >= 6, Array(data[data.startIndex + n - 6 ..< data.startIndex + n - 4]) == Manifest.crcTag,
                  m.manifest_crc32c == CRC32C.checksum(body) else {
                throw LoraDistError("\(source): corrupt manifest (its CRC-32C does not match its bytes)")
            }
        }
        programVersion = str(m.program_version)
        step = Int(m.step)
        tokensSeen = Int(m.tokens_seen)
        modelConfigJSON = str(m.model_config_json)
        loraConfigJSON = str(m.lora_config_json)
        optimizerConfigJSON = str(m.optimizer_config_json)
        worldSize = Int(m.world_size)
        nodes = Int(m.nodes)
        exchange = str(m.exchange)
        slices = try (0..<m.n_slices).map { try SliceRef(decoding: m.slices[$0]!.pointee, source: source) }
        baseIdentity = str(m.base_identity)
        mode = str(m.mode)
        samplerSeed = m.sampler_seed
        optimizerStep = Int(m.optimizer_step)
        createdUTC = str(m.created_utc)
        runStateJSON = str(m.run_state_json)
        modelSource = str(m.model_source)
    }
}
