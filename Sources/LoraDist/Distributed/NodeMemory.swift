import Foundation

/// Memory a node spends on the job: the proportional set size (PSS) of every
/// rank on the node, summed. PSS charges each shared page (the shared weight
/// window) to its sharers in equal parts, so the sum counts it once.
public enum NodeMemory {
    /// This process's PSS in bytes (Linux /proc/self/smaps_rollup), or RSS when PSS is unavailable.
    public static func processBytes() -> Double {
        for (file, key) in [("/proc/self/smaps_rollup", "Pss:"), ("/proc/self/status", "VmRSS:")] {
            if let text = try? String(contentsOfFile: file, encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }),
               let kb = Double(line.split(separator: " ").dropFirst().first ?? "") {
                return kb * 1024
            }
        }
        return 0
    }

    /// Σ PSS over the node's ranks; the same value on each of them. Collective on the node.
    public static func nodeBytes(_ cluster: Cluster) -> Double {
        cluster.node.allreduce([processBytes()])[0]
    }
}
