/// Reads one field of each line of a JSON Lines file, as `datasets.Dataset.to_json`
/// writes them: one object per line with every column, compact separators, strings
/// escaped (`\/`, `\uXXXX` for non-ASCII and surrogate pairs above U+FFFF).
///
/// Each line must be a whole JSON object (RFC 8259, plus the NaN / Infinity /
/// -Infinity that Python's `json` writes for floats) whose `field` is a string. Lines
/// holding only whitespace are skipped, as pyarrow's JSON reader (behind
/// `load_dataset("json")`) skips them. The line's bytes must already be valid UTF-8.
enum JSONLines {
    /// Why a line was refused, without the file and line number.
    struct Refusal: Error {
        let message: String
    }

    /// The kinds of JSON value, for messages.
    enum Kind: String {
        case object = "an object", array = "an array", string = "a string", number = "a number"
        case bool = "a boolean", null = "null"
    }

    /// The field's string as UTF-8 bytes, and how many lone surrogate escapes were
    /// replaced with U+FFFD (only when `replaceLoneSurrogates`; otherwise they are refused).
    static func field(_ field: [UInt8], of line: UnsafeBufferPointer<UInt8>,
                      replaceLoneSurrogates: Bool) throws(Refusal) -> (text: [UInt8], replaced: Int) {
        var p = Parser(p: line, field: field, replaceLoneSurrogates: replaceLoneSurrogates)
        return try p.record()
    }

    /// True when the line holds nothing but JSON whitespace.
    static func isBlank(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A }
    }

    struct Parser {
        let p: UnsafeBufferPointer<UInt8>
        let field: [UInt8]
        let replaceLoneSurrogates: Bool
        var i = 0
        var replaced = 0
        static let maxDepth = 512

        init(p: UnsafeBufferPointer<UInt8>, field: [UInt8], replaceLoneSurrogates: Bool) {
            self.p = p
            self.field = field
            self.replaceLoneSurrogates = replaceLoneSurrogates
        }

        // MARK: - The record

        mutating func record() throws(Refusal) -> (text: [UInt8], replaced: Int) {
            skipSpace()
            guard i < p.count, p[i] == UInt8(ascii: "{") else {
                let kind = try value(depth: 0)
                skipSpace()
                guard i == p.count else { throw notJSON("expected the end of the line after \(kind.rawValue)") }
                throw Refusal(message: "a JSON record must be an object, this line is \(kind.rawValue)")
            }
            i += 1
            var text: [UInt8]?
            var wrongKind: Kind?
            var keys: [String] = []
            skipSpace()
            if peek == UInt8(ascii: "}") {
                i += 1
            } else {
                while true {
                    skipSpace()
                    guard peek == UInt8(ascii: "\"") else { throw notJSON("expected a '\"' to start a key") }
                    let key = try string()
                    skipSpace()
                    guard peek == UInt8(ascii: ":") else { throw notJSON("expected ':' after a key") }
                    i += 1
                    skipSpace()
                    if key == field {
                        guard text == nil && wrongKind == nil else {
                            throw Refusal(message: "field \"\(String(decoding: field, as: UTF8.self))\" appears twice")
                        }
                        if peek == UInt8(ascii: "\"") { text = try string() } else { wrongKind = try value(depth: 1) }
                    } else {
                        if keys.count < 8 { keys.append(String(decoding: key, as: UTF8.self)) }
                        _ = try value(depth: 1)
                    }
                    skipSpace()
                    if peek == UInt8(ascii: ",") { i += 1; continue }
                    if peek == UInt8(ascii: "}") { i += 1; break }
                    throw notJSON("expected ',' or '}' after a value")
                }
            }
            skipSpace()
            guard i == p.count else { throw notJSON("expected the end of the line after the object") }
            let name = String(decoding: field, as: UTF8.self)
            if let wrongKind {
                throw Refusal(message: "field \"\(name)\" is \(wrongKind.rawValue), not a string")
            }
            guard let text else {
                let has = keys.isEmpty ? "the object is empty" : "it has " + keys.map { "\"\($0)\"" }.joined(separator: ", ")
                throw Refusal(message: "no \"\(name)\" field (\(has)); choose the field with --text-field")
            }
            return (text, replaced)
        }

        // MARK: - Values

        var peek: UInt8? { i < p.count ? p[i] : nil }

        func notJSON(_ what: String) -> Refusal {
            let at = i < p.count ? "byte \(i + 1) of the line" : "the end of the line"
            return Refusal(message: "not JSON: \(what) at \(at)")
        }

        mutating func skipSpace() {
            while i < p.count, p[i] == 0x20 || p[i] == 0x09 || p[i] == 0x0D || p[i] == 0x0A { i += 1 }
        }

        /// Reads any value, returning its kind.
        mutating func value(depth: Int) throws(Refusal) -> Kind {
            guard depth < Self.maxDepth else { throw notJSON("nested more than \(Self.maxDepth) deep") }
            guard let c = peek else { throw notJSON("expected a value") }
            switch c {
            case UInt8(ascii: "\""):
                _ = try string()
                return .string
            case UInt8(ascii: "{"):
                i += 1
                skipSpace()
                if peek == UInt8(ascii: "}") { i += 1; return .object }
                while true {
                    skipSpace()
                    guard peek == UInt8(ascii: "\"") else { throw notJSON("expected a '\"' to start a key") }
                    _ = try string()
                    skipSpace()
                    guard peek == UInt8(ascii: ":") else { throw notJSON("expected ':' after a key") }
                    i += 1
                    skipSpace()
                    _ = try value(depth: depth + 1)
                    skipSpace()
                    if peek == UInt8(ascii: ",") { i += 1; continue }
                    if peek == UInt8(ascii: "}") { i += 1; return .object }
                    throw notJSON("expected ',' or '}' after a value")
                }
            case UInt8(ascii: "["):
                i += 1
                skipSpace()
                if peek == UInt8(ascii: "]") { i += 1; return .array }
                while true {
                    skipSpace()
                    _ = try value(depth: depth + 1)
                    skipSpace()
                    if peek == UInt8(ascii: ",") { i += 1; continue }
                    if peek == UInt8(ascii: "]") { i += 1; return .array }
                    throw notJSON("expected ',' or ']' after a value")
                }
            case UInt8(ascii: "t"): try literal("true"); return .bool
            case UInt8(ascii: "f"): try literal("false"); return .bool
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "N"): try literal("NaN"); return .number
            case UInt8(ascii: "I"): try literal("Infinity"); return .number
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try number()
                return .number
            default:
                throw notJSON("expected a value")
            }
        }

        mutating func literal(_ word: StaticString) throws(Refusal) {
            let n = word.utf8CodeUnitCount
            let w = UnsafeBufferPointer(start: word.utf8Start, count: n)
            guard i + n <= p.count, (0..<n).allSatisfy({ p[i + $0] == w[$0] }) else { throw notJSON("expected a value") }
            i += n
        }

        mutating func digits() -> Int {
            let s = i
            while i < p.count, p[i] >= UInt8(ascii: "0"), p[i] <= UInt8(ascii: "9") { i += 1 }
            return i - s
        }

        /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, or -Infinity.
        mutating func number() throws(Refusal) {
            if peek == UInt8(ascii: "-") {
                i += 1
                if peek == UInt8(ascii: "I") { try literal("Infinity"); return }
            }
            if peek == UInt8(ascii: "0") {
                i += 1
            } else if digits() == 0 {
                throw notJSON("expected a digit")
            }
            if peek == UInt8(ascii: ".") {
                i += 1
                guard digits() > 0 else { throw notJSON("expected a digit after '.'") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                i += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { throw notJSON("expected a digit in the exponent") }
            }
        }

        mutating func hex4() throws(Refusal) -> UInt32 {
            guard i + 4 <= p.count else { throw notJSON("expected four hex digits after \\u") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = p[i]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: throw notJSON("expected four hex digits after \\u")
                }
                v = v << 4 | UInt32(d)
                i += 1
            }
            return v
        }

        static func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
            switch v {
            case 0..<0x80:
                out.append(UInt8(v))
            case 0x80..<0x800:
                out.append(UInt8(0xC0 | v >> 6)); out.append(UInt8(0x80 | v & 0x3F))
            case 0x800..<0x10000:
                out.append(UInt8(0xE0 | v >> 12)); out.append(UInt8(0x80 | v >> 6 & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
            default:
                out.append(UInt8(0xF0 | v >> 18)); out.append(UInt8(0x80 | v >> 12 & 0x3F))
                out.append(UInt8(0x80 | v >> 6 & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
            }
        }

        /// A string at `i` (which is its opening quote), unescaped, as UTF-8.
        mutating func string() throws(Refusal) -> [UInt8] {
            i += 1
            var out: [UInt8] = []
            var run = i  // start of bytes not yet copied
            while true {
                guard i < p.count else { throw notJSON("a string is not closed") }
                let c = p[i]
                if c == UInt8(ascii: "\"") {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: p[run..<i]))
                    i += 1
                    return out
                }
                if c < 0x20 {
                    let hex = String(c, radix: 16, uppercase: true)
                    throw notJSON("control character U+\(String(repeating: "0", count: 4 - hex.count) + hex) inside a string (JSON needs it escaped)")
                }
                guard c == UInt8(ascii: "\\") else { i += 1; continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: p[run..<i]))
                i += 1
                guard let e = peek else { throw notJSON("a string is not closed") }
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    let start = i - 2
                    var v = try hex4()
                    if (0xD800..<0xDC00).contains(v), i + 6 <= p.count, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u") {
                        let save = i
                        i += 2
                        let lo = try hex4()
                        if (0xDC00..<0xE000).contains(lo) {
                            v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                        } else {
                            i = save  // a lone high surrogate; the next escape stands on its own
                        }
                    }
                    if (0xD800..<0xE000).contains(v) {
                        guard replaceLoneSurrogates else {
                            let esc = String(decoding: UnsafeBufferPointer(rebasing: p[start..<(start + 6)]), as: UTF8.self)
                            throw Refusal(message: "lone surrogate \(esc) in a string at byte \(start + 1) of the line is not text "
                                + "(pass --replace-invalid-utf8 to read it as U+FFFD)")
                        }
                        v = 0xFFFD
                        replaced += 1
                    }
                    Self.appendUTF8(v, to: &out)
                default:
                    i -= 1
                    throw notJSON(e >= 0x21 && e < 0x7F ? "unknown escape '\\\(Character(Unicode.Scalar(e)))'" : "unknown escape")
                }
                run = i
            }
        }
    }
}
