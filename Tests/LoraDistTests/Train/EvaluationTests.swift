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

    @Test("with replicas the rank's model and each replica are sized for their share of a pass, and evaluation over more windows than one of them holds gives what one model on the whole pass gives")
    func replicasShareEvaluation() throws {
        let data = try writeCorpus("evaluation-replicas") { "Line \($0): the quick brown fox jumps over the lazy dog." }
        var o = TrainOptions()
        o.mode = .full; o.model = "tiny"; o.data = data; o.steps = 30; o.batch = 5; o.seqLen = 16
        o.lr = 1e-2; o.warmup = 2; o.evalEvery = 100; o.quiet = true; o.runDir = TestPaths.tempDir("evaluation-replicas-run")
        o.threads = 2; o.replicas = 2
        let trainer = try makeTrainer(o)
        try trainer.run()   // some predictions right, some wrong
        let loaded = trainer.loaded
        #expect(loaded.replicaCount == 2 && loaded.options.maxBatch == 5)
        #expect(([loaded.model] + loaded.replicas).map(\.maxBatch) == [3, 3], "each model holds its part of 5 sequences")

        // One model on every thread, sized for the whole pass, with the trained weights.
        var one = Trainer.modelOptions(o, maxBatch: 5)
        one.replicas = 1; one.training = false
        let single = try LoadedModel(one, cluster: TestCluster.shared)
        #expect(single.replicaCount == 1 && single.model.maxBatch == 5)
        let store = trainer.model.store
        single.setOwnedTrainable(Array(UnsafeBufferPointer(start: store.trainableValues, count: store.trainableCount)))
        single.publish()

        // 13 windows: passes of 5, 5 and 3, each split over the two models.
        let tokens = Array(trainer.corpus.train.prefix(13 * o.seqLen + 1))
        let split = trainer.evaluation(tokens: tokens, windows: 13)
        let whole = single.evaluation(tokens: tokens, windows: 13)
        #expect(split.accuracy > 0 && split.accuracy < 1, "accuracy \(split.accuracy): the case does not tell hits from misses")
        #expect(split.accuracy == whole.accuracy, "accuracy \(split.accuracy) split, \(whole.accuracy) on one model")
        #expect(abs(split.loss - whole.loss) < 1e-6 * whole.loss, "loss \(split.loss) split, \(whole.loss) on one model")
        // the models' sums are added in model order: the same bits every time
        #expect(trainer.evaluation(tokens: tokens, windows: 13) == split)
    }
}
