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
}
