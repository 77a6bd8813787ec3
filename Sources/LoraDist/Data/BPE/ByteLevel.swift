import Foundation

// MARK: - GPT-2 byte alphabet

extension BPETokenizer {
    enum ByteLevel {
        /// bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others are moved to U+0100....
        static let charOf: [Unicode.Scalar] = {
            var printable = Set<Int>()
            for r in [0x21...0x7E, 0xA1...0xAC, 0xAE...0xFF] { printable.formUnion(r) }
            var out = [Unicode.Scalar](repeating: "\0", count: 256)
            var extra = 0
            for b in 0..<256 {
                if printable.contains(b) {
                    out[b] = Unicode.Scalar(UInt32(b))!
                } else {
                    out[b] = Unicode.Scalar(UInt32(256 + extra))!
                    extra += 1
                }
            }
            return out
        }()

        static let byteOf: [Unicode.Scalar: UInt8] = {
            var d = [Unicode.Scalar: UInt8]()
            for (b, c) in charOf.enumerated() { d[c] = UInt8(b) }
            return d
        }()

        static func spell(_ bytes: [UInt8]) -> String {
            var s = String.UnicodeScalarView()
            for b in bytes { s.append(charOf[Int(b)]) }
            return String(s)
        }

        /// The bytes a token spelled in the alphabet stands for; nil if it has another character.
        static func bytes(_ token: String) -> [UInt8]? {
            var out: [UInt8] = []
            out.reserveCapacity(token.unicodeScalars.count)
            for c in token.unicodeScalars {
                guard let b = byteOf[c] else { return nil }
                out.append(b)
            }
            return out
        }
    }
}
