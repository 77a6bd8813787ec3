import Foundation
import Testing
@testable import LoraDist

/// The checkpoint decoders (manifest, slice references, shard slices, gather) bound every
/// number before computing with it: what the fuzz-manifest and fuzz-shard targets (Fuzz/,
/// tools/fuzz.sh) found, and the neighbours of each, are LoraDistErrors, not traps.
@Suite struct CheckpointDecoderTests {
    /// fuzz-manifest: a manifest whose slice count, multiplied by 4, overflows made `inspect`
    /// trap summing the tensors' bytes (Inspect.swift). (The crashing file the earlier run kept
    /// was truncated when it was pasted into a test and no longer parsed, so the case is built
    /// here: the same slice count, 2^62, in a manifest that parses, format 1 and 2.)
    @Test("a manifest with an overflowing slice is refused by the decoder, and inspect says so")
    func overflowingManifest() throws {
        for format: UInt32 in [1, 2] {
            var m = Manifest()
            m.formatVersion = format
            m.step = 1
            m.slices = [SliceRef(name: "model.norm.weight", kind: "param", shape: [4], start: 0, count: 1 << 62,
                                 file: CheckpointFiles.shardName(0), offset: 0, length: 40, crc32c: 1)]
            let data = m.encoded()
            do { _ = try Manifest(decoding: data, source: "m.pb"); Issue.record("decoded format \(format)") } catch let e as LoraDistError {
                #expect(e.message.hasPrefix("m.pb: slice of 'model.norm.weight' (param) starts at element 0 with 4611686018427387904 elements"),
                        "\(e.message)")
            }
            let dir = TestPaths.tempDir("fuzz-manifest") + "/" + CheckpointFiles.stepName(1)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }
            try data.write(to: URL(fileURLWithPath: dir + "/" + CheckpointFiles.manifestName))
            do { _ = try CheckpointInspector.inspect(dir); Issue.record("inspected format \(format)") } catch let e as LoraDistError {
                #expect(e.message.contains("manifest.pb: slice of 'model.norm.weight'"), "\(e.message)")
            }
        }
    }

    @Test("slice references are bounded when decoded: shape, elements, bytes")
    func sliceBounds() throws {
        let good = SliceRef(name: "w", kind: "param", shape: [2, 3], start: 2, count: 4, file: "shard-00000.pb", offset: 8,
                            length: 40, crc32c: 1)
        var bad: [SliceRef] = []
        func variant(_ change: (inout SliceRef) -> Void) { var r = good; change(&r); bad.append(r) }
        variant { $0.count = Int.max }
        variant { $0.count = -1 }
        variant { $0.start = -4 }
        variant { $0.start = Int.max - 1 }
        variant { $0.count = 5 }                        // 2 + 5 > 6 elements
        variant { $0.shape = [-2, -3] }
        variant { $0.shape = [1 << 31, 1 << 31, 4] }    // overflows Int
        variant { $0.shape = [1 << 21, 1 << 21] }       // more elements than any model
        variant { $0.offset = -1 }
        variant { $0.length = -40 }
        variant { $0.offset = Int.max - 4 }
        variant { $0.file = "../../other-run/checkpoints/step-0000001/shard-00000.pb" }
        variant { $0.file = "" }
        variant { $0.file = ".." }
        for r in bad {
            var m = Manifest()
            m.slices = [good, r]
            #expect(throws: LoraDistError.self, "\(r)") { try Manifest(decoding: m.encoded(), source: "m.pb") }
            #expect(throws: LoraDistError.self, "\(r)") { try SliceRef.decodeList(SliceRef.encodeList([r])) }
        }
        var m = Manifest()
        m.slices = [good]
        #expect(try Manifest(decoding: m.encoded()).slices == [good])
        #expect(try SliceRef.decodeList(SliceRef.encodeList([good])) == [good])
    }

    /// A protobuf field: tag, then a varint or length-delimited bytes.
    static func field(_ number: Int, varint v: Int64) -> [UInt8] { varint(UInt64(number << 3)) + varint(UInt64(bitPattern: v)) }
    static func field(_ number: Int, bytes b: [UInt8]) -> [UInt8] { varint(UInt64(number << 3 | 2)) + varint(UInt64(b.count)) + b }
    static func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        repeat { out.append(UInt8(v & 0x7F) | (v > 0x7F ? 0x80 : 0)); v >>= 7 } while v > 0
        return out
    }

    @Test("a shard slice whose element count overflows or whose start is negative is refused")
    func sliceRecordBounds() throws {
        func chunk(start: Int64, count: Int64, data: [UInt8]) -> Data {
            let slice = Self.field(1, bytes: Array("w".utf8)) + Self.field(2, bytes: Array("F32".utf8)) + Self.field(3, varint: 4)
                + Self.field(4, varint: start) + Self.field(5, varint: count) + Self.field(6, bytes: data) + Self.field(7, bytes: Array("param".utf8))
            return Data(Self.field(1, bytes: slice))
        }
        #expect(try TensorSliceRecord(decoding: chunk(start: 0, count: 1, data: [0, 0, 0x80, 0x3F])).values == [1])
        for (start, count, data) in [(Int64(0), Int64(1) << 62, [UInt8]()), (0, Int64.max, []), (0, -1, []), (-1, 1, [0, 0, 0, 0]),
                                     (Int64.max, 1, [0, 0, 0, 0]), (0, 1, [0, 0, 0])] {
            #expect(throws: LoraDistError.self) { try TensorSliceRecord(decoding: chunk(start: start, count: count, data: data)) }
            #expect(throws: LoraDistError.self) { try TensorSliceRecord(decoding: chunk(start: start, count: count, data: data), crc32c: 7) }
        }
    }

    @Test("overlapping slices do not stand in for missing ones when a checkpoint is read")
    func overlappingSlices() throws {
        let dir = TestPaths.tempDir("fuzz-gather")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let values: [Float] = [1, 2, 3, 4, 5, 6]
        let refs = try values.withUnsafeBufferPointer { v in
            try CheckpointFiles.writeShard(dir: dir, file: CheckpointFiles.shardName(0), slices: [
                .init(name: "w", kind: "param", shape: [6], start: 0, count: 3, values: v.baseAddress!),
                .init(name: "w", kind: "param", shape: [6], start: 0, count: 3, values: v.baseAddress!),
                .init(name: "w", kind: "param", shape: [6], start: 3, count: 3, values: v.baseAddress! + 3),
            ])
        }
        func gather(_ slices: [SliceRef], _ range: Range<Int>) throws -> [Float] {
            var m = Manifest()
            m.slices = slices
            var out = [Float](repeating: 0, count: range.count)
            try out.withUnsafeMutableBufferPointer {
                try CheckpointFiles.gather("w", kind: "param", range: range, into: $0.baseAddress!, manifest: m,
                                           reader: CheckpointFiles.Reader(dir: dir), index: CheckpointFiles.index(m))
            }
            return out
        }
        #expect(try gather([refs[0], refs[2]], 0..<6) == values)
        #expect(try gather([refs[0], refs[2]], 2..<5) == [3, 4, 5])
        // [0, 3) twice covers six elements' worth but leaves 3..<6 unread
        do { _ = try gather([refs[0], refs[1]], 0..<6); Issue.record("accepted") } catch let e as LoraDistError {
            #expect(e.message.contains("overlap"))
        }
        do { _ = try gather([refs[0]], 0..<6); Issue.record("accepted") } catch let e as LoraDistError {
            #expect(e.message.contains("lacks elements 3..<6"))
        }
        do { _ = try gather([refs[2]], 0..<6); Issue.record("accepted") } catch let e as LoraDistError {
            #expect(e.message.contains("lacks elements 0..<3"))
        }
    }
}
