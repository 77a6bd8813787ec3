/// UTF-8 validation for corpus files: find the first invalid byte, or replace
/// every invalid sequence with U+FFFD and count the bytes replaced.
///
/// Invalid means what Unicode's "maximal subpart" rule says (the rule Swift's
/// `String(decoding:as: UTF8.self)` follows): overlong forms, surrogates (ED A0-BF),
/// code points above U+10FFFF, stray continuation bytes and truncated sequences.
/// Each maximal subpart of an invalid sequence becomes one U+FFFD, so `replacing`
/// gives the same bytes as `String(decoding:as:)`.
public enum UTF8Check {
    /// The length of the valid sequence at `i`, or minus the length of the maximal
    /// invalid subpart there (at least 1 byte).
    @inline(__always)
    static func sequence(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int {
        let b0 = p[i]
        if b0 < 0x80 { return 1 }
        let n = p.count
        @inline(__always) func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
            i + k < n && p[i + k] >= lo && p[i + k] <= hi
        }
        switch b0 {
        case 0xC2...0xDF:
            return cont(1) ? 2 : -1
        case 0xE0...0xEF:
            let (lo, hi): (UInt8, UInt8) = b0 == 0xE0 ? (0xA0, 0xBF) : b0 == 0xED ? (0x80, 0x9F) : (0x80, 0xBF)
            guard cont(1, lo, hi) else { return -1 }
            return cont(2) ? 3 : -2
        case 0xF0...0xF4:
            let (lo, hi): (UInt8, UInt8) = b0 == 0xF0 ? (0x90, 0xBF) : b0 == 0xF4 ? (0x80, 0x8F) : (0x80, 0xBF)
            guard cont(1, lo, hi) else { return -1 }
            guard cont(2) else { return -2 }
            return cont(3) ? 4 : -3
        default:  // 80-BF (a stray continuation), C0-C1 (overlong), F5-FF
            return -1
        }
    }

    /// The offset of the first byte that is not part of valid UTF-8, or nil.
    public static func firstInvalid(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        let n = bytes.count
        while i < n {
            if bytes[i] < 0x80 { i += 1; continue }
            let k = sequence(bytes, i)
            if k < 0 { return i }
            i += k
        }
        return nil
    }

    /// `bytes` with each invalid sequence replaced by U+FFFD (EF BF BD), and how many
    /// input bytes were replaced.
    public static func replacing(_ bytes: UnsafeBufferPointer<UInt8>) -> (bytes: [UInt8], replaced: Int) {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var replaced = 0, i = 0, copied = 0
        let n = bytes.count
        while i < n {
            if bytes[i] < 0x80 { i += 1; continue }
            let k = sequence(bytes, i)
            if k > 0 { i += k; continue }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[copied..<i]))
            out.append(contentsOf: [0xEF, 0xBF, 0xBD])
            replaced += -k
            i += -k
            copied = i
        }
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[copied..<n]))
        return (out, replaced)
    }
}
