import Foundation

/// The closing summary a person reads at a glance.
public enum Report {
    public static func closing(_ s: RunSummary) -> String {
        let d0 = s.initialDevLoss, d1 = s.devLoss
        let trainable = s.trainableParams, base = s.baseParams
        let perStep = Double(s.exchangeBytesPerStep), full = Double(s.fullFTExchangeBytesPerStep)
        var lines = [
            String(format: "%@ done: dev loss %.3f → %.3f (perplexity %.1f → %.1f)", s.mode,
                   d0, d1, Foundation.exp(d0), Foundation.exp(d1)),
            String(format: "  speed      %.0f tokens/s on %ld rank(s), %.0f%% of step time waiting on communication",
                   s.tokensPerSecond, s.worldSize, 100 * s.commWaitShare),
            String(format: "  trained    %@ of %@ parameters (%.2f%%)", trainable.formatted(), base.formatted(),
                   100 * Double(trainable) / Double(max(base, 1))),
        ]
        if full > 0 {
            lines.append(String(format: "  exchanged  %@ per step and rank, against %@ for full fine-tuning (%.1f%%)",
                                Units.bytes(perStep), Units.bytes(full), 100 * perStep / full))
        } else {
            lines.append("  exchanged  nothing (one rank)")
        }
        lines.append("  memory     \(Units.bytes(Double(s.nodeMemoryBytes))) per node (sum of the ranks' PSS)")
        return lines.joined(separator: "\n")
    }
}
