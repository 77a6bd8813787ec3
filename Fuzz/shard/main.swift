// One slice message of a checkpoint shard (TensorSliceRecord(decoding:), as
// CheckpointFiles.Reader decodes the bytes a manifest points at), without and with a checksum
// to verify, and the slice list ranks send to rank 0 when saving (SliceRef.decodeList).
import Foundation
@testable import LoraDist

func fuzzOne(_ data: Data) {
    if let r = try? TensorSliceRecord(decoding: data, source: "shard") {
        let crc = r.values.withUnsafeBytes { CRC32C.checksum($0) }
        _ = try? TensorSliceRecord(decoding: data, crc32c: crc, source: "shard")
    }
    _ = try? TensorSliceRecord(decoding: data, crc32c: 0x1234_5678, source: "shard")
    _ = try? SliceRef.decodeList(data)
}

func fuzzSeeds() -> [Data] {
    let a = TensorSliceRecord(name: "model.norm.weight", kind: "param", shape: [6], start: 2, values: [1, 2, 3, -4])
    let b = TensorSliceRecord(name: "x", kind: "adam_v", shape: [2, 3, 1], start: 0, values: [])
    let refs = [SliceRef(name: "model.norm.weight", kind: "param", shape: [6], start: 0, count: 4, file: "shard-00000.pb",
                         offset: 0, length: 40, crc32c: 77)]
    return [a.encoded(), b.encoded(), SliceRef.encodeList(refs), SliceRef.encodeList([])]
}
