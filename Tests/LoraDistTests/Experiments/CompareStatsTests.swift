import Foundation
import Testing
@testable import LoraDist

/// compare --seeds: the 95 % interval and the verdicts drawn from it.
@Suite struct CompareStatsTests {
    @Test("interval of 1, 2, 3, 4, 5: mean 3, s = √2.5, t(0.975, 4) = 2.776, so 3 ± 1.963")
    func handComputed() throws {
        let i = try #require(CompareStats.interval([1, 2, 3, 4, 5]))
        let half = 2.776 * (2.5 / 5).squareRoot()
        #expect(i.n == 5 && i.mean == 3)
        #expect(abs(i.low! - (3 - half)) < 1e-12 && abs(i.high! - (3 + half)) < 1e-12)
        #expect(abs(half - 1.96292) < 1e-4)
        // Two values 10 and 12: mean 11, s = √2, t(0.975, 1) = 12.706: 11 ± 12.706.
        let two = try #require(CompareStats.interval([10, 12]))
        #expect(abs(two.halfWidth! - 12.706) < 1e-9)
    }

    @Test("compare runs 3 seeds unless told otherwise: a verdict needs an interval")
    func threeSeedsByDefault() {
        #expect(CompareOptions().seeds == 3)
    }

    @Test("one value has a mean and no interval; no values or a non-finite one, nothing")
    func edges() {
        let one = CompareStats.interval([4.5])
        #expect(one?.mean == 4.5 && one?.low == nil && one?.high == nil && one?.n == 1)
        #expect(CompareStats.interval([]) == nil)
        #expect(CompareStats.interval([1, .nan, 2]) == nil)
        #expect(CompareStats.interval([1, .infinity]) == nil)
        // Equal values: an interval of width zero.
        let same = CompareStats.interval([2, 2, 2])
        #expect(same?.low == 2 && same?.high == 2)
    }

    @Test("t(0.975) from the table up to 30 degrees of freedom, then the expansion: close to the table's 40, 60, 120 and to 1.96")
    func quantiles() {
        #expect(CompareStats.tQuantile975(df: 1) == 12.706)
        #expect(CompareStats.tQuantile975(df: 30) == 2.042)
        for (df, exact) in [(40, 2.021), (60, 2.000), (120, 1.980), (100_000, 1.960)] {
            #expect(abs(CompareStats.tQuantile975(df: df) - exact) < 1.5e-3, "df \(df): \(CompareStats.tQuantile975(df: df))")
        }
        // Decreasing in the degrees of freedom, across the switch from table to expansion too.
        for df in 1..<80 { #expect(CompareStats.tQuantile975(df: df) > CompareStats.tQuantile975(df: df + 1), "df \(df)") }
    }

    @Test("verdicts: an interval of LoRA − full below zero, above zero, or across it; lower or higher better")
    func verdicts() throws {
        let below = try #require(CompareStats.interval([-3, -2, -2.5]))    // LoRA lower on every seed
        let above = try #require(CompareStats.interval([0.5, 0.7, 0.6]))
        let across = try #require(CompareStats.interval([-1, 1, 0.2]))
        #expect(CompareStats.verdict(loraMinusFull: below, lowerIsBetter: true) == .loraBetter)      // perplexity
        #expect(CompareStats.verdict(loraMinusFull: below, lowerIsBetter: false) == .fullBetter)     // accuracy
        #expect(CompareStats.verdict(loraMinusFull: above, lowerIsBetter: true) == .fullBetter)
        #expect(CompareStats.verdict(loraMinusFull: above, lowerIsBetter: false) == .loraBetter)
        #expect(CompareStats.verdict(loraMinusFull: across, lowerIsBetter: true) == .noDifference)
        #expect(CompareStats.verdict(loraMinusFull: across, lowerIsBetter: false) == .noDifference)
        // A mean far from zero with a wide interval is still no difference: the verdict follows the interval.
        let wide = try #require(CompareStats.interval([-10, 1]))
        #expect(wide.mean < -4 && CompareStats.verdict(loraMinusFull: wide, lowerIsBetter: true) == .noDifference)
        let single = try #require(CompareStats.interval([-3]))
        #expect(CompareStats.verdict(loraMinusFull: single, lowerIsBetter: true) == nil)
    }
}
