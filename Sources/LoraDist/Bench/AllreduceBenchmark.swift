import Foundation

/// `lora-dist bench allreduce`: in-place float-sum allreduce on the world, node
/// and cross-node communicators. Bus bandwidth = bytes · 2(p−1)/p / time, the
/// figure that does not depend on p for a bandwidth-optimal algorithm (NCCL's
/// convention), so it compares across communicator sizes.
public enum AllreduceBenchmark {
    public struct Row {
        public let communicator: String, ranks: Int, bytes: Int, seconds: Double
        public var busGBs: Double { Double(bytes) * 2 * Double(ranks - 1) / Double(ranks) / seconds / 1e9 }
    }

    public static func run(cluster: Cluster, sizes: [Int], minSeconds: Double = 0.2) -> [Row] {
        var rows: [Row] = []
        let comms = [("world", cluster.world), ("node", cluster.node), ("cross-node", cluster.cross)]
        let buf = FloatBuffer(max(sizes.max() ?? 0, 4) / 4)
        for (name, comm) in comms where comm.size > 1 {
            for bytes in sizes {
                let n = bytes / 4
                comm.allreduce(buf.ptr, count: n)  // warm-up
                // Rank 0 decides the repetition count so every rank runs the same number.
                var iters = 1
                while true {
                    comm.barrier()
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    for _ in 0..<iters { comm.allreduce(buf.ptr, count: n) }
                    let dt = comm.allreduceMax(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                    if dt >= minSeconds || iters >= 1 << 16 {
                        rows.append(Row(communicator: name, ranks: comm.size, bytes: bytes, seconds: dt / Double(iters)))
                        break
                    }
                    iters *= dt > 0 ? min(max(Int(minSeconds / dt * 1.2) + 1, 2), 64) : 64
                }
            }
        }
        return rows
    }

    /// The same for the 16-bit exchange of `--grad-compression bf16|fp16` (HalfAllreduce:
    /// personalised exchange + fp32 sums + allgather) on the world and cross-node communicators;
    /// `bytes` is the fp32 payload it stands for, so its row compares with the fp32 row of that size.
    public static func runHalf(cluster: Cluster, format: HalfFormat, sizes: [Int], minSeconds: Double = 0.2) -> [Row] {
        var rows: [Row] = []
        let name = format == .bf16 ? "bf16" : "fp16"
        for (label, comm) in [("world", cluster.world), ("cross-node", cluster.cross)] where comm.size > 1 {
            let gather = comm.duplicate(name: label + " (allgather)")
            for bytes in sizes {
                let buf = FloatBuffer(max(bytes / 4, 1))
                let op = HalfAllreduce(comm: comm, gatherComm: gather, format: format, data: buf.ptr, count: bytes / 4,
                                       nodeOf: Array(0..<comm.size))
                func once() { op.start(); op.advance(block: true) }
                once()
                var iters = 1
                while true {
                    comm.barrier()
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    for _ in 0..<iters { once() }
                    let dt = comm.allreduceMax(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                    if dt >= minSeconds || iters >= 1 << 16 {
                        rows.append(Row(communicator: "\(label) \(name)", ranks: comm.size, bytes: bytes, seconds: dt / Double(iters)))
                        break
                    }
                    iters *= dt > 0 ? min(max(Int(minSeconds / dt * 1.2) + 1, 2), 64) : 64
                }
            }
        }
        return rows
    }

    /// For the tests: the 16-bit exchange of `count` values over the world, each rank's input
    /// drawn from (seed, rank) over a wide range of magnitudes; rank r writes DIR/rank-r.f32
    /// (little-endian fp32): its input, then the result. Collective.
    public static func dumpHalf(cluster: Cluster, format: HalfFormat, count: Int, seed: UInt64, dir: String) throws {
        let buf = FloatBuffer(count)
        var g = SplitMix64(seed: SplitMix64.mix(seed, UInt64(cluster.rank)))
        for i in 0..<count { buf[i] = g.normal() * Float(pow(2.0, Double(g.below(24)) - 12)) }
        let input = buf.array
        let gather = cluster.world.duplicate(name: "world (allgather)")
        let op = HalfAllreduce(comm: cluster.world, gatherComm: gather, format: format, data: buf.ptr, count: count,
                               nodeOf: Array(0..<cluster.size))
        op.start()
        op.advance(block: true)
        var data = Data()
        for v in input + buf.array { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        try cluster.agree { try Files.writeAtomically(data, to: dir + "/rank-\(cluster.rank).f32") }
    }

    public static func table(_ rows: [Row], cluster: Cluster) -> String {
        var out = "\(cluster.size) rank(s), \(cluster.nodes) node(s), \(cluster.node.size) per node\n"
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
        out += "communicator  ranks       size     latency   bus GB/s\n"
        for r in rows {
            out += pad(r.communicator, 12) + lpad("\(r.ranks)", 7) + lpad(Units.bytes(Double(r.bytes)), 11)
                + lpad(String(format: "%.1f us", r.seconds * 1e6), 12) + lpad(String(format: "%.3f", r.busGBs), 11) + "\n"
        }
        if rows.isEmpty { out += "(one rank: nothing to measure; launch with mpirun -n N)\n" }
        if cluster.nodes == 1 { out += "one node: the cross-node communicator has a single rank and is not measured\n" }
        return out
    }
}
