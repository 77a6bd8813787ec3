import Foundation

// Splitting text before BPE: added tokens matched whole, then the pre-tokenizer's pieces.

/// The split patterns `tokenizers` ships, recognised so the hand-written scanners run instead of a regex.
extension BPETokenizer {
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let gpt4oPattern = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
}

// MARK: - Added tokens

extension BPETokenizer {
    /// Leftmost-longest matching of added tokens on UTF-8 bytes (what `tokenizers`' aho-corasick
    /// with MatchKind::LeftmostLongest gives): at each position, the longest token that starts there.
    struct AddedMatcher {
        var first = [Bool](repeating: false, count: 256)
        var byFirst: [[([UInt8], Int32)]] = Array(repeating: [], count: 256)

        init(_ tokens: [([UInt8], Int32)]) {
            for t in tokens where !t.0.isEmpty {
                first[Int(t.0[0])] = true
                byFirst[Int(t.0[0])].append(t)
            }
            for b in 0..<256 { byFirst[b].sort { $0.0.count > $1.0.count } }
        }

        func match(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int) -> (Int, Int32)? {
            for (bytes, id) in byFirst[Int(p[i])] where bytes.count <= e - i {
                if bytes.withUnsafeBufferPointer({ memcmp($0.baseAddress!, p + i, $0.count) == 0 }) { return (bytes.count, id) }
            }
            return nil
        }
    }
}

// MARK: - Pre-tokenizer scanners

extension BPETokenizer {
    enum Splitter {
        case gpt2
        /// The Llama 3 pattern (maxDigits 3) or Qwen2's (maxDigits 1).
        case llama3(maxDigits: Int)
        case digits(individual: Bool)
        case regex(NSRegularExpression, String)

        static func regex(pattern: String) throws -> Splitter {
            do {
                return .regex(try NSRegularExpression(pattern: Scan.icuPattern(pattern)), pattern)
            } catch {
                throw LoraDistError("pre-tokenizer regex does not compile: \(pattern)")
            }
        }

        /// Appends the pieces of p[s..<e] (isolated matches and the text between them).
        func split(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, _ starts: inout [Int], _ ends: inout [Int]) {
            switch self {
            case .gpt2:
                var i = s
                while i < e { let j = Scan.gpt2(p, i, e); starts.append(i); ends.append(j); i = j }
            case .llama3(let maxDigits):
                var i = s
                while i < e { let j = Scan.llama3(p, i, e, maxDigits: maxDigits); starts.append(i); ends.append(j); i = j }
            case .digits(let individual):
                var i = s
                while i < e {
                    var (c, n) = Scan.decode(p, i)
                    let isNumber = Scan.cls(c) == Scan.number
                    var j = i + n
                    if !isNumber || !individual {
                        while j < e {
                            (c, n) = Scan.decode(p, j)
                            if (Scan.cls(c) == Scan.number) != isNumber { break }
                            j += n
                        }
                    }
                    starts.append(i)
                    ends.append(j)
                    i = j
                }
            case .regex(let re, _):
                Scan.regexSplit(re, p, s, e, &starts, &ends)
            }
        }
    }
}

extension BPETokenizer {
    enum Scan {
        static let other: UInt8 = 0, letter: UInt8 = 1, number: UInt8 = 2, space: UInt8 = 3

        /// \p{L}, \p{N}, \s (White_Space, as Oniguruma's \s) or anything else, for the BMP.
        static let bmp: [UInt8] = (0..<0x10000).map { classify(UInt32($0)) }

        static func classify(_ u: UInt32) -> UInt8 {
            guard let s = Unicode.Scalar(u) else { return other }
            if s.properties.isWhitespace { return space }
            switch s.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return letter
            case .decimalNumber, .letterNumber, .otherNumber: return number
            default: return other
            }
        }

        @inline(__always) static func cls(_ u: UInt32) -> UInt8 {
            u < 0x10000 ? bmp[Int(u)] : classify(u)
        }

        /// One scalar of valid UTF-8 at p[i]: (scalar, byte length).
        @inline(__always) static func decode(_ p: UnsafePointer<UInt8>, _ i: Int) -> (UInt32, Int) {
            let b0 = UInt32(p[i])
            if b0 < 0x80 { return (b0, 1) }
            if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | (UInt32(p[i + 1]) & 0x3F), 2) }
            if b0 < 0xF0 { return ((b0 & 0x0F) << 12 | (UInt32(p[i + 1]) & 0x3F) << 6 | (UInt32(p[i + 2]) & 0x3F), 3) }
            return ((b0 & 0x07) << 18 | (UInt32(p[i + 1]) & 0x3F) << 12 | (UInt32(p[i + 2]) & 0x3F) << 6 | (UInt32(p[i + 3]) & 0x3F), 4)
        }

        /// End of the run of scalars of class `c` from i.
        @inline(__always) static func run(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int, _ c: UInt8) -> Int {
            var j = i
            while j < e {
                let (u, n) = decode(p, j)
                if cls(u) != c { break }
                j += n
            }
            return j
        }

        /// Length of 's 't 're 've 'm 'll 'd after the apostrophe at p[i] (0 if none).
        @inline(__always) static func contraction(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int, caseless: Bool) -> Int {
            guard i + 1 < e else { return 0 }
            func at(_ k: Int) -> UInt8 {
                let b = p[k]
                return caseless && b >= 0x41 && b <= 0x5A ? b | 0x20 : b
            }
            let c = at(i + 1)
            switch c {
            case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"): return 2
            case UInt8(ascii: "r"), UInt8(ascii: "v"): return i + 2 < e && at(i + 2) == UInt8(ascii: "e") ? 3 : 0
            case UInt8(ascii: "l"): return i + 2 < e && at(i + 2) == UInt8(ascii: "l") ? 3 : 0
            case 0xC5 where caseless: return i + 2 < e && p[i + 2] == 0xBF ? 3 : 0  // ſ (U+017F) folds to s
            default: return 0
            }
        }

        /// Whitespace at i: `\s+(?!\S)|\s+` — the run, less its last character when more text follows.
        @inline(__always) static func spaces(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int) -> Int {
            var j = i, last = i
            while j < e {
                let (u, n) = decode(p, j)
                if cls(u) != space { break }
                last = j
                j += n
            }
            return j == e || last == i ? j : last
        }

        /// One match of the GPT-2 pattern at i:
        /// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
        static func gpt2(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int) -> Int {
            let (c, n) = decode(p, i)
            if c == 0x27 {
                let k = contraction(p, i, e, caseless: false)
                if k > 0 { return i + k }
            }
            if c == 0x20 && i + 1 < e {
                let (c2, n2) = decode(p, i + 1)
                let k = cls(c2)
                if k != space { return run(p, i + 1 + n2, e, k) }
            }
            let k = cls(c)
            if k != space { return run(p, i + n, e, k) }
            return spaces(p, i, e)
        }

        /// One match of the Llama 3 pattern (Qwen2's with maxDigits 1) at i:
        /// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
        static func llama3(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int, maxDigits: Int) -> Int {
            let (c, n) = decode(p, i)
            if c == 0x27 {
                let k = contraction(p, i, e, caseless: true)
                if k > 0 { return i + k }
            }
            let k = cls(c)
            if k == letter { return run(p, i + n, e, letter) }
            if k != number && c != 0x0D && c != 0x0A && i + n < e {
                let (c2, n2) = decode(p, i + n)
                if cls(c2) == letter { return run(p, i + n + n2, e, letter) }
            }
            if k == number {
                var j = i + n, count = 1
                while j < e && count < maxDigits {
                    let (u, m) = decode(p, j)
                    if cls(u) != number { break }
                    j += m
                    count += 1
                }
                return j
            }
            var j = -1
            if c == 0x20 && i + 1 < e {
                let (c2, n2) = decode(p, i + 1)
                if cls(c2) == other { j = run(p, i + 1 + n2, e, other) }
            }
            if j < 0 && k == other { j = run(p, i + n, e, other) }
            if j >= 0 {
                while j < e && (p[j] == 0x0D || p[j] == 0x0A) { j += 1 }
                return j
            }
            // Whitespace: \s*[\r\n]+ ends at the run's last CR/LF; else \s+(?!\S)|\s+.
            var r = i, lastNL = -1
            while r < e {
                let (u, m) = decode(p, r)
                if cls(u) != space { break }
                if u == 0x0D || u == 0x0A { lastNL = r + 1 }
                r += m
            }
            if lastNL > 0 { return lastNL }
            return spaces(p, i, e)
        }

        /// A `tokenizers` (Oniguruma) pattern for ICU: \s and \S become White_Space, which is what
        /// Oniguruma's \s matches (ICU's \s leaves out U+000B and U+0085).
        static func icuPattern(_ pattern: String) -> String {
            var out = ""
            var it = pattern.makeIterator()
            while let ch = it.next() {
                guard ch == "\\", let nx = it.next() else { out.append(ch); continue }
                switch nx {
                case "s": out += #"\p{White_Space}"#
                case "S": out += #"\P{White_Space}"#
                default: out.append(ch); out.append(nx)
                }
            }
            return out
        }

        static func regexSplit(_ re: NSRegularExpression, _ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int,
                               _ starts: inout [Int], _ ends: inout [Int]) {
            let text = String(decoding: UnsafeBufferPointer(start: p + s, count: e - s), as: UTF8.self)
            // UTF-16 offset → byte offset, at every scalar boundary.
            var map = [Int](repeating: 0, count: text.utf16.count + 1)
            var u16 = 0, u8 = s
            for c in text.unicodeScalars {
                map[u16] = u8
                u16 += c.utf16.count
                u8 += c.utf8.count
            }
            map[u16] = u8
            var prev = s
            let ns = text as NSString
            for m in re.matches(in: text, range: NSRange(location: 0, length: ns.length)) where m.range.length > 0 {
                let a = map[m.range.location], b = map[m.range.location + m.range.length]
                if prev < a { starts.append(prev); ends.append(a) }
                starts.append(a)
                ends.append(b)
                prev = b
            }
            if prev < e { starts.append(prev); ends.append(e) }
        }
    }
}
