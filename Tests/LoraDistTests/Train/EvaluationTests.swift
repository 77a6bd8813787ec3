import Foundation
import Testing
@testable import LoraDist

/// LoadedModel.evaluation: the loss and top-1 accuracy it reduces are those of the logits.
@Suite(.serialized) struct EvaluationTests {
    @Test("evaluation over one window: accuracy is the share of positions whose argmax logit is the next token, loss the mean cross-entropy")
    func oneWindow() throws {
        let data = try writeCorpus("evaluation") { "Line \($0): the quick brown fox jumps over the lazy dog." }
        var o = TrainOptions()
        o.mode = .full; o.model = "tiny"; o.data = data; o.steps = 30; o.batch = 4; o.seqLen = 16
        o.lr = 1e-2; o.warmup = 2; o.evalEvery = 100; o.quiet = true; o.runDir = TestPaths.tempDir("evaluation-run")
        let trainer = try makeTrainer(o)
        try trainer.run()   // a little training, so that some predictions are right and some wrong
        let T = o.seqLen
        let tokens = Array(trainer.corpus.train.prefix(T + 1))   // exactly one window
        let result = trainer.evaluation(tokens: tokens, windows: 8)
        #expect(result.loss == trainer.evaluate(tokens: tokens, windows: 8))

        // The same window by hand: forward, then argmax and log-softmax of each row in Double.
        let model = trainer.model, V = model.config.vocabSize
        let ids = tokens.prefix(T).map { $0 }
        let logits = ids.withUnsafeBufferPointer { model.forward(ids: $0.baseAddress!, batch: 1) }
        var hits = 0, loss = 0.0
        for t in 0..<T {
            let row = (0..<V).map { Double(logits[t * V + $0]) }
            let top = row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!
            if top == Int(tokens[t + 1]) { hits += 1 }
            let m = row.max()!
            loss += log(row.map { exp($0 - m) }.reduce(0, +)) + m - row[Int(tokens[t + 1])]
        }
        #expect(hits > 0 && hits < T, "\(hits) of \(T) right: the case does not tell hits from misses")
        #expect(abs(result.accuracy - Double(hits) / Double(T)) < 1e-12, "accuracy \(result.accuracy), by hand \(hits)/\(T)")
        #expect(abs(result.loss - loss / Double(T)) < 1e-4, "loss \(result.loss), by hand \(loss / Double(T))")
        #expect(abs(result.perplexity - exp(result.loss)) < 1e-9 * result.perplexity)
    }
}
