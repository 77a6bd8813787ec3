import Foundation
import Testing
@testable import LoraDist

/// Generator's two attention paths against each other: a feed from position 0 runs the training
/// forward's Attention.forward over the prompt, a feed after cached positions the stacked
/// per-group product against the cache. On a small random Mistral with grouped-query heads
/// (G = 3, as SmolLM2; and G = 1, whose stacked rows are q's own) and a sliding window shorter
/// than the prompt, so that both paths skip keys before the window, and a prompt of more than
/// one Attention.block.
@Suite struct GenerationTests {
    static let promptLength = 150, window = 24

    /// Key/value heads for the 6 query heads: G = 3 and G = 1.
    static let kvHeads = [2, 6]

    static func model(kvHeads: Int) throws -> LlamaModel {
        let config = try FamilyTests.parse([
            "model_type": "mistral", "architectures": ["MistralForCausalLM"],
            "vocab_size": 64, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 6, "num_key_value_heads": kvHeads, "hidden_act": "silu",
            "sliding_window": window, "max_position_embeddings": 256,
            // larger than the usual 0.02, so that attention is far from uniform and a wrong key shows
            "initializer_range": 0.2,
        ])
        let model = try LlamaModel(config: config, lora: nil, maxBatch: 1, seqLen: promptLength)
        model.initialize(seed: 5)
        return model
    }

    static let prompt: [Int32] = {
        var g = SplitMix64(seed: 11)
        return (0..<promptLength).map { _ in Int32(g.next() % 64) }
    }()

    @Test("a prefill (the training forward's attention) gives the logits of feeding the prompt token by token (sliding window)",
          arguments: kvHeads)
    func prefillEqualsTokenByToken(_ kvHeads: Int) throws {
        let g = Generator(model: try Self.model(kvHeads: kvHeads))
        // the decode path: one token at a time, the logits after each
        let stepwise = Self.prompt.map { g.feed([$0]) }
        // prefills ending inside the first window, at its edge, at block edges, and the whole prompt
        for n in [1, 2, Self.window - 1, Self.window, Self.window + 1, 64, 65, 130, Self.promptLength] {
            g.reset()
            let got = g.feed(Array(Self.prompt.prefix(n)))
            let err = relativeError(got, stepwise[n - 1])
            #expect(err < 1e-5, "G = \(6 / kvHeads), prefill of \(n): relative error \(err)")
        }
    }

    @Test("a feed of many positions after cached ones gives the logits of feeding them token by token (sliding window)",
          arguments: kvHeads)
    func chunkAfterCacheEqualsTokenByToken(_ kvHeads: Int) throws {
        let g = Generator(model: try Self.model(kvHeads: kvHeads))
        let stepwise = Self.prompt.map { g.feed([$0]) }
        // cached positions, then many at once: one or more blocks of Attention.block stacked positions
        for (cached, upTo) in [(10, Self.promptLength), (1, 65), (40, 107)] {
            g.reset()
            _ = g.feed(Array(Self.prompt.prefix(cached)))
            let got = g.feed(Array(Self.prompt[cached..<upTo]))
            let err = relativeError(got, stepwise[upTo - 1])
            #expect(err < 1e-5, "G = \(6 / kvHeads), \(cached) cached, then up to \(upTo): relative error \(err)")
        }
    }
}
