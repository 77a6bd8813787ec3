import Foundation

/// GPT-2-style byte-level BPE, matching Hugging Face `tokenizers` id for id.
///
/// `encode` follows `Tokenizer.encode(text, add_special_tokens=False)`:
///  1. added tokens (special or not) written in the text are matched whole, leftmost-longest,
///     as `tokenizers` does with default settings; the text between them is encoded on its own;
///  2. the pre-tokenizer splits each stretch of text (the GPT-2 regex, SmolLM's digits-then-GPT-2,
///     Llama 3 / Qwen2 patterns as hand-written scanners, any other `Split` regex through
///     NSRegularExpression);
///  3. each piece's UTF-8 bytes go through GPT-2's bytes_to_unicode alphabet and are merged by
///     rank exactly as `tokenizers`' `Word::merge_all` does (a byte the vocabulary lacks is dropped,
///     or becomes the unk token when the model has one).
/// `decode` is the ByteLevel decoder: every token (an added token by its content) is turned back
/// into bytes through the alphabet, or taken as UTF-8 when it has a character outside it.
///
/// No post-processor runs: nothing is added around the ids (for SmolLM2's GGUF that is also what
/// transformers does by default: add_bos_token is false and its template adds nothing).
/// Thread-safe: one lock around the per-word cache.
public final class BPETokenizer: Tokenizer, @unchecked Sendable {
    public let vocabSize: Int
    /// -1 when the tokenizer has none.
    public let bos: Int32
    /// -1 when the tokenizer has none.
    public let eos: Int32
    /// The pre-tokenizer in use, for messages: "gpt2", "smollm", "llama3", "qwen2", "gpt-4o", or
    /// "split(<regex>)" steps joined by "+".
    public let preTokenizer: String
    /// Added tokens (matched whole in text), content → id.
    public let addedTokens: [String: Int32]
    /// FNV-1a over everything encoding depends on: vocabulary, merges, added tokens, pre-tokenizer,
    /// special ids and flags.
    public let identity: String

    let tokenBytes: [[UInt8]]
    let byteIDs: [Int32]
    let unkID: Int32
    let fuseUnk: Bool
    let pairs: PairTable
    let rankNewID: [Int32]
    let wholeWords: [[UInt8]: Int32]?
    let matchers: [AddedMatcher]
    let steps: [Splitter]
    let byteLevelRegex: Bool
    let addPrefixSpace: Bool

    /// What it was built from, kept to write it out again as tokenizer.json (BPEWriter.swift).
    let definition: Parts

    let lock = NSLock()
    var cache = WordCache()

    struct AddedToken {
        var content: String
        var id: Int32
        var normalized: Bool
    }

    struct Parts {
        var tokens: [String]  // by id, byte-alphabet spelling ("" where no id)
        var vocab: [String: Int32]
        var merges: [(String, String)]
        var added: [AddedToken]
        var unk: Int32?
        var fuseUnk: Bool
        var ignoreMerges: Bool
        var steps: [Splitter]
        var byteLevelRegex: Bool
        var addPrefixSpace: Bool
        var preName: String
        var bos: Int?
        var eos: Int?
    }


    init(parts p: Parts) throws {
        let n = p.tokens.count
        guard n > 0 else { throw LoraDistError("tokenizer has an empty vocabulary") }
        vocabSize = n
        for (name, v) in [("BOS", p.bos), ("EOS", p.eos)] {
            if let v, v < 0 || v >= n { throw LoraDistError("tokenizer \(name) id \(v) is outside the vocabulary of \(n)") }
        }
        bos = Int32(p.bos ?? -1)
        eos = Int32(p.eos ?? -1)
        preTokenizer = p.preName
        definition = p
        var h = fnv1a("bpe|\(p.preName)|\(p.unk ?? -1)|\(p.fuseUnk)|\(p.ignoreMerges)|\(p.byteLevelRegex)|\(p.addPrefixSpace)|\(p.bos ?? -1)|\(p.eos ?? -1)")
        for t in p.tokens { h = fnv1a(t, seed: h ^ 0x1F) }
        for (a, b) in p.merges { h = fnv1a(b, seed: fnv1a(a, seed: h ^ 0x2F)) }
        for a in p.added { h = fnv1a("\(a.id)|\(a.normalized)|" + a.content, seed: h ^ 0x3F) }
        identity = "bpe " + String(format: "%016llx", h) + " (\(n) tokens, \(p.merges.count) merges)"
        steps = p.steps
        byteLevelRegex = p.byteLevelRegex
        addPrefixSpace = p.addPrefixSpace
        unkID = p.unk ?? -1
        fuseUnk = p.fuseUnk

        var ids = [Int32](repeating: -1, count: 256)
        for b in 0..<256 { ids[b] = p.vocab[String(Character(ByteLevel.charOf[b]))] ?? -1 }
        byteIDs = ids

        // Merges: (left id, right id) → rank and merged id. A later duplicate replaces an earlier
        // one, as in `tokenizers`.
        var table = PairTable(capacity: p.merges.count)
        var newIDs = [Int32](repeating: -1, count: p.merges.count)
        for (rank, (a, b)) in p.merges.enumerated() {
            guard let ia = p.vocab[a] else { throw LoraDistError("merge \(rank) \"\(a) \(b)\" uses \"\(a)\", which is not in the vocabulary") }
            guard let ib = p.vocab[b] else { throw LoraDistError("merge \(rank) \"\(a) \(b)\" uses \"\(b)\", which is not in the vocabulary") }
            guard let m = p.vocab[a + b] else {
                throw LoraDistError("merge \(rank) \"\(a) \(b)\" makes \"\(a + b)\", which is not in the vocabulary")
            }
            table.insert(ia, ib, rank: Int32(rank), newID: m)
            newIDs[rank] = m
        }
        pairs = table
        rankNewID = newIDs

        if p.ignoreMerges {
            var whole = [[UInt8]: Int32]()
            for (t, id) in p.vocab {
                if let bytes = ByteLevel.bytes(t) { whole[bytes] = id }
            }
            wholeWords = whole
        } else {
            wholeWords = nil
        }

        var byID = [Int32: String]()
        var contents = [String: Int32]()
        for a in p.added {
            guard a.id < n else { throw LoraDistError("added token \"\(a.content)\" has id \(a.id) outside the vocabulary") }
            byID[a.id] = a.content
            contents[a.content] = a.id
        }
        addedTokens = contents
        // `tokenizers` first splits on the added tokens matched on the raw text (normalized:
        // false), then on the others; with no normalizer both see the same text.
        matchers = [false, true].compactMap { normalized in
            let list = p.added.filter { $0.normalized == normalized }
            return list.isEmpty ? nil : AddedMatcher(list.map { (Array($0.content.utf8), $0.id) })
        }
        tokenBytes = (0..<n).map { id in
            let t = byID[Int32(id)] ?? p.tokens[id]
            return ByteLevel.bytes(t) ?? Array(t.utf8)
        }
    }


    // MARK: - Tokenizer

    public func encode(_ text: String) -> [Int32] {
        var text = text
        return text.withUTF8 { buf -> [Int32] in
            guard let base = buf.baseAddress, buf.count > 0 else { return [] }
            var out: [Int32] = []
            out.reserveCapacity(buf.count / 3 + 4)
            lock.lock()
            defer { lock.unlock() }
            splitAdded(base, 0, buf.count, matcher: 0, into: &out)
            return out
        }
    }

    public func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids where id >= 0 && Int(id) < tokenBytes.count { bytes.append(contentsOf: tokenBytes[Int(id)]) }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Encoding

    func splitAdded(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, matcher: Int, into out: inout [Int32]) {
        guard matcher < matchers.count else {
            encodeText(p, s, e, into: &out)
            return
        }
        let m = matchers[matcher]
        var textStart = s
        var i = s
        while i < e {
            if m.first[Int(p[i])], let (len, id) = m.match(p, i, e) {
                if textStart < i { splitAdded(p, textStart, i, matcher: matcher + 1, into: &out) }
                out.append(id)
                i += len
                textStart = i
            } else {
                i += 1
            }
        }
        if textStart < e { splitAdded(p, textStart, e, matcher: matcher + 1, into: &out) }
    }

    /// Text with no added token in it: pre-tokenize, then BPE each piece.
    func encodeText(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, into out: inout [Int32]) {
        if steps.isEmpty {
            byteLevelStage(p, s, e, into: &out)
            return
        }
        var starts = [s], ends = [e]
        for step in steps {
            var ns: [Int] = [], ne: [Int] = []
            ns.reserveCapacity(starts.count * 2)
            ne.reserveCapacity(starts.count * 2)
            for k in 0..<starts.count { step.split(p, starts[k], ends[k], &ns, &ne) }
            starts = ns
            ends = ne
        }
        for k in 0..<starts.count { byteLevelStage(p, starts[k], ends[k], into: &out) }
    }

    /// The ByteLevel pre-tokenizer on one piece (prefix space, GPT-2 regex), then BPE.
    func byteLevelStage(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, into out: inout [Int32]) {
        if addPrefixSpace && p[s] != 0x20 {
            var tmp = [UInt8](repeating: 0x20, count: e - s + 1)
            for k in s..<e { tmp[k - s + 1] = p[k] }
            tmp.withUnsafeBufferPointer { b in byteLevelSplit(b.baseAddress!, 0, b.count, into: &out) }
        } else {
            byteLevelSplit(p, s, e, into: &out)
        }
    }

    func byteLevelSplit(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, into out: inout [Int32]) {
        guard byteLevelRegex else {
            bpe(p + s, e - s, into: &out)
            return
        }
        var i = s
        while i < e {
            let j = Scan.gpt2(p, i, e)
            bpe(p + i, j - i, into: &out)
            i = j
        }
    }
}
