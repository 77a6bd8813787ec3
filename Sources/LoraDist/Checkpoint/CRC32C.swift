/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every
/// checkpoint slice. Slice-by-8: eight 256-entry tables, eight bytes a round.
public enum CRC32C {
    /// Table k at [k·256 ..< (k+1)·256]; allocated once and kept for the process.
    nonisolated(unsafe) static let table: UnsafeMutablePointer<UInt32> = {
        let t = UnsafeMutablePointer<UInt32>.allocate(capacity: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 { t[k * 256 + i] = (t[(k - 1) * 256 + i] >> 8) ^ t[Int(t[(k - 1) * 256 + i] & 0xFF)] }
        }
        return t
    }()

    /// Continues `crc` over `bytes` (start with 0).
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard var q = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return crc }
        let t = table
        var c = ~crc, n = bytes.count
        while n >= 8 {
            let lo = c ^ UInt32(littleEndian: UnsafeRawPointer(q).loadUnaligned(as: UInt32.self))
            let hi = UInt32(littleEndian: UnsafeRawPointer(q + 4).loadUnaligned(as: UInt32.self))
            c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                ^ t[256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
            q += 8
            n -= 8
        }
        while n > 0 {
            c = t[Int((c ^ UInt32(q.pointee)) & 0xFF)] ^ (c >> 8)
            q += 1
            n -= 1
        }
        return ~c
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 { update(0, bytes) }

    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        Array(bytes).withUnsafeBytes { checksum($0) }
    }
}
