import Foundation

/// Building a BPETokenizer from what a model ships: GGUF metadata or a Hugging Face
/// tokenizer.json, and the pre-tokenizer each names.
extension BPETokenizer {

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
            guard let id = Self.int(value), id >= 0 else {
                throw LoraDistError("tokenizer.json vocab entry \"\(token)\" has no valid id")
            }
            // The token table is dense up to the largest id: bound it before allocating.
            guard id <= Self.maxTokenID else {
                throw LoraDistError("tokenizer.json vocab entry \"\(token)\" has id \(id), out of range (at most \(Self.maxTokenID))")
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
                  let id = Self.int(t["id"] as Any), id >= 0
            else { throw LoraDistError("tokenizer.json added_tokens[\(i)] needs a non-empty \"content\" and an \"id\"") }
            guard id <= Self.maxTokenID else {
                throw LoraDistError("tokenizer.json added_tokens[\(i)] has id \(id), out of range (at most \(Self.maxTokenID))")
            }
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

    static func ggufPreTokenizer(_ pre: String?) throws -> ([Splitter], Bool, String) {
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

    static func jsonPreTokenizer(_ any: Any?) throws -> ([Splitter], Bool, Bool, String) {
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

    /// 2^24 − 1: far above any real vocabulary (Gemma's 256k), far below a table that would not fit.
    static let maxTokenID = (1 << 24) - 1

    static func int(_ v: Any) -> Int? {
        if let i = v as? Int { return i }
        if let n = v as? NSNumber, let i = Int(exactly: n.doubleValue) { return i }
        return nil
    }

    static func typeName(_ v: Any) -> String {
        (v as? [String: Any])?["type"] as? String ?? "(untyped)"
    }
}
