import Foundation
import Testing
@testable import LoraDist

/// BPETokenizer.tokenizerJSON(): a tokenizer written out and read back is the same tokenizer
/// (identity, and the ids of Hugging Face `tokenizers` on every fixture case), whether it came
/// from GGUF metadata (SmolLM2) or from a tokenizer.json under each of the five pre-tokenizers.
@Suite struct TokenizerWriterTests {
    static func reread(_ tok: BPETokenizer) throws -> BPETokenizer {
        try BPETokenizer(tokenizerJSON: tok.tokenizerJSON(), bos: Int(tok.bos), eos: Int(tok.eos))
    }

    @Test func smollm2FromGGUFWrittenAndReadBack() throws {
        let gguf = try TokenizerTests.smollm2.get()
        let data = try gguf.tokenizerJSON()
        let back = try BPETokenizer(tokenizerJSON: data, bos: Int(gguf.bos), eos: Int(gguf.eos))
        #expect(back.identity == gguf.identity)
        #expect(back.preTokenizer == "smollm" && back.vocabSize == 49152 && back.addedTokens == gguf.addedTokens)
        TokenizerTests().check(back, "smollm2")
        // SmolLM2's own tokenizer.json shape: Sequence[Digits(individual), ByteLevel], no normalizer.
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let pre = try #require(root["pre_tokenizer"] as? [String: Any])
        let steps = try #require(pre["pretokenizers"] as? [[String: Any]])
        #expect(pre["type"] as? String == "Sequence" && steps.map { $0["type"] as? String } == ["Digits", "ByteLevel"])
        #expect(steps[0]["individual_digits"] as? Bool == true && steps[1]["add_prefix_space"] as? Bool == false)
        #expect(root["normalizer"] is NSNull)
        // Without the ids config.json gives, the added-token guess would pick <|endoftext|> (0) for both.
        let guessed = try BPETokenizer(tokenizerJSON: data)
        #expect(guessed.bos == 0 && guessed.identity != gguf.identity)
    }

    @Test(arguments: TokenizerTests.tinyVariants) func tinyWrittenAndReadBack(_ name: String) throws {
        let tok = try TokenizerTests.tiny(name)
        let back = try Self.reread(tok)
        #expect(back.identity == tok.identity, "\(name): \(back.preTokenizer) vs \(tok.preTokenizer)")
        TokenizerTests().check(back, name)
    }

    @Test func tokensSpelledAlikeAreRefused() throws {
        // GGUF allows two ids with one spelling (the later wins in encoding); tokenizer.json's vocab cannot hold both.
        let tok = try BPETokenizer(tokens: ["a", "b", "ab", "a"], merges: ["a b"], tokenTypes: nil, bos: nil, eos: nil, pre: "gpt2")
        let m = TokenizerTests.message { try tok.tokenizerJSON() }
        #expect(m == "tokenizer ids 0, 3 are spelled alike; tokenizer.json's vocabulary cannot hold both")
    }
}
