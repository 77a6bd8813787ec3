import Foundation

/// The closing summary a person reads at a glance.
public enum Report {
    public static func bytes(_ b: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = b, i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(Int(v)) B" : String(format: "%.1f %@", v, units[i])
    }

    public static func closing(_ s: RunSummary) -> String {
        let d0 = s.initialDevLoss, d1 = s.devLoss
        let trainable = s.trainableParams, base = s.baseParams
        let perStep = Double(s.exchangeBytesPerStep), full = Double(s.fullFTExchangeBytesPerStep)
        var lines = [
            String(format: "%@ done: dev loss %.3f → %.3f (perplexity %.1f → %.1f)", s.mode,
                   d0, d1, Foundation.exp(d0), Foundation.exp(d1)),
            String(format: "  speed      %.0f tokens/s on %d rank(s), %.0f%% of step time waiting on communication",
                   s.tokensPerSecond, s.worldSize, 100 * s.commWaitShare),
            String(format: "  trained    %@ of %@ parameters (%.2f%%)", trainable.formatted(), base.formatted(),
                   100 * Double(trainable) / Double(max(base, 1))),
        ]
        if full > 0 {
            lines.append(String(format: "  exchanged  %@ per step and rank, against %@ for full fine-tuning (%.1f%%)",
                                bytes(perStep), bytes(full), 100 * perStep / full))
        } else {
            lines.append("  exchanged  nothing (one rank)")
        }
        lines.append("  memory     \(bytes(Double(s.nodeMemoryBytes))) per node (sum of the ranks' PSS)")
        return lines.joined(separator: "\n")
    }
}
