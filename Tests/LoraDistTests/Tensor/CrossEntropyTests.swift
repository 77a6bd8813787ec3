import Foundation
import Testing
@testable import LoraDist

/// The loss and top-1 hits of CrossEntropy.forward on logits small enough to work out by hand.
@Suite struct CrossEntropyTests {
    @Test("cross-entropy sum, labelled count and top-1 hits on a hand-computed case (ties go to the first index)")
    func handComputed() {
        let V = 3
        let logits: [Float] = [1, 2, 3,     // target 2: the top logit, a hit; loss log(e+e²+e³) − 3
                               0, 0, 0,     // target 1: a three-way tie, argmax is 0, a miss; loss log 3
                               5, 1, 0,     // target 0: a hit; loss log(e⁵+e+1) − 5
                               2, 7, 1,     // unlabelled (-100): not counted
                               0, 4, 4]     // target 2: tie of 1 and 2, argmax is 1, a miss; loss log(1+2e⁴) − 4
        let targets: [Int32] = [2, 1, 0, -100, 2]
        let r = CrossEntropy.forward(logits: logits, targets: targets, n: 5, vocab: V)
        let e = M_E
        let expected = log(e + e * e + e * e * e) - 3 + log(3.0) + log(pow(e, 5) + e + 1) - 5 + log(1 + 2 * pow(e, 4)) - 4
        #expect(r.count == 4)
        #expect(r.correct == 2)
        #expect(abs(r.sum - expected) < 1e-5, "sum \(r.sum), expected \(expected)")
    }

    @Test("every labelled row a hit when the target holds the strict maximum; none when it holds the minimum")
    func allOrNothing() {
        let V = 5, n = 7
        var g = SplitMix64(seed: 7)
        var logits = (0..<(n * V)).map { _ in g.normal() }
        let targets: [Int32] = (0..<n).map { Int32($0 % V) }
        for i in 0..<n { logits[i * V + Int(targets[i])] = 100 }
        #expect(CrossEntropy.forward(logits: logits, targets: targets, n: n, vocab: V).correct == n)
        for i in 0..<n { logits[i * V + Int(targets[i])] = -100 }
        #expect(CrossEntropy.forward(logits: logits, targets: targets, n: n, vocab: V).correct == 0)
    }

    @Test("top-1 over a row of 8-wide blocks and a tail: the first index of the maximum, wherever it is")
    func topOverBlocks() {
        let V = 37  // four blocks of 8 and a tail of 5
        var g = SplitMix64(seed: 8)
        // (where the maximum is, the target): tie in two blocks, tie inside one block, in the tail, first element
        let cases: [([Int], Int32, Bool)] = [([12, 30], 12, true), ([12, 30], 30, false), ([17, 19], 17, true),
                                             ([35], 35, true), ([0, 36], 36, false), ([0], 0, true)]
        var logits: [Float] = []
        for (at, _, _) in cases {
            var row = (0..<V).map { _ in g.normal() }
            for j in at { row[j] = 9 }
            logits += row
        }
        let targets = cases.map(\.1)
        let r = CrossEntropy.forward(logits: logits, targets: targets, n: cases.count, vocab: V)
        #expect(r.correct == cases.filter(\.2).count)
        for (i, c) in cases.enumerated() {
            let one = CrossEntropy.forward(logits: Array(logits[(i * V)..<((i + 1) * V)]), targets: [c.1], n: 1, vocab: V)
            #expect((one.correct == 1) == c.2, "case \(i): maximum at \(c.0), target \(c.1)")
        }
    }

    @Test("the backward with the forward's row statistics gives the bits it gives without them, unlabelled rows included")
    func backwardFromForwardStats() {
        let V = 45, n = 9
        var g = SplitMix64(seed: 9)
        let logits = (0..<(n * V)).map { _ in 3 * g.normal() }
        let forwardTargets: [Int32] = (0..<n).map { $0 == 4 ? -100 : Int32(($0 * 7) % V) }
        let stats = FloatBuffer(2 * n)
        _ = CrossEntropy.forward(logits: logits, targets: forwardTargets, n: n, vocab: V, stats: stats.ptr)
        // row 4 unlabelled in the forward, labelled in the backward: its statistics are there too
        for targets in [forwardTargets, (0..<n).map { Int32(($0 * 5) % V) }] {
            let plain = FloatBuffer(n * V), fromStats = FloatBuffer(n * V)
            CrossEntropy.backward(dlogits: plain.ptr, logits: logits, targets: targets, n: n, vocab: V, scale: 0.3)
            CrossEntropy.backward(dlogits: fromStats.ptr, logits: logits, targets: targets, n: n, vocab: V, scale: 0.3,
                                  stats: UnsafePointer(stats.ptr))
            #expect(plain.array == fromStats.array)
        }
    }
}
