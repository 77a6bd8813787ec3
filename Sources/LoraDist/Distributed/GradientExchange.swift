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
/// With `--grad-compression` what travels changes (GradientCompression.swift, PowerSGD.swift):
/// bf16 / fp16 replace each fp32 allreduce that the strategy sends over the wire (flat: the
/// world's; hierarchical: the cross-node one, the node's reduce-scatter staying fp32 in shared
/// memory) by a 16-bit `HalfAllreduce`; PowerSGD, from its start step on, replaces the whole
/// exchange by its factors' allreduces (flat, or hierarchical: reduce-scatter in the node,
/// allreduce across nodes, allgather in the node) once the backward is done.
///
/// Bytes are counted as each collective is started (`bytesSent`): fp32 collectives with the
/// standard bandwidth-optimal model of what one rank sends (a ring or recursive halving):
/// allreduce 2(p−1)/p·n, reduce-scatter and allgather (p−1)/p·n; the 16-bit exchanges exactly
/// (their blocks to each other rank).
public final class GradientExchange {
    public let strategy: ExchangeStrategy
    public let compression: CompressionOptions
    let cluster: Cluster
    let grads: FPtr
    public let count: Int
    public let shard: Range<Int>
    let buckets: [Range<Int>]
    /// hierarchical with more than one rank on the node: the reduced gradient of the owned shard
    /// (alone on its node a rank's shard is its whole gradient, summed across nodes in place)
    let reduced: FloatBuffer?
    // per-step state
    var requests: [Request]
    var crossRequests: [Request]
    var launched = 0
    var crossLaunched = 0
    /// bf16 / fp16: each bucket's 16-bit sum (flat: the bucket over the world; hierarchical:
    /// this rank's part of it over the cross-node ranks)
    var halves: [HalfAllreduce] = []
    /// powersgd: the compressor, and whether this step uses it (from its start step on)
    public let powerSGD: PowerSGD?
    var compressing = false
    // accounting, per step
    public private(set) var waitSeconds = 0.0
    /// Bytes this rank has sent this step, inside its node and to other nodes.
    public private(set) var bytesSent = (intra: 0.0, inter: 0.0)

    /// `shapes`: each trainable tensor's arena offset and shape (PowerSGD's matrices); `seed`:
    /// PowerSGD's first Q, the same on every rank.
    public init(strategy: ExchangeStrategy, cluster: Cluster, grads: FPtr, count: Int, bucketElements: Int,
                compression: CompressionOptions = CompressionOptions(), shapes: [(offset: Int, shape: [Int])] = [],
                seed: UInt64 = 0) throws {
        if strategy == .hierarchical && !cluster.uniform {
            throw LoraDistError("--exchange hierarchical needs the same number of ranks on every node; use --exchange flat")
        }
        self.strategy = strategy
        self.compression = compression
        self.cluster = cluster
        self.grads = grads
        self.count = count
        shard = cluster.owned(count)
        let step = max(bucketElements, 1)
        buckets = stride(from: 0, to: count, by: step).map { $0..<min($0 + step, count) }
        reduced = strategy == .hierarchical && cluster.node.size > 1 ? FloatBuffer(shard.count) : nil
        requests = Array(repeating: Request(handle: nil), count: buckets.count)
        crossRequests = requests
        powerSGD = compression.method == .powersgd
            ? PowerSGD(shapes: shapes, count: count, rank: compression.powerSGDRank, worldSize: cluster.size, seed: seed) : nil
        if let half = compression.method.half {
            switch strategy {
            case .flat:
                // Which node each world rank is on, for the bytes that leave the node.
                let leader = FloatBuffer(cluster.size)
                var mine = Float(cluster.rank - cluster.node.rank)
                cluster.world.allgather(&mine, count: 1, into: leader.ptr)
                let nodeOf = leader.array.map { Int($0) }
                let gather = cluster.world.duplicate(name: "world (allgather)")
                halves = buckets.map { HalfAllreduce(comm: cluster.world, gatherComm: gather, format: half, data: grads + $0.lowerBound,
                                                     count: $0.count, nodeOf: nodeOf) }
            case .hierarchical:
                let cross = cluster.cross, gather = cross.duplicate(name: "cross-node (allgather)")
                halves = buckets.map { HalfAllreduce(comm: cross, gatherComm: gather, format: half, data: reducedSlot($0), count: mine($0),
                                                     nodeOf: Array(0..<cross.size)) }
            }
        }
    }

    /// The summed gradient of this rank's shard (valid after `finish`).
    public var shardGrads: UnsafePointer<Float> {
        compressing ? UnsafePointer(grads + shard.lowerBound) : UnsafePointer(reduced?.ptr ?? grads + shard.lowerBound)
    }

    /// Σ g² of the shard this rank holds (after `finish`): globalNorm's local part, timed with
    /// the optimizer's work rather than as time waiting on MPI.
    public func shardSquares() -> Double {
        Profile.measure(.optimizer) { GradClip.sumSquares(shardGrads, count: shard.count) }
    }

    /// The L2 norm of the whole summed gradient from each rank's `shardSquares()`: the node's
    /// shards make the whole. Collective over the node.
    public func globalNorm(shardSquares: Double) -> Double {
        cluster.node.allreduce([shardSquares])[0].squareRoot()
    }

    /// Before step `step`'s backward.
    public func begin(step: Int = 1) {
        launched = 0
        crossLaunched = 0
        waitSeconds = 0
        bytesSent = (0, 0)
        compressing = powerSGD != nil && step >= compression.powerSGDStartStep
    }

    /// Gradients [0, upTo) are final: start every bucket that lies inside.
    public func ready(upTo: Int) {
        // PowerSGD works on whole tensors once the backward is done (finish).
        if compressing { return }
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
        if let powerSGD, compressing {
            // Its compute is counted as waiting too: none of it overlaps the backward.
            let t0 = DispatchTime.now().uptimeNanoseconds
            powerSGD.run(grads: grads) { buf, n in self.sum(buf, count: n) }
            waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            return
        }
        ready(upTo: count)
        let t0 = DispatchTime.now().uptimeNanoseconds
        progress(block: true)
        waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    /// Blocking fp32 sum over every rank of `n` floats at `buf`, on every rank: a world allreduce
    /// (flat), or reduce-scatter in the node, allreduce across nodes, allgather in the node.
    func sum(_ buf: FPtr, count n: Int) {
        guard n > 0 else { return }
        switch strategy {
        case .flat:
            var r = cluster.world.iallreduce(buf, count: n)
            countAllreduce(n, over: cluster.world.size, crossing: false)
            r.wait()
        case .hierarchical:
            let node = cluster.node, L = node.size
            let parts = (0..<L).map { Cluster.shard(n, parts: L, index: $0) }
            let mine = parts[node.rank]
            let part = FloatBuffer(mine.count)
            node.reduceScatter(send: buf, recv: part.ptr, counts: parts.map { Int32($0.count) })
            bytesSent.intra += L > 1 ? Double(L - 1) / Double(L) * 4 * Double(n) : 0
            var r = cluster.cross.iallreduce(part.ptr, count: mine.count)
            countAllreduce(mine.count, over: cluster.nodes, crossing: true)
            r.wait()
            (buf + mine.lowerBound).update(from: part.ptr, count: mine.count)
            node.allgatherv(inPlace: buf, counts: parts.map { Int32($0.count) }, offsets: parts.map { Int32($0.lowerBound) })
            bytesSent.intra += L > 1 ? Double(L - 1) / Double(L) * 4 * Double(n) : 0
        }
    }

    /// An fp32 ring allreduce of `n` floats over `p` ranks: the world's (a share N/W of whose
    /// links cross nodes), or the cross-node one.
    private func countAllreduce(_ n: Int, over p: Int, crossing: Bool) {
        guard p > 1 else { return }
        let bytes = 2 * Double(p - 1) / Double(p) * 4 * Double(n)
        if crossing { bytesSent.inter += bytes; return }
        let inter = cluster.nodes > 1 ? bytes * Double(cluster.nodes) / Double(cluster.size) : 0
        bytesSent.inter += inter
        bytesSent.intra += bytes - inter
    }

    private func countHalf(_ h: HalfAllreduce, crossing: Bool) {
        guard h.comm.size > 1 else { return }
        let off = crossing ? Double(h.bytesSent) : Double(h.bytesSentOffNode)
        bytesSent.inter += off
        bytesSent.intra += Double(h.bytesSent) - off
    }

    private func launch(_ b: Int) {
        let bucket = buckets[b]
        switch strategy {
        case .flat:
            if !halves.isEmpty {
                halves[b].start()
                countHalf(halves[b], crossing: false)
                return
            }
            requests[b] = cluster.world.iallreduce(grads + bucket.lowerBound, count: bucket.count)
            countAllreduce(bucket.count, over: cluster.size, crossing: false)
        case .hierarchical:
            let node = cluster.node
            guard node.size > 1 else { requests[b] = Request(handle: nil); return }  // nothing to reduce in the node
            let counts = (0..<node.size).map { r -> Int32 in
                let s = Cluster.shard(count, parts: node.size, index: r)
                return Int32(max(0, min(s.upperBound, bucket.upperBound) - max(s.lowerBound, bucket.lowerBound)))
            }
            requests[b] = node.ireduceScatter(send: grads + bucket.lowerBound, recv: reducedSlot(bucket), counts: counts)
            bytesSent.intra += node.size > 1 ? Double(node.size - 1) / Double(node.size) * 4 * Double(bucket.count) : 0
        }
    }

    /// Where this rank's part of a bucket lands in the reduced shard buffer (or its gradient's).
    private func reducedSlot(_ bucket: Range<Int>) -> FPtr {
        (reduced?.ptr ?? grads + shard.lowerBound) + max(0, min(max(bucket.lowerBound, shard.lowerBound), shard.upperBound) - shard.lowerBound)
    }

    private func mine(_ bucket: Range<Int>) -> Int {
        max(0, min(shard.upperBound, bucket.upperBound) - max(shard.lowerBound, bucket.lowerBound))
    }

    private func progress(block: Bool) {
        if strategy == .flat && !halves.isEmpty {
            // Each bucket's two phases, in bucket order on every rank.
            for b in 0..<launched {
                halves[b].advance(block: block)
                if !block && !halves[b].isDone { break }
            }
            return
        }
        for b in 0..<launched {
            if block { requests[b].wait() } else if !requests[b].test() { break }
        }
        guard strategy == .hierarchical, cluster.nodes > 1 else { return }
        // Cross-node allreduce of each bucket's owned part, in bucket order on every rank.
        while crossLaunched < launched && requests[crossLaunched].isDone {
            let bucket = buckets[crossLaunched]
            if !halves.isEmpty {
                halves[crossLaunched].start()
                countHalf(halves[crossLaunched], crossing: true)
            } else {
                crossRequests[crossLaunched] = cluster.cross.iallreduce(reducedSlot(bucket), count: mine(bucket))
                countAllreduce(mine(bucket), over: cluster.nodes, crossing: true)
            }
            crossLaunched += 1
        }
        if !halves.isEmpty {
            for b in 0..<crossLaunched {
                halves[b].advance(block: block)
                if !block && !halves[b].isDone { break }
            }
        } else if block {
            for b in 0..<crossLaunched { crossRequests[b].wait() }
        }
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
