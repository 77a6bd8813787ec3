import Foundation

/// Means over seeds with 95 % intervals (Student's t), and the verdicts `compare --seeds N`
/// draws from them.
public enum CompareStats {
    /// A mean over n values and its two-sided 95 % confidence interval, mean ± t(0.975, n−1)·s/√n.
    /// With one value there is no interval (low and high null).
    public struct Interval: Codable, Equatable {
        public var mean: Double
        @Nullable public var low: Double?
        @Nullable public var high: Double?
        public var n: Int

        /// Half the interval's width; nil with one value.
        public var halfWidth: Double? { high.map { $0 - mean } }
    }

    /// t(0.975, df) for df = 1...30 (Student's table, three decimals).
    static let t975: [Double] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]

    /// The 0.975 quantile of Student's t with `df` degrees of freedom: the table up to 30, then
    /// the Cornish–Fisher expansion around the normal quantile (within 0.001 of the exact value there).
    public static func tQuantile975(df: Int) -> Double {
        precondition(df >= 1, "t quantile needs at least one degree of freedom")
        if df <= t975.count { return t975[df - 1] }
        let z = 1.959964, v = Double(df)
        let z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z
        return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v)
            + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v * v * v)
    }

    /// The mean of `values` and its 95 % interval; nil when a value is not finite or there is none.
    public static func interval(_ values: [Double]) -> Interval? {
        guard !values.isEmpty, values.allSatisfy(\.isFinite) else { return nil }
        let n = values.count, mean = values.reduce(0, +) / Double(n)
        guard n > 1 else { return Interval(mean: mean, low: nil, high: nil, n: 1) }
        let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n - 1)
        let half = tQuantile975(df: n - 1) * (variance / Double(n)).squareRoot()
        return Interval(mean: mean, low: mean - half, high: mean + half, n: n)
    }

    public enum Verdict: String, Codable {
        case loraBetter = "LoRA better"
        case fullBetter = "full better"
        case noDifference = "no difference at this budget"
    }

    /// From the interval of the per-seed differences LoRA − full (the same seed gives both the same
    /// data order): LoRA better when the whole interval lies on LoRA's good side of zero, full
    /// better when it lies on the other, otherwise no difference. nil without an interval (one seed).
    public static func verdict(loraMinusFull d: Interval, lowerIsBetter: Bool) -> Verdict? {
        guard let low = d.low, let high = d.high else { return nil }
        if high < 0 { return lowerIsBetter ? .loraBetter : .fullBetter }
        if low > 0 { return lowerIsBetter ? .fullBetter : .loraBetter }
        return .noDifference
    }
}
