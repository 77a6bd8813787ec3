import Foundation

/// The job's communicators: the world, this node (ranks sharing memory), and
/// the cross-node group of ranks with the same local index.
public final class Cluster {
    public let world: Communicator
    public let node: Communicator
    public let cross: Communicator
    public let nodes: Int
    /// Every node runs the same number of ranks (hierarchical exchange needs it).
    public let uniform: Bool

    public convenience init() { self.init(world: Communicator.world) }

    /// The cluster whose world is `world` (the job's, or a group of it). Collective over `world`.
    init(world: Communicator) {
        self.world = world
        node = world.splitShared()
        cross = world.split(color: node.rank, key: world.rank)
        nodes = Int(world.allreduce([node.rank == 0 ? 1 : 0])[0])
        uniform = world.allreduceMax(Double(node.size)) == -world.allreduceMax(-Double(node.size))
    }

    /// The ranks of this cluster with the same `group` number, as a cluster of their own: its
    /// world is the group, its node the group's ranks on this node (an adapter set trains each
    /// adapter on a group). Collective over the world: every rank calls it, with its group.
    public func group(_ group: Int) -> Cluster {
        Cluster(world: world.split(color: group, key: world.rank, name: "adapter group"))
    }

    public var rank: Int { world.rank }
    public var size: Int { world.size }
    public var isRoot: Bool { world.rank == 0 }

    /// Part `index` of `count` elements split into `parts` contiguous, nearly equal ranges.
    public static func shard(_ count: Int, parts: Int, index: Int) -> Range<Int> {
        let base = count / parts, extra = count % parts
        let lo = index * base + min(index, extra)
        return lo..<(lo + base + (index < extra ? 1 : 0))
    }

    /// The range of `count` elements this rank owns on its node.
    public func owned(_ count: Int) -> Range<Int> { Self.shard(count, parts: node.size, index: node.rank) }

    /// OpenBLAS threads per rank: the cores this rank may run on, shared among
    /// the node's ranks, so 8 ranks on 2 cores do not start 16 threads.
    public func defaultBLASThreads() -> Int {
        let online = max(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 1)
        let allowed = allowedCPUs() ?? online
        return max(1, min(allowed, online / node.size))
    }

    /// BLAS threads per rank (and element-wise workers): `requested` (--threads), else
    /// LORA_DIST_THREADS, else SLURM_CPUS_PER_TASK (the CPUs Slurm gives each task, set in
    /// the tasks of a job submitted with --cpus-per-task, whether or not Slurm binds them),
    /// else `defaultBLASThreads()`.
    public func threads(requested: Int?) throws -> Int {
        let env = ProcessInfo.processInfo.environment
        let slurm = env["SLURM_CPUS_PER_TASK"].flatMap { Int($0) }.flatMap { $0 >= 1 ? $0 : nil }
        let n = requested ?? env["LORA_DIST_THREADS"].flatMap { Int($0) } ?? slurm ?? defaultBLASThreads()
        guard n >= 1 else { throw LoraDistError("--threads must be at least 1, got \(n)") }
        return n
    }

    // MARK: what the loop, the evaluation and the benchmarks need of MPI (they call these, never a communicator)

    /// Element-wise sum over every rank of a few scalars (loss sums, counts, flags), on every rank.
    public func sum(_ values: [Double]) -> [Double] { world.allreduce(values) }

    /// Element-wise maximum over every rank, on every rank.
    public func maximum(_ values: [Double]) -> [Double] { world.allreduceMax(values) }
    public func maximum(_ value: Double) -> Double { world.allreduceMax(value) }

    /// Every rank's bytes at rank 0, in rank order; nil on the other ranks.
    public func gatherAtRoot(_ bytes: [UInt8]) -> [[UInt8]]? { world.gather(bytes) }

    /// Waits for every rank.
    public func barrier() { world.barrier() }

    /// This node's ranks, for work they split among themselves (building a token file).
    public var nodeGroup: NodeGroup { NodeRanks(node: node) }

    /// Whether this rank writes the shards it owns into a checkpoint: the ranks of one node
    /// own every range between them (`owned(_:)`); the other nodes' ranks hold copies.
    public var writesCheckpoints: Bool { cross.rank == 0 }

    /// The memory of the fullest node: Σ PSS over its ranks (NodeMemory), on every rank.
    public func largestNodeMemory() -> Double { maximum(NodeMemory.nodeBytes(self)) }

    /// Ends every rank of the job with one message: for failures one rank sees and the
    /// others cannot be asked to agree on (a write on rank 0 mid-run).
    public func abort(_ message: String) -> Never { MPIRuntime.abort(message) }

    /// Runs `body` on every rank and agrees on failure: when any rank throws,
    /// the lowest failing rank prints its message, and every rank throws
    /// `ClusterFailure` (already reported), so all exit non-zero together.
    public func agree<T>(_ body: () throws -> T) throws -> T {
        var result: T?
        var failure: Error?
        do { result = try body() } catch { failure = error }
        let lowest = world.allreduceMin(failure == nil ? Int.max : world.rank)
        if lowest == Int.max { return result! }
        // A ClusterFailure comes from an inner agree that has already reported it.
        if lowest == world.rank, let failure, !(failure is ClusterFailure) {
            let prefix = world.size > 1 ? "[rank \(world.rank)] " : ""
            FileHandle.standardError.write(Data("lora-dist: error: \(prefix)\(failure)\n".utf8))
        }
        throw ClusterFailure()
    }
}

/// A node's ranks as a `NodeGroup`.
struct NodeRanks: NodeGroup {
    let node: Communicator
    var rank: Int { node.rank }
    var size: Int { node.size }
    func sum(_ values: [Double]) -> [Double] { node.allreduce(values) }
    func allgather(_ s: String) -> [String] { node.allgather(string: s, maxBytes: 1024) }
}

/// A failure already reported by `Cluster.agree`: exit non-zero without printing again.
public struct ClusterFailure: Error {}

/// CPUs this process may run on (mpirun binds ranks to cores when there are few),
/// from the Cpus_allowed mask in /proc/self/status.
private func allowedCPUs() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) else { return nil }
    let hex = line.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
    let n = hex.reduce(0) { $0 + (Int(String($1), radix: 16)?.nonzeroBitCount ?? 0) }
    return n > 0 ? n : nil
}
