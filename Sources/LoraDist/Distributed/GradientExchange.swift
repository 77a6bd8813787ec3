import Foundation

public enum ExchangeStrategy: String, Codable, CaseIterable {
    /// One world allreduce of the gradient: the DDP / Horovod baseline.
    case flat
    /// Reduce-scatter inside the node, allreduce of each shard across nodes.
    case hierarchical
}

/// Sums the trainable gradient over every rank, in buckets, starting each
/// bucket's collective as soon as the backward has completed it.
///
/// The same code serves LoRA and full fine-tuning: it moves the trainable arena,
/// whatever that holds. Afterwards `shardGrads` is the summed gradient of the
/// range this rank owns on its node (`shard`), the range its AdamW updates.
///
/// Bytes are counted with the standard bandwidth-optimal model of each
/// collective (what a ring or recursive-halving implementation sends per rank):
/// allreduce 2(p−1)/p·n, reduce-scatter (p−1)/p·n.
public final class GradientExchange {
    public let strategy: ExchangeStrategy
    let cluster: Cluster
    let grads: FPtr
    public let count: Int
    public let shard: Range<Int>
    let buckets: [Range<Int>]
    /// hierarchical: the reduced gradient of the owned shard
    let reduced: FloatBuffer?
    // per-step state
    var requests: [Request]
    var crossRequests: [Request]
    var launched = 0
    var crossLaunched = 0
    // accounting, per step
    public private(set) var waitSeconds = 0.0

    public init(strategy: ExchangeStrategy, cluster: Cluster, grads: FPtr, count: Int, bucketElements: Int) throws {
        if strategy == .hierarchical && !cluster.uniform {
            throw LoraDistError("--exchange hierarchical needs the same number of ranks on every node; use --exchange flat")
        }
        self.strategy = strategy
        self.cluster = cluster
        self.grads = grads
        self.count = count
        shard = cluster.owned(count)
        let step = max(bucketElements, 1)
        buckets = stride(from: 0, to: count, by: step).map { $0..<min($0 + step, count) }
        reduced = strategy == .hierarchical ? FloatBuffer(shard.count) : nil
        requests = Array(repeating: Request(handle: nil), count: buckets.count)
        crossRequests = requests
    }

    /// The summed gradient of this rank's shard (valid after `finish`).
    public var shardGrads: UnsafePointer<Float> { UnsafePointer(reduced?.ptr ?? grads + shard.lowerBound) }

    /// The L2 norm of the whole summed gradient (after `finish`): each rank squares the shard
    /// it holds, and the node's shards make the whole. Collective over the node.
    public func globalNorm() -> Double {
        let squares = GradClip.sumSquares(shardGrads, count: shard.count)
        return cluster.node.allreduce([squares])[0].squareRoot()
    }

    public func begin() {
        launched = 0
        crossLaunched = 0
        waitSeconds = 0
    }

    /// Gradients [0, upTo) are final: start every bucket that lies inside.
    public func ready(upTo: Int) {
        while launched < buckets.count && buckets[launched].upperBound <= upTo {
            launch(launched)
            launched += 1
        }
        // Let the library progress what is in flight (non-blocking collectives
        // advance only inside MPI calls), and chain finished reduce-scatters.
        progress(block: false)
    }

    /// Starts what is left and waits for everything.
    public func finish() {
        ready(upTo: count)
        let t0 = DispatchTime.now().uptimeNanoseconds
        progress(block: true)
        waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    private func launch(_ b: Int) {
        let bucket = buckets[b]
        switch strategy {
        case .flat:
            requests[b] = cluster.world.iallreduce(grads + bucket.lowerBound, count: bucket.count)
        case .hierarchical:
            let node = cluster.node
            let counts = (0..<node.size).map { r -> Int32 in
                let s = Cluster.shard(count, parts: node.size, index: r)
                return Int32(max(0, min(s.upperBound, bucket.upperBound) - max(s.lowerBound, bucket.lowerBound)))
            }
            requests[b] = node.ireduceScatter(send: grads + bucket.lowerBound, recv: reducedSlot(bucket), counts: counts)
        }
    }

    /// Where this rank's part of a bucket lands in the reduced shard buffer.
    private func reducedSlot(_ bucket: Range<Int>) -> FPtr {
        reduced!.ptr + max(0, min(max(bucket.lowerBound, shard.lowerBound), shard.upperBound) - shard.lowerBound)
    }

    private func mine(_ bucket: Range<Int>) -> Int {
        max(0, min(shard.upperBound, bucket.upperBound) - max(shard.lowerBound, bucket.lowerBound))
    }

    private func progress(block: Bool) {
        for b in 0..<launched {
            if block { requests[b].wait() } else if !requests[b].test() { break }
        }
        guard strategy == .hierarchical, cluster.nodes > 1 else { return }
        // Cross-node allreduce of each bucket's owned part, in bucket order on every rank.
        while crossLaunched < launched && requests[crossLaunched].isDone {
            let bucket = buckets[crossLaunched]
            crossRequests[crossLaunched] = cluster.cross.iallreduce(reducedSlot(bucket), count: mine(bucket))
            crossLaunched += 1
        }
        if block { for b in 0..<crossLaunched { crossRequests[b].wait() } }
    }

    // MARK: accounting

    /// Bytes one rank sends per step to exchange `elements` floats, inside the node and across nodes.
    public static func bytesPerStep(strategy: ExchangeStrategy, elements: Int, worldSize: Int, localSize: Int,
                                    nodes: Int) -> (intra: Double, inter: Double) {
        let n = 4 * Double(elements)
        switch strategy {
        case .flat:
            // A ring over the world, ranks of a node adjacent: of its W links, N cross
            // between nodes, so on average a rank sends N/W of its bytes over the network.
            let bytes = worldSize > 1 ? 2 * Double(worldSize - 1) / Double(worldSize) * n : 0
            let inter = nodes > 1 ? bytes * Double(nodes) / Double(worldSize) : 0
            return (bytes - inter, inter)
        case .hierarchical:
            let L = Double(localSize), N = Double(nodes)
            let intra = localSize > 1 ? (L - 1) / L * n : 0
            let inter = nodes > 1 ? 2 * (N - 1) / N * (n / L) : 0
            return (intra, inter)
        }
    }

    public var bytesPerStep: (intra: Double, inter: Double) {
        Self.bytesPerStep(strategy: strategy, elements: count, worldSize: cluster.size, localSize: cluster.node.size,
                          nodes: cluster.nodes)
    }
}
