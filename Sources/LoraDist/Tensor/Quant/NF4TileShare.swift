import Foundation
import Synchronization

extension NF4Matmul {
    /// One dequantized copy of each NF4 tile for the model replicas of a rank (Train/ReplicaThreads).
    ///
    /// The replicas run the same layers in the same order on their own parts of the batch, so
    /// they meet the same NF4 tiles in the same order. Within a `pass` the k replicas (lanes)
    /// dequantize each tile once, together, into a buffer they all read, and each sends the whole
    /// tile to its own sgemm. The rows of a tile are cut into chunks that the lanes present
    /// claim one by one, so a lane never waits for a lane that is behind (descheduled, or with
    /// fewer sequences): it dequantizes the chunks no one has claimed and goes on. sgemm gets the
    /// same tiles with the same values as when each replica dequantized its own (the tile rows
    /// depend on the buffer size alone; dequantization is element by element), so results are
    /// identical, bit for bit.
    ///
    /// Tile t lives in buffer t mod `slots`; the last lane to finish its sgemm on a tile hands the
    /// buffer to tile t + slots. A lane waits only for chunks another lane is still dequantizing,
    /// or when it is `slots` tiles ahead of the slowest. Memory: `slots` tiles per rank (4 × 4
    /// MiB), in place of one per replica. Outside a pass lane 0 (the rank's own model run alone)
    /// uses the first buffer alone, as a model with a private Scratch does.
    public final class TileShare: @unchecked Sendable {
        static let slots = 4
        let buffers: [FloatBuffer]
        let maxLanes: Int
        /// Lanes in the current pass; 0 between passes. Set only while no lane runs.
        private(set) var lanes = 0
        /// Tiles lane i has begun in this pass (each lane writes its own slot).
        private let counters: UnsafeMutablePointer<Int>
        private let slot: [Slot]
        private let wake = Wake()
        /// Tiles shared so far (counted by lane 0; read between passes).
        public private(set) var sharedTiles = 0

        /// What the lanes know of one buffer's tile.
        final class Slot: @unchecked Sendable {
            let tile = Atomic<Int>(0)       // the tile it holds, or will once its last reader is done
            let claimed = Atomic<Int>(0)    // chunks handed out
            let done = Atomic<Int>(0)       // chunks dequantized
            let readers = Atomic<Int>(0)    // lanes not yet done with the tile
            // (tensor address, first row) of the tile, written by the lane that dequantizes chunk
            // 0: every lane checks it is on the same tile instead of computing with another's rows.
            var mark = (0, 0)
        }

        public init(floats: Int, lanes: Int) {
            precondition(lanes >= 1)
            buffers = (0..<Self.slots).map { _ in FloatBuffer(floats) }
            maxLanes = lanes
            counters = .allocate(capacity: lanes)
            counters.initialize(repeating: 0, count: lanes)
            slot = (0..<Self.slots).map { _ in Slot() }
        }

        /// Sized like a model's own Scratch, so the tiles are the same rows.
        public convenience init(config c: ModelConfig, lanes: Int) {
            self.init(floats: Scratch.floats(config: c), lanes: lanes)
        }

        deinit { counters.deallocate() }

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
            counters.update(repeating: 0, count: maxLanes)
            for (i, s) in slot.enumerated() {
                s.tile.store(i, ordering: .relaxed)
                s.claimed.store(0, ordering: .relaxed)
                s.done.store(0, ordering: .relaxed)
                s.readers.store(lanes, ordering: .relaxed)
            }
            defer { self.lanes = 0 }
            return try body()
        }

        /// Rows `rows` of W (inDim columns), dequantized once by the lanes of the pass; the
        /// caller calls `release` when its sgemm is done with them.
        func tile(_ w: NF4Tensor, rows: Range<Int>, inDim: Int, lane: Int) -> UnsafePointer<Float> {
            let t = counters[lane]
            counters[lane] = t &+ 1
            let s = slot[t % Self.slots], buffer = buffers[t % Self.slots].ptr
            if s.tile.load(ordering: .acquiring) != t {
                Profile.measure(.tileWait) { wake.until { s.tile.load(ordering: .acquiring) == t } }
            }
            // Chunks of at least 8 rows, about four per lane.
            let n = rows.count, k = lanes
            let chunkRows = max(8, (n + 4 * k - 1) / (4 * k)), chunks = (n + chunkRows - 1) / chunkRows
            let mark = (Int(bitPattern: w.base), rows.lowerBound)
            while true {
                let c = s.claimed.wrappingAdd(1, ordering: .relaxed).oldValue
                guard c < chunks else { break }
                let r0 = c * chunkRows, r1 = min(n, r0 + chunkRows)
                dequantize(w, rows: (rows.lowerBound + r0)..<(rows.lowerBound + r1), inDim: inDim,
                           into: buffer + r0 * inDim)
                if c == 0 { s.mark = mark }
                if s.done.add(1, ordering: .releasing).newValue == chunks { wake.all() }
            }
            if s.done.load(ordering: .acquiring) != chunks {
                Profile.measure(.tileWait) { wake.until { s.done.load(ordering: .acquiring) == chunks } }
            }
            precondition(s.mark == mark, "model replicas out of step on NF4 tiles")
            if lane == 0 { sharedTiles += 1 }
            return UnsafePointer(buffer)
        }

        /// Lane `lane` is done with its last tile: the last lane to be done hands the buffer on.
        func release(lane: Int) {
            let t = counters[lane] &- 1, s = slot[t % Self.slots]
            guard s.readers.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
            s.claimed.store(0, ordering: .relaxed)
            s.done.store(0, ordering: .relaxed)
            s.readers.store(lanes, ordering: .relaxed)
            s.tile.store(t + Self.slots, ordering: .releasing)
            wake.all()
        }
    }

    /// Waiting for another lane: spin briefly (it is usually microseconds away), then yield,
    /// then sleep on a condition, so that on a loaded machine a waiting lane does not take the
    /// core the lane it waits for needs. Whoever changes what a lane waits for calls `all`
    /// after the change; a sleeper checks under the lock, so no wake-up is lost.
    final class Wake: @unchecked Sendable {
        private let condition = NSCondition()

        func until(_ ready: () -> Bool) {
            for i in 0..<2100 {
                if ready() { return }
                if i >= 2000 { sched_yield() }
            }
            condition.lock()
            while !ready() { condition.wait() }
            condition.unlock()
        }

        func all() {
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
    }
}
