import Foundation

/// A BPETokenizer written out as a Hugging Face tokenizer.json, so a model directory made from a
/// GGUF file (whose tokenizer lives in its metadata) carries the tokenizer it was trained with.
/// What the loader (BPELoader.swift) reads back from it is the same tokenizer: same `identity`,
/// same ids. The file holds what encoding depends on: model BPE (vocab, merges as pairs, unk,
/// fuse_unk, ignore_merges), added tokens (whole-match, never stripped), the pre-tokenizer
/// (Digits / Split steps, then ByteLevel) and the ByteLevel decoder; no normalizer and no
/// post-processor (lora-dist adds nothing around the ids, and neither does transformers for
/// SmolLM2's GGUF). BOS and EOS are not tokenizer.json's to say: config.json carries them.
extension BPETokenizer {

    public func tokenizerJSON() throws -> Data {
        let p = definition
        // tokenizer.json's vocab maps spelling → id: two ids spelled alike cannot both be written.
        if p.vocab.count != p.tokens.filter({ !$0.isEmpty }).count {
            let ids = Dictionary(grouping: p.tokens.indices.filter { !p.tokens[$0].isEmpty }, by: { p.tokens[$0] })
                .values.filter { $0.count > 1 }.flatMap { $0 }.sorted()
            throw LoraDistError("tokenizer ids \(ids.prefix(4).map(String.init).joined(separator: ", ")) are spelled alike; tokenizer.json's vocabulary cannot hold both")
        }
        let model: [String: Any] = [
            "type": "BPE", "dropout": NSNull(), "continuing_subword_prefix": NSNull(), "end_of_word_suffix": NSNull(),
            "fuse_unk": p.fuseUnk, "byte_fallback": false, "ignore_merges": p.ignoreMerges,
            "unk_token": p.unk.map { p.tokens[Int($0)] as Any } ?? NSNull(),
            "vocab": p.vocab.mapValues { Int($0) },
            "merges": p.merges.map { [$0.0, $0.1] },
        ]
        let added: [[String: Any]] = p.added.map {
            ["id": Int($0.id), "content": $0.content, "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": $0.normalized, "special": !$0.normalized]
        }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": p.addPrefixSpace, "trim_offsets": true,
                                        "use_regex": p.byteLevelRegex]
        let pre: [String: Any] = p.steps.isEmpty
            ? byteLevel
            : ["type": "Sequence", "pretokenizers": p.steps.map(Self.json) + [byteLevel]]
        let root: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": NSNull(), "pre_tokenizer": pre, "post_processor": NSNull(),
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": model,
        ]
        return try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
    }

    /// One pre-tokenizer step as `tokenizers` spells it (the scanners stand for these patterns).
    static func json(_ step: Splitter) -> [String: Any] {
        func split(_ regex: String) -> [String: Any] {
            ["type": "Split", "pattern": ["Regex": regex], "behavior": "Isolated", "invert": false]
        }
        switch step {
        case .gpt2: return split(gpt2Pattern)
        case .llama3(let maxDigits): return split(maxDigits == 1 ? qwen2Pattern : llama3Pattern)
        case .digits(let individual): return ["type": "Digits", "individual_digits": individual]
        case .regex(_, let pattern): return split(pattern)
        }
    }
}
