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

    private let tokenBytes: [[UInt8]]
    private let byteIDs: [Int32]
    private let unkID: Int32
    private let fuseUnk: Bool
    private let pairs: PairTable
    private let rankNewID: [Int32]
    private let wholeWords: [[UInt8]: Int32]?
    private let matchers: [AddedMatcher]
    private let steps: [Splitter]
    private let byteLevelRegex: Bool
    private let addPrefixSpace: Bool

    private let lock = NSLock()
    private var cache = WordCache()

    // MARK: - Construction

    /// A tokenizer from GGUF metadata: `tokenizer.ggml.tokens`, `.merges` ("a b"), `.token_type`
    /// (3 = control: matched whole as a special token; 4 = user-defined: matched whole too),
    /// `.bos_token_id`, `.eos_token_id` and `.pre` (the pre-tokenizer's name, as llama.cpp
    /// names it). Tokens are built as transformers' GGUF loader builds them.
    ///
    /// `pre`: "smollm" (and starcoder, refact, command-r, codeshell, exaone, minerva-7b) splits
    /// every digit off, then applies the GPT-2 regex — llama.cpp's rule for these names and
    /// SmolLM2's own tokenizer.json (Sequence[Digits(individual), ByteLevel]). "gpt2" (gpt-2,
    /// phi-2, roberta-bpe, mpt, olmo, jais) is the GPT-2 regex; "llama-bpe" (llama3, llama-v3,
    /// falcon3, pixtral, dbrx, smaug-bpe) the Llama 3 regex; "qwen2" (deepseek-r1-qwen, megrez)
    /// Qwen2's; "gpt-4o" (llama4) GPT-4o's. A missing `pre`, or "default", is the GPT-2 regex: what
    /// transformers builds for a "gpt2" tokenizer model it has no split for (llama.cpp's "default"
    /// BPE rule is an odd multi-regex one no Hugging Face tokenizer uses). Any other name throws.
    public convenience init(
        tokens: [String], merges: [String], tokenTypes: [Int]?, bos: Int?, eos: Int?, pre: String?
    ) throws {
        if let tokenTypes, tokenTypes.count != tokens.count {
            throw LoraDistError("GGUF tokenizer has \(tokens.count) tokens but \(tokenTypes.count) token types")
        }
        let (steps, byteLevelRegex, preName) = try Self.ggufPreTokenizer(pre)
        // transformers respells a token with characters outside the byte alphabet as the
        // alphabet spelling of its UTF-8 bytes.
        let spelled = tokens.map { t in t.unicodeScalars.allSatisfy { ByteLevel.byteOf[$0] != nil } ? t : ByteLevel.spell(Array(t.utf8)) }
        var vocab = [String: Int32](minimumCapacity: tokens.count)
        for (i, t) in spelled.enumerated() { vocab[t] = Int32(i) }  // the last of duplicates wins, as in transformers
        var parsed: [(String, String)] = []
        parsed.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() {
            let parts = m.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw LoraDistError("GGUF merge \(i) \"\(m)\" is not two tokens separated by one space")
            }
            parsed.append((String(parts[0]), String(parts[1])))
        }
        var added: [AddedToken] = []
        if let tokenTypes {
            for (i, type) in tokenTypes.enumerated() where type == 3 || type == 4 {
                // A control token spelled outside the byte alphabet is a llama.cpp mislabel that
                // transformers skips; so does a user-defined one that is not in the vocabulary.
                guard tokens[i].unicodeScalars.allSatisfy({ ByteLevel.byteOf[$0] != nil }) else { continue }
                added.append(AddedToken(content: tokens[i], id: Int32(i), normalized: false))
            }
        }
        try self.init(parts: Parts(
            tokens: spelled, vocab: vocab, merges: parsed, added: added, unk: nil, fuseUnk: false,
            ignoreMerges: false, steps: steps, byteLevelRegex: byteLevelRegex, addPrefixSpace: false,
            preName: preName, bos: bos, eos: eos))
    }

    /// A tokenizer from a Hugging Face tokenizer.json: model.type "BPE" (vocab, merges as "a b" or
    /// [a, b]), added_tokens, pre_tokenizer ByteLevel or Sequence[Split(regex, Isolated) | Digits
    /// ..., ByteLevel], decoder ByteLevel (or none), no normalizer. The post-processor is not used.
    /// tokenizer.json does not say which tokens are BOS/EOS: pass them, or they are taken from
    /// the usual added tokens (<|begin_of_text|>, <s>, <bos>, <|endoftext|> / <|end_of_text|>,
    /// </s>, <eos>, <|endoftext|>), else -1.
    public convenience init(tokenizerJSON data: Data, bos: Int? = nil, eos: Int? = nil) throws {
        let rootAny: Any
        do {
            rootAny = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw LoraDistError("tokenizer.json is not valid JSON")
        }
        guard let root = rootAny as? [String: Any] else { throw LoraDistError("tokenizer.json is not a JSON object") }
        guard let model = root["model"] as? [String: Any] else { throw LoraDistError("tokenizer.json has no \"model\" object") }
        let type = model["type"] as? String ?? "(none)"
        guard type == "BPE" else {
            throw LoraDistError("tokenizer.json model type \"\(type)\" is not supported: only byte-level \"BPE\"")
        }
        guard let vocabAny = model["vocab"] as? [String: Any] else { throw LoraDistError("tokenizer.json model has no \"vocab\" object") }
        var vocab = [String: Int32](minimumCapacity: vocabAny.count)
        for (token, value) in vocabAny {
            guard let id = Self.int(value), id >= 0, id < Int(Int32.max) else {
                throw LoraDistError("tokenizer.json vocab entry \"\(token)\" has no valid id")
            }
            vocab[token] = Int32(id)
        }
        guard let mergesAny = model["merges"] as? [Any] else { throw LoraDistError("tokenizer.json model has no \"merges\" array") }
        var merges: [(String, String)] = []
        merges.reserveCapacity(mergesAny.count)
        for (i, m) in mergesAny.enumerated() {
            if let s = m as? String {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw LoraDistError("tokenizer.json merge \(i) \"\(s)\" is not two tokens separated by one space")
                }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = m as? [Any], pair.count == 2, let a = pair[0] as? String, let b = pair[1] as? String {
                merges.append((a, b))
            } else {
                throw LoraDistError("tokenizer.json merge \(i) is neither \"a b\" nor [\"a\", \"b\"]")
            }
        }
        if let p = model["continuing_subword_prefix"] as? String, !p.isEmpty {
            throw LoraDistError("tokenizer.json BPE continuing_subword_prefix \"\(p)\" is not supported")
        }
        if let s = model["end_of_word_suffix"] as? String, !s.isEmpty {
            throw LoraDistError("tokenizer.json BPE end_of_word_suffix \"\(s)\" is not supported")
        }
        if model["byte_fallback"] as? Bool == true { throw LoraDistError("tokenizer.json BPE byte_fallback is not supported") }
        if let d = model["dropout"], !(d is NSNull), (d as? Double ?? 1) != 0 {
            throw LoraDistError("tokenizer.json BPE dropout is not supported (encoding would not be deterministic)")
        }
        var unk: Int32?
        if let u = model["unk_token"] as? String {
            guard let id = vocab[u] else { throw LoraDistError("tokenizer.json unk_token \"\(u)\" is not in the vocabulary") }
            unk = id
        }
        if let n = root["normalizer"], !(n is NSNull) {
            throw LoraDistError("tokenizer.json normalizer \(Self.typeName(n)) is not supported (byte-level BPE has none)")
        }
        if let d = root["decoder"], !(d is NSNull), Self.typeName(d) != "ByteLevel" {
            throw LoraDistError("tokenizer.json decoder \(Self.typeName(d)) is not supported: only ByteLevel")
        }
        let (steps, byteLevelRegex, addPrefixSpace, preName) = try Self.jsonPreTokenizer(root["pre_tokenizer"])

        var added: [AddedToken] = []
        var maxID = vocab.values.max() ?? -1
        for (i, a) in ((root["added_tokens"] as? [Any]) ?? []).enumerated() {
            guard let t = a as? [String: Any], let content = t["content"] as? String, !content.isEmpty,
                  let id = Self.int(t["id"] as Any), id >= 0, id < Int(Int32.max)
            else { throw LoraDistError("tokenizer.json added_tokens[\(i)] needs a non-empty \"content\" and an \"id\"") }
            for flag in ["lstrip", "rstrip", "single_word"] where t[flag] as? Bool == true {
                throw LoraDistError("tokenizer.json added token \"\(content)\" sets \(flag), which is not supported")
            }
            let special = t["special"] as? Bool ?? false
            added.append(AddedToken(content: content, id: Int32(id), normalized: t["normalized"] as? Bool ?? !special))
            maxID = max(maxID, Int32(id))
        }
        var tokens = [String](repeating: "", count: Int(maxID) + 1)
        for (t, id) in vocab { tokens[Int(id)] = t }
        for a in added where vocab[a.content] != a.id && tokens[Int(a.id)].isEmpty { tokens[Int(a.id)] = a.content }

        func find(_ names: [String]) -> Int? {
            for n in names { if let a = added.first(where: { $0.content == n }) { return Int(a.id) } }
            return nil
        }
        try self.init(parts: Parts(
            tokens: tokens, vocab: vocab, merges: merges, added: added, unk: unk,
            fuseUnk: model["fuse_unk"] as? Bool ?? false, ignoreMerges: model["ignore_merges"] as? Bool ?? false,
            steps: steps, byteLevelRegex: byteLevelRegex, addPrefixSpace: addPrefixSpace, preName: preName,
            bos: bos ?? find(["<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>"]),
            eos: eos ?? find(["<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"])))
    }

    private struct AddedToken {
        var content: String
        var id: Int32
        var normalized: Bool
    }

    private struct Parts {
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

    private init(parts p: Parts) throws {
        let n = p.tokens.count
        guard n > 0 else { throw LoraDistError("tokenizer has an empty vocabulary") }
        vocabSize = n
        for (name, v) in [("BOS", p.bos), ("EOS", p.eos)] {
            if let v, v < 0 || v >= n { throw LoraDistError("tokenizer \(name) id \(v) is outside the vocabulary of \(n)") }
        }
        bos = Int32(p.bos ?? -1)
        eos = Int32(p.eos ?? -1)
        preTokenizer = p.preName
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

    private func splitAdded(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, matcher: Int, into out: inout [Int32]) {
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
    private func encodeText(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, into out: inout [Int32]) {
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
    private func byteLevelStage(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, into out: inout [Int32]) {
        if addPrefixSpace && p[s] != 0x20 {
            var tmp = [UInt8](repeating: 0x20, count: e - s + 1)
            for k in s..<e { tmp[k - s + 1] = p[k] }
            tmp.withUnsafeBufferPointer { b in byteLevelSplit(b.baseAddress!, 0, b.count, into: &out) }
        } else {
            byteLevelSplit(p, s, e, into: &out)
        }
    }

    private func byteLevelSplit(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, into out: inout [Int32]) {
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

    private static let maxCachedWord = 256

    /// BPE on one piece, exactly as `tokenizers`' BPE::merge_word + Word::merge_all.
    private func bpe(_ w: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32]) {
        if n == 0 { return }
        if let whole = wholeWords, let id = whole[Array(UnsafeBufferPointer(start: w, count: n))] {
            out.append(id)
            return
        }
        let cacheable = n <= Self.maxCachedWord
        var hash: UInt64 = 0
        if cacheable {
            hash = WordCache.hash(w, n)
            if cache.lookup(hash, w, n, into: &out) { return }
        }
        // Symbols: one per byte (the byte's alphabet character); a byte the vocabulary lacks
        // becomes the unk token (fused with a preceding one if fuse_unk) or is dropped.
        var sym = [Int32]()
        sym.reserveCapacity(n)
        var lastWasUnk = false
        for k in 0..<n {
            let id = byteIDs[Int(w[k])]
            if id >= 0 {
                sym.append(id)
                lastWasUnk = false
            } else if unkID >= 0 {
                if !(fuseUnk && lastWasUnk) { sym.append(unkID) }
                lastWasUnk = true
            }
        }
        let start = out.count
        if sym.count == 1 {
            out.append(sym[0])
        } else if sym.count > 1 {
            merge(&sym, into: &out)
        }
        if cacheable { cache.insert(hash, w, n, out[start...]) }
    }

    /// Word::merge_all: a min-heap of (rank, position); an entry whose pair has changed since it
    /// was pushed is skipped.
    private func merge(_ sym: inout [Int32], into out: inout [Int32]) {
        let m = sym.count
        var prev = [Int32](repeating: -1, count: m)
        var next = [Int32](repeating: -1, count: m)
        var alive = [Bool](repeating: true, count: m)
        for k in 0..<m {
            prev[k] = Int32(k - 1)
            next[k] = k + 1 < m ? Int32(k + 1) : -1
        }
        var heap = MinHeap()
        for k in 0..<(m - 1) {
            let r = pairs.rank(sym[k], sym[k + 1])
            if r >= 0 { heap.push(UInt64(r) << 32 | UInt64(k)) }
        }
        while let top = heap.pop() {
            let rank = Int(top >> 32), pos = Int(top & 0xFFFF_FFFF)
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = Int(next[pos])
            let cur = pairs.rank(sym[pos], sym[right])
            guard cur >= 0, rankNewID[Int(cur)] == rankNewID[rank] else { continue }
            sym[pos] = rankNewID[rank]
            alive[right] = false
            next[pos] = next[right]
            if next[right] >= 0 { prev[Int(next[right])] = Int32(pos) }
            if prev[pos] >= 0 {
                let r = pairs.rank(sym[Int(prev[pos])], sym[pos])
                if r >= 0 { heap.push(UInt64(r) << 32 | UInt64(prev[pos])) }
            }
            if next[pos] >= 0 {
                let r = pairs.rank(sym[pos], sym[Int(next[pos])])
                if r >= 0 { heap.push(UInt64(r) << 32 | UInt64(pos)) }
            }
        }
        var k = 0
        while k >= 0 && k < m {
            out.append(sym[k])
            k = Int(next[k])
        }
    }

    // MARK: - Pre-tokenizer configuration

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let gpt4oPattern = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    private static func ggufPreTokenizer(_ pre: String?) throws -> ([Splitter], Bool, String) {
        switch pre {
        case nil, "default", "gpt2", "gpt-2", "phi-2", "roberta-bpe", "mpt", "olmo", "jais":
            return ([], true, "gpt2")
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b":
            return ([.digits(individual: true)], true, "smollm")
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe":
            return ([.llama3(maxDigits: 3)], false, "llama3")
        case "qwen2", "deepseek-r1-qwen", "megrez":
            return ([.llama3(maxDigits: 1)], false, "qwen2")
        case "gpt-4o", "llama4":
            return ([try .regex(pattern: gpt4oPattern)], false, "gpt-4o")
        case let name?:
            throw LoraDistError(
                "unknown GGUF pre-tokenizer \"\(name)\" (tokenizer.ggml.pre); known: gpt2, smollm, llama-bpe, qwen2, gpt-4o and their aliases")
        }
    }

    private static func jsonPreTokenizer(_ any: Any?) throws -> ([Splitter], Bool, Bool, String) {
        guard let any, !(any is NSNull) else {
            throw LoraDistError("tokenizer.json has no pre_tokenizer: byte-level BPE needs ByteLevel")
        }
        var list: [[String: Any]] = []
        func flatten(_ node: Any) throws {
            guard let d = node as? [String: Any] else { throw LoraDistError("tokenizer.json pre_tokenizer is not an object") }
            if d["type"] as? String == "Sequence" {
                for child in (d["pretokenizers"] as? [Any]) ?? [] { try flatten(child) }
            } else {
                list.append(d)
            }
        }
        try flatten(any)
        guard let last = list.last, last["type"] as? String == "ByteLevel" else {
            throw LoraDistError("tokenizer.json pre_tokenizer must end with ByteLevel (got \(list.map { $0["type"] as? String ?? "?" }))")
        }
        var steps: [Splitter] = []
        var names: [String] = []
        for d in list.dropLast() {
            let type = d["type"] as? String ?? "(none)"
            switch type {
            case "Digits":
                let individual = d["individual_digits"] as? Bool ?? false
                steps.append(.digits(individual: individual))
                names.append(individual ? "digits" : "digit-runs")
            case "Split":
                let behavior = d["behavior"] as? String ?? "(none)"
                guard behavior == "Isolated" else {
                    throw LoraDistError("tokenizer.json Split behavior \"\(behavior)\" is not supported: only Isolated")
                }
                guard d["invert"] as? Bool != true else { throw LoraDistError("tokenizer.json Split with invert is not supported") }
                let pattern = d["pattern"] as? [String: Any]
                if let regex = pattern?["Regex"] as? String {
                    switch regex {
                    case gpt2Pattern: steps.append(.gpt2); names.append("gpt2")
                    case llama3Pattern: steps.append(.llama3(maxDigits: 3)); names.append("llama3")
                    case qwen2Pattern: steps.append(.llama3(maxDigits: 1)); names.append("qwen2")
                    default: steps.append(try .regex(pattern: regex)); names.append(regex == gpt4oPattern ? "gpt-4o" : "split(\(regex))")
                    }
                } else if let literal = pattern?["String"] as? String, !literal.isEmpty {
                    steps.append(try .regex(pattern: NSRegularExpression.escapedPattern(for: literal)))
                    names.append("split(\"\(literal)\")")
                } else {
                    throw LoraDistError("tokenizer.json Split needs a pattern {\"Regex\": ...} or {\"String\": ...}")
                }
            default:
                throw LoraDistError("tokenizer.json pre-tokenizer \(type) is not supported (only Split, Digits, ByteLevel)")
            }
        }
        let useRegex = last["use_regex"] as? Bool ?? true
        let prefix = last["add_prefix_space"] as? Bool ?? true
        if useRegex { names.append("gpt2") }
        if names == ["digits", "gpt2"] { names = ["smollm"] }
        return (steps, useRegex, prefix, names.isEmpty ? "bytelevel" : names.joined(separator: "+"))
    }

    private static func int(_ v: Any) -> Int? {
        if let i = v as? Int { return i }
        if let n = v as? NSNumber, let i = Int(exactly: n.doubleValue) { return i }
        return nil
    }

    private static func typeName(_ v: Any) -> String {
        (v as? [String: Any])?["type"] as? String ?? "(untyped)"
    }
}

// MARK: - GPT-2 byte alphabet

fileprivate enum ByteLevel {
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

// MARK: - Added tokens

/// Leftmost-longest matching of added tokens on UTF-8 bytes (what `tokenizers`' aho-corasick
/// with MatchKind::LeftmostLongest gives): at each position, the longest token that starts there.
fileprivate struct AddedMatcher {
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

// MARK: - Pre-tokenizer scanners

fileprivate enum Splitter {
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

fileprivate enum Scan {
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

// MARK: - Tables

/// (left id, right id) → merge rank, open addressing.
fileprivate struct PairTable {
    private var keys: [UInt64]
    private var ranks: [Int32]
    private let mask: Int

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: .max, count: size)
        ranks = [Int32](repeating: -1, count: size)
        mask = size - 1
    }

    @inline(__always) private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & mask
    }

    mutating func insert(_ a: Int32, _ b: Int32, rank: Int32, newID: Int32) {
        let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
        var i = slot(key)
        while keys[i] != .max && keys[i] != key { i = (i + 1) & mask }
        keys[i] = key
        ranks[i] = rank
    }

    /// The rank of merging a and b, or -1.
    @inline(__always) func rank(_ a: Int32, _ b: Int32) -> Int32 {
        let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
        var i = slot(key)
        while true {
            let k = keys[i]
            if k == key { return ranks[i] }
            if k == .max { return -1 }
            i = (i + 1) & mask
        }
    }
}

fileprivate struct MinHeap {
    private var a: [UInt64] = []

    mutating func push(_ v: UInt64) {
        a.append(v)
        var i = a.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if a[parent] <= v { break }
            a[i] = a[parent]
            i = parent
        }
        a[i] = v
    }

    mutating func pop() -> UInt64? {
        guard let top = a.first else { return nil }
        let last = a.removeLast()
        if a.isEmpty { return top }
        var i = 0
        let n = a.count
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            var c = l
            if l + 1 < n && a[l + 1] < a[l] { c = l + 1 }
            if a[c] >= last { break }
            a[i] = a[c]
            i = c
        }
        a[i] = last
        return top
    }
}

/// Piece bytes → ids, with no allocation on a hit. Cleared when full.
fileprivate struct WordCache {
    private struct Entry {
        var hash: UInt64
        var keyStart: Int32, keyLen: Int32, idStart: Int32, idLen: Int32
    }

    private static let maxEntries = 1 << 17
    private var slots = [Int32](repeating: -1, count: maxEntries * 2)
    private var entries: [Entry] = []
    private var keyBytes: [UInt8] = []
    private var ids: [Int32] = []

    @inline(__always) static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for k in 0..<n { h = (h ^ UInt64(p[k])) &* 0x100_0000_01b3 }
        return h
    }

    mutating func lookup(_ h: UInt64, _ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32]) -> Bool {
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let s = slots[i]
            if s < 0 { return false }
            let en = entries[Int(s)]
            if en.hash == h && Int(en.keyLen) == n {
                let same = keyBytes.withUnsafeBufferPointer { memcmp($0.baseAddress! + Int(en.keyStart), p, n) == 0 }
                if same {
                    out.append(contentsOf: ids[Int(en.idStart)..<Int(en.idStart + en.idLen)])
                    return true
                }
            }
            i = (i + 1) & mask
        }
    }

    mutating func insert(_ h: UInt64, _ p: UnsafePointer<UInt8>, _ n: Int, _ value: ArraySlice<Int32>) {
        if entries.count >= Self.maxEntries {
            entries.removeAll(keepingCapacity: true)
            keyBytes.removeAll(keepingCapacity: true)
            ids.removeAll(keepingCapacity: true)
            for i in slots.indices { slots[i] = -1 }
        }
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: h) & mask
        while slots[i] >= 0 { i = (i + 1) & mask }
        slots[i] = Int32(entries.count)
        entries.append(Entry(hash: h, keyStart: Int32(keyBytes.count), keyLen: Int32(n),
                             idStart: Int32(ids.count), idLen: Int32(value.count)))
        keyBytes.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        ids.append(contentsOf: value)
    }
}
