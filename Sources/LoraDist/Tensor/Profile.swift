import Foundation

/// Where a training step's time goes, for `lora-dist bench step`. Off unless a
/// benchmark turns it on; then every kernel times itself. Sections nest: time spent
/// in an inner section (an sgemm inside attention) counts for the inner one only,
/// so the sections add up to the time measured. Only the main thread records (model
/// replicas run the same kernels on other threads at the same time): the breakdown is
/// the main thread's timeline.
public enum Profile {
    public enum Section: Int, CaseIterable {
        /// sgemm: the matrix products, OpenBLAS's and LowRank's (the shape table says which ran)
        case sgemm, attention, elementwise, dequantize, tileWait, optimizer, allocation
    }

    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) static var totals = [Double](repeating: 0, count: Section.allCases.count)
    nonisolated(unsafe) static var inner = [Double](repeating: 0, count: 64)  // time of nested sections, by depth
    nonisolated(unsafe) static var depth = 0
    /// Bytes the kernels' buffers allocated while profiling (a step should allocate none).
    nonisolated(unsafe) public static var allocatedBytes = 0

    /// Monotonic seconds.
    @inline(__always)
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    @inline(__always)
    public static func measure<T>(_ section: Section, _ body: () throws -> T) rethrows -> T {
        guard enabled, Thread.isMainThread else { return try body() }
        return try timed(section, body).result
    }

    /// body counted to `section` (its nested sections' time excepted); also returns its whole
    /// time. Only with profiling on, on the main thread.
    @inline(__always)
    private static func timed<T>(_ section: Section, _ body: () throws -> T) rethrows -> (result: T, elapsed: Double) {
        let t0 = now()
        depth += 1
        inner[depth] = 0
        let result = try body()
        let elapsed = now() - t0
        totals[section.rawValue] += elapsed - inner[depth]
        depth -= 1
        inner[depth] += elapsed
        return (result, elapsed)
    }

    /// One product's shape: op(A) m × k times op(B) k × n, "N" or "T" per operand, and which
    /// kernel ran it.
    public struct GemmShape: Hashable, Comparable {
        public let transA: Bool, transB: Bool, m: Int, n: Int, k: Int
        public var kernel = Kernel.sgemm

        public enum Kernel: Int, Hashable {
            /// OpenBLAS
            case sgemm
            /// LowRank.gemm (Tensor/LowRank.swift)
            case lowRank
            /// LowRank.midAndGradient: s·dy·B (this shape) and dB += s·dyᵀ·xa in one pass, both
            /// products' FLOPs
            case lowRankMidAndGradient

            public var name: String { ["sgemm", "lowrank", "lowrank-mid+dB"][rawValue] }
        }

        public var flops: Int { (kernel == .lowRankMidAndGradient ? 4 : 2) &* m &* n &* k }
        public var description: String {
            "\(m) × \(n) × \(k) \(transA ? "T" : "N")\(transB ? "T" : "N")" + (kernel == .sgemm ? "" : " " + kernel.name)
        }
        public static func < (a: GemmShape, b: GemmShape) -> Bool {
            (a.m, a.n, a.k, a.transA ? 1 : 0, a.transB ? 1 : 0, a.kernel.rawValue)
                < (b.m, b.n, b.k, b.transA ? 1 : 0, b.transB ? 1 : 0, b.kernel.rawValue)
        }
    }

    /// The main thread's sgemm calls (and LowRank's products, timed with them) by shape: how
    /// many, and their seconds. Which shapes run far below the yardstick is what decides where a
    /// faster kernel would pay.
    nonisolated(unsafe) public private(set) static var gemms: [GemmShape: (calls: Int, seconds: Double)] = [:]

    /// An sgemm call of `shape`, or a LowRank product: timed as the sgemm section (matrix
    /// products), and by shape.
    @inline(__always)
    static func measureSgemm(_ shape: @autoclosure () -> GemmShape, _ body: () -> Void) {
        guard enabled, Thread.isMainThread else { return body() }
        let elapsed = timed(.sgemm, body).elapsed
        let key = shape(), old = gemms[key] ?? (0, 0)
        gemms[key] = (old.calls + 1, old.seconds + elapsed)
    }

    public static func reset() {
        for i in totals.indices { totals[i] = 0 }
        gemms.removeAll(keepingCapacity: true)
        allocatedBytes = 0
    }

    /// Seconds per section since the last reset.
    public static func seconds(_ s: Section) -> Double { totals[s.rawValue] }
}
