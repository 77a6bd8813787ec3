import Foundation
import Synchronization

extension NF4Matmul {
    /// One dequantized copy of each NF4 tile for the model replicas of a rank (Train/ReplicaThreads).
    ///
    /// The replicas run the same layers in the same order on their own parts of the batch, so
    /// they meet the same NF4 tiles in the same order. Within a `pass` they go through them in
    /// lockstep: each replica (a lane) dequantizes its share of a tile's rows into a buffer all
    /// lanes read, waits for the others, and sends the whole tile to its own sgemm. Each lane
    /// dequantizes 1/k of every weight instead of all of it, and sgemm gets the same tiles with
    /// the same values as when each replica dequantized its own (the tile rows depend on the
    /// buffer size alone; dequantization is element by element), so results are identical, bit
    /// for bit.
    ///
    /// Two buffers alternate, so one wait per tile suffices: a lane writes tile t + 1 into the
    /// buffer of tile t − 1 only after every lane arrived at tile t's wait, that is after each
    /// finished its sgemm on tile t − 1. Memory: two tiles per rank (2 × 4 MiB), in place of one
    /// per replica. Outside a pass lane 0 (the rank's own model: evaluation, generation) uses
    /// the first buffer alone, as a model with a private Scratch does.
    public final class TileShare: @unchecked Sendable {
        let buffers: [FloatBuffer]
        let maxLanes: Int
        let barrier = LaneBarrier()
        /// Lanes in the current pass; 0 between passes. Set only while no lane runs.
        private(set) var lanes = 0
        /// Tiles lane i has gone through in this pass (each lane writes its own slot).
        private let counters: UnsafeMutablePointer<Int>
        /// Lane 0's (tensor address, first row) of the tile of each parity: every lane checks
        /// after the wait that it is on the same tile, instead of computing with another's rows.
        private let marks: UnsafeMutablePointer<Int>
        /// Tiles shared so far (counted by lane 0; read between passes).
        public private(set) var sharedTiles = 0

        public init(floats: Int, lanes: Int) {
            precondition(lanes >= 1)
            buffers = [FloatBuffer(floats), FloatBuffer(floats)]
            maxLanes = lanes
            counters = .allocate(capacity: lanes)
            counters.initialize(repeating: 0, count: lanes)
            marks = .allocate(capacity: 4)
            marks.initialize(repeating: 0, count: 4)
        }

        /// Sized like a model's own Scratch, so the tiles are the same rows.
        public convenience init(config c: ModelConfig, lanes: Int) {
            self.init(floats: Scratch.floats(config: c), lanes: lanes)
        }

        deinit { counters.deallocate(); marks.deallocate() }

        /// The Scratch lane `lane`'s model dequantizes with.
        public func scratch(lane: Int) -> Scratch {
            precondition(lane < maxLanes)
            return Scratch(share: self, lane: lane)
        }

        /// `body` with lanes 0 ..< `lanes` sharing tiles; the caller runs each lane's model on a
        /// thread of its own inside `body` and returns when all are done (ReplicaThreads.run).
        /// Every lane of the pass must go through the same NF4 products; lanes ≥ `lanes` none.
        public func pass<T>(lanes: Int, _ body: () throws -> T) rethrows -> T {
            precondition(lanes <= maxLanes && self.lanes == 0)
            self.lanes = lanes
            barrier.parties = lanes
            counters.update(repeating: 0, count: maxLanes)
            defer { self.lanes = 0 }
            return try body()
        }

        /// Rows `rows` of W (inDim columns), dequantized together by the lanes of the pass.
        func tile(_ w: NF4Tensor, rows: Range<Int>, inDim: Int, lane: Int) -> UnsafePointer<Float> {
            let t = counters[lane]
            counters[lane] = t &+ 1
            let buffer = buffers[t & 1].ptr, k = lanes, n = rows.count
            let mine = (n * lane / k)..<(n * (lane + 1) / k)
            if !mine.isEmpty {
                dequantize(w, rows: (rows.lowerBound + mine.lowerBound)..<(rows.lowerBound + mine.upperBound),
                           inDim: inDim, into: buffer + mine.lowerBound * inDim)
            }
            let mark = (Int(bitPattern: w.base), rows.lowerBound), slot = marks + 2 * (t & 1)
            if lane == 0 {
                slot[0] = mark.0; slot[1] = mark.1
                sharedTiles += 1
            }
            Profile.measure(.tileWait) { barrier.wait() }
            precondition(slot[0] == mark.0 && slot[1] == mark.1, "model replicas out of step on NF4 tiles")
            return UnsafePointer(buffer)
        }
    }

    /// The lanes of a pass wait here for each other. A lane spins briefly (the others are
    /// usually a few microseconds behind), then yields, then sleeps on a condition: on a loaded
    /// machine a spinning lane would take the core the lane it waits for needs.
    final class LaneBarrier: @unchecked Sendable {
        /// Lanes that must arrive; set only while none waits.
        var parties = 1
        private let arrived = Atomic<Int>(0)
        private let generation = Atomic<Int>(0)
        private let condition = NSCondition()

        func wait() {
            let g = generation.load(ordering: .acquiring)
            if arrived.add(1, ordering: .acquiringAndReleasing).newValue == parties {
                // The last to arrive: reset for the next round, then release the others. The
                // store happens under the lock, so a lane about to sleep either sees it or is
                // woken by the broadcast.
                arrived.store(0, ordering: .relaxed)
                condition.lock()
                generation.store(g &+ 1, ordering: .releasing)
                condition.broadcast()
                condition.unlock()
                return
            }
            var tries = 0
            while generation.load(ordering: .acquiring) == g {
                tries += 1
                if tries < 2000 { continue }
                if tries < 2100 { sched_yield(); continue }
                condition.lock()
                while generation.load(ordering: .acquiring) == g { condition.wait() }
                condition.unlock()
                return
            }
        }
    }
}
