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

extension NodeMemory {
    /// Memory a job may still take on this node: MemAvailable (/proc/meminfo: free memory
    /// plus what the kernel can reclaim), or less when this process's cgroup (a Slurm job's
    /// --mem, a container's limit) leaves less below its memory.max. nil where neither is
    /// known (not Linux).
    public static func availableBytes() -> Double? {
        var available: Double?
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kb = Double(line.split(separator: " ").dropFirst().first ?? "") {
            available = kb * 1024
        }
        if let room = cgroupRoom() { available = min(available ?? room, room) }
        return available
    }

    /// The limit minus the usage of this process's memory cgroup (v2 memory.max, v1
    /// memory.limit_in_bytes), when it has a limit.
    static func cgroupRoom() -> Double? {
        guard let cgroups = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        func read(_ path: String) -> Double? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        for line in cgroups.split(separator: "\n") {
            let f = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard f.count == 3 else { continue }
            let (limit, used): (Double?, Double?)
            if f[0] == "0" && f[1].isEmpty {
                let dir = "/sys/fs/cgroup" + f[2]
                (limit, used) = (read(dir + "/memory.max"), read(dir + "/memory.current"))  // "max": no limit
            } else if f[1].split(separator: ",").contains("memory") {
                let dir = "/sys/fs/cgroup/memory" + f[2]
                (limit, used) = (read(dir + "/memory.limit_in_bytes"), read(dir + "/memory.usage_in_bytes"))
            } else { continue }
            // v1 says "no limit" with a number near 2^63
            if let limit, let used, limit < 1e18 { return max(limit - used, 0) }
        }
        return nil
    }
}
