import CProto
import Foundation

/// A named slice of a tensor, encoded as the `TensorSlice` message of
/// proto/checkpoint.proto through protobuf-c. The checkpoint writer builds on it.
public struct TensorSliceRecord: Equatable {
    public var name: String
    public var shape: [Int]
    public var start: Int
    public var values: [Float]

    public init(name: String, shape: [Int], start: Int, values: [Float]) {
        self.name = name; self.shape = shape; self.start = start; self.values = values
    }

    /// Serialises with protobuf-c (little-endian F32 payload).
    public func encoded() -> Data {
        var msg = Loradist__TensorSlice()
        loradist__tensor_slice__init(&msg)
        var shape64 = shape.map { Int64($0) }
        return name.withCString { cname in
            "F32".withCString { cdtype in
                shape64.withUnsafeMutableBufferPointer { sp in
                    values.withUnsafeBytes { raw in
                        msg.name = UnsafeMutablePointer(mutating: cname)
                        msg.dtype = UnsafeMutablePointer(mutating: cdtype)
                        msg.n_shape = sp.count
                        msg.shape = sp.baseAddress
                        msg.start = Int64(start)
                        msg.count = Int64(values.count)
                        msg.data = ProtobufCBinaryData(len: raw.count, data: UnsafeMutablePointer(mutating: raw.bindMemory(to: UInt8.self).baseAddress))
                        let size = loradist__tensor_slice__get_packed_size(&msg)
                        var out = Data(count: size)
                        out.withUnsafeMutableBytes { _ = loradist__tensor_slice__pack(&msg, $0.bindMemory(to: UInt8.self).baseAddress) }
                        return out
                    }
                }
            }
        }
    }

    /// Parses bytes written by `encoded()` (or any protobuf encoder of TensorSlice).
    public init(decoding data: Data) throws {
        let parsed: UnsafeMutablePointer<Loradist__TensorSlice>? = data.withUnsafeBytes {
            loradist__tensor_slice__unpack(nil, $0.count, $0.bindMemory(to: UInt8.self).baseAddress)
        }
        guard let m = parsed else { throw LoraDistError("corrupt TensorSlice message (\(data.count) bytes)") }
        defer { loradist__tensor_slice__free_unpacked(m, nil) }
        let s = m.pointee
        guard String(cString: s.dtype) == "F32" else { throw LoraDistError("TensorSlice dtype \(String(cString: s.dtype)) is not F32") }
        guard s.data.len == Int(s.count) * 4 else {
            throw LoraDistError("TensorSlice '\(String(cString: s.name))' holds \(s.data.len) bytes for \(s.count) floats")
        }
        name = String(cString: s.name)
        shape = (0..<s.n_shape).map { Int(s.shape[$0]) }
        start = Int(s.start)
        var v = [Float](repeating: 0, count: Int(s.count))
        v.withUnsafeMutableBytes { dst in
            if s.data.len > 0 { dst.copyMemory(from: UnsafeRawBufferPointer(start: s.data.data, count: s.data.len)) }
        }
        values = v
    }
}
