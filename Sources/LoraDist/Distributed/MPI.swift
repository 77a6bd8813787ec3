import CMPI
import Foundation

/// The MPI runtime: initialised once per process, finalised at exit. Without
/// mpirun, OpenMPI's singleton init makes the process a world of one.
public enum MPIRuntime {
    nonisolated(unsafe) private static var initialized = false
    private static let lock = NSLock()
    /// The control channel of the collective timeout (nil in a world of one).
    nonisolated(unsafe) static var watch: HangWatch?

    /// Calls MPI_Init_thread once (later calls are no-ops) and registers MPI_Finalize at exit.
    /// Settles the collective timeout first: an invalid LORA_DIST_COLLECTIVE_TIMEOUT ends
    /// the process with one line (from rank 0) before MPI starts.
    public static func initialize() {
        lock.lock()
        defer { lock.unlock() }
        guard !initialized else { return }
        do { CollectiveTimeout.seconds = try CollectiveTimeout.resolve() } catch {
            let env = ProcessInfo.processInfo.environment
            if (env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? "0") == "0" {
                FileHandle.standardError.write(Data("lora-dist: error: \(error)\n".utf8))
            }
            exit(1)
        }
        // libnbc, which runs the non-blocking collectives, picks a half-duplex binomial
        // allreduce for small communicators (the cross-node ones): measured on the test bed it
        // took twice the ring's time for the same bytes. Ring is bandwidth-optimal and is what
        // the byte accounting and `plan` model. The user's own setting wins.
        let chosen = getenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm") == nil
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0)
        var provided: Int32 = 0
        // SERIALIZED: one thread at a time calls MPI (the trainer's; OpenBLAS's
        // threads never do), though not always the same one (test runners). Without mpirun the
        // singleton init forks OpenMPI's daemon: no sgemm may run meanwhile (BLAS.exclusive). A
        // test process starting MPI while another test's threaded sgemm ran hung in it.
        BLAS.exclusive { _ = MPI_Init_thread(nil, nil, Int32(MPI_THREAD_SERIALIZED), &provided) }
        initialized = true
        var size: Int32 = 0
        MPI_Comm_size(cmpi_comm_world(), &size)
        if size > 1 { watch = HangWatch() }
        if chosen && size > 1 { IallreduceAlgorithm.attach() }
        atexit { MPIRuntime.finalize() }
    }

    public static func finalize() {
        var done: Int32 = 0
        MPI_Finalized(&done)
        var inited: Int32 = 0
        MPI_Initialized(&inited)
        if inited != 0 && done == 0 {
            watch?.close()
            MPI_Finalize()
        }
    }

    /// Ends every rank of the job: for failures one rank sees and the others cannot.
    public static func abort(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("lora-dist: error: \(message)\n".utf8))
        MPI_Abort(cmpi_comm_world(), code)
        exit(code)
    }

    /// True when this process was started by mpirun (or srun with PMIx).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_RANK"] != nil
    }
}

/// libnbc's iallreduce algorithm, switched at run time (MPI_T) between the ring for the
/// gradient buckets (bandwidth-optimal: see MPIRuntime.initialize) and recursive doubling for
/// the few scalars a step reduces (loss, norm, flags), where the ring's 2(p−1) rounds cost
/// latency: at 4 ranks on 2 cores 34 µs against 11 µs per call. Every rank switches at the
/// same calls, so the ranks of a collective always agree. Untouched when the user set
/// OMPI_MCA_coll_libnbc_iallreduce_algorithm.
enum IallreduceAlgorithm {
    static let ring: Int32 = 1, recursiveDoubling: Int32 = 4
    nonisolated(unsafe) private static var handle: MPI_T_cvar_handle?
    nonisolated(unsafe) private static var current: Int32 = ring

    static func attach() {
        var provided: Int32 = 0, index: Int32 = 0, count: Int32 = 0
        guard MPI_T_init_thread(Int32(MPI_THREAD_SERIALIZED), &provided) == MPI_SUCCESS,
              MPI_T_cvar_get_index("coll_libnbc_iallreduce_algorithm", &index) == MPI_SUCCESS,
              MPI_T_cvar_handle_alloc(index, nil, &handle, &count) == MPI_SUCCESS else { handle = nil; return }
    }

    /// Makes `algorithm` the one the next MPI_Iallreduce uses.
    static func use(_ algorithm: Int32) {
        guard let handle, algorithm != current else { return }
        var a = algorithm
        if MPI_T_cvar_write(handle, &a) == MPI_SUCCESS { current = algorithm }
    }
}

/// An outstanding non-blocking collective.
public struct Request {
    var handle: MPI_Request?
    /// What it is and on which communicator, for the collective timeout's message.
    var op: StaticString = "collective"
    var comm = ""

    /// Blocks until done; ends the job when some rank does not arrive within the
    /// collective timeout (`CollectiveTimeout`).
    public mutating func wait() {
        guard handle != nil else { return }
        if let watch = MPIRuntime.watch, CollectiveTimeout.seconds > 0 {
            let op = op, comm = comm
            watch.wait(&handle, timeout: CollectiveTimeout.seconds) { "\(comm) \(op)" }
        } else {
            MPI_Wait(&handle, cmpi_status_ignore())
        }
        handle = nil
    }

    /// Progresses the collective; true when it has completed.
    public mutating func test() -> Bool {
        guard handle != nil else { return true }
        var flag: Int32 = 0
        MPI_Test(&handle, &flag, cmpi_status_ignore())
        if flag != 0 { handle = nil }
        return flag != 0
    }

    public var isDone: Bool { handle == nil }
}

/// A communicator and the collectives the trainer uses, over Float buffers.
///
/// Every collective is started non-blocking and waited for through `Request.wait`, so
/// each has the collective timeout; the blocking forms below are that pair.
public final class Communicator {
    public let comm: MPI_Comm?
    public let rank: Int
    public let size: Int
    /// "world", "node" or "cross-node": names the communicator in the timeout's message.
    public let name: String
    let owned: Bool

    init(_ comm: MPI_Comm?, owned: Bool, name: String) {
        self.comm = comm
        self.owned = owned
        self.name = name
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        size = Int(s)
    }

    deinit {
        var c = comm
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if owned && finalized == 0 { MPI_Comm_free(&c) }
    }

    public static var world: Communicator {
        MPIRuntime.initialize()
        return Communicator(cmpi_comm_world(), owned: false, name: "world")
    }

    /// Starts a non-blocking collective (`start` fills in the request) and waits for it.
    private func complete(_ op: StaticString, _ start: (UnsafeMutablePointer<MPI_Request?>) -> Void) {
        var r = Request(handle: nil, op: op, comm: name)
        start(&r.handle)
        r.wait()
    }

    private func request(_ op: StaticString, _ start: (UnsafeMutablePointer<MPI_Request?>) -> Void) -> Request {
        var r = Request(handle: nil, op: op, comm: name)
        start(&r.handle)
        return r
    }

    /// The ranks that share memory with this one (one node). Collective: a timed barrier
    /// first, as MPI_Comm_split_type has no non-blocking form.
    public func splitShared() -> Communicator {
        barrier()
        var out: MPI_Comm?
        MPI_Comm_split_type(comm, Int32(MPI_COMM_TYPE_SHARED), Int32(rank), cmpi_info_null(), &out)
        return Communicator(out, owned: true, name: "node")
    }

    /// Ranks with the same color, ordered by key (the job's one split: the ranks with the same
    /// local index on every node, hence the default name). A timed barrier first.
    public func split(color: Int, key: Int, name: String = "cross-node") -> Communicator {
        barrier()
        var out: MPI_Comm?
        MPI_Comm_split(comm, Int32(color), Int32(key), &out)
        return Communicator(out, owned: true, name: name)
    }

    public func barrier() { complete("barrier") { MPI_Ibarrier(comm, $0) } }

    /// The same ranks in a communicator of their own, so that two streams of non-blocking
    /// collectives (each started in the same order on every rank) cannot interleave differently
    /// on different ranks. A timed barrier first.
    public func duplicate(name: String) -> Communicator {
        barrier()
        var out: MPI_Comm?
        MPI_Comm_dup(comm, &out)
        return Communicator(out, owned: true, name: name)
    }


    /// In-place sum over all ranks: a blocking MPI_Allreduce without the collective timeout,
    /// for `bench allreduce`, which measures this call.
    public func allreduce(_ buf: FPtr, count: Int) {
        guard size > 1, count > 0 else { return }
        MPI_Allreduce(cmpi_in_place(), buf, Int32(count), cmpi_float(), cmpi_sum(), comm)
    }

    public func iallreduce(_ buf: FPtr, count: Int) -> Request {
        guard size > 1, count > 0 else { return Request(handle: nil) }
        IallreduceAlgorithm.use(IallreduceAlgorithm.ring)
        return request("allreduce") { MPI_Iallreduce(cmpi_in_place(), buf, Int32(count), cmpi_float(), cmpi_sum(), comm, $0) }
    }

    private func allreduce(_ values: [Double], _ op: MPI_Op?) -> [Double] {
        var v = values
        guard size > 1, !v.isEmpty else { return v }
        IallreduceAlgorithm.use(IallreduceAlgorithm.recursiveDoubling)
        v.withUnsafeMutableBufferPointer { p in
            complete("allreduce") { MPI_Iallreduce(cmpi_in_place(), p.baseAddress, Int32(p.count), cmpi_double(), op, comm, $0) }
        }
        return v
    }

    public func allreduce(_ values: [Double]) -> [Double] { allreduce(values, cmpi_sum()) }

    public func allreduceMin(_ value: Int) -> Int {
        guard size > 1 else { return value }
        var v = [Int64(value)]
        IallreduceAlgorithm.use(IallreduceAlgorithm.recursiveDoubling)
        v.withUnsafeMutableBufferPointer { p in
            complete("allreduce") { MPI_Iallreduce(cmpi_in_place(), p.baseAddress, 1, cmpi_int64(), cmpi_min(), comm, $0) }
        }
        return Int(v[0])
    }

    public func allreduceMax(_ value: Double) -> Double { allreduceMax([value])[0] }

    /// Element-wise maximum over all ranks.
    public func allreduceMax(_ values: [Double]) -> [Double] { allreduce(values, cmpi_max()) }

    /// Sums send[0..<Σcounts] over ranks; rank r receives the sum of its block counts[r] into recv.
    /// `counts` is copied: the request owns what MPI reads after this call returns.
    public func ireduceScatter(send: UnsafePointer<Float>, recv: FPtr, counts: [Int32]) -> Request {
        // MPI_Ireduce_scatter reads recvcounts when it starts (libnbc builds its schedule then).
        counts.withUnsafeBufferPointer { c in
            request("reduce-scatter") { MPI_Ireduce_scatter(send, recv, c.baseAddress, cmpi_float(), cmpi_sum(), comm, $0) }
        }
    }

    /// Blocking form of `ireduceScatter`.
    public func reduceScatter(send: UnsafePointer<Float>, recv: FPtr, counts: [Int32]) {
        var r = ireduceScatter(send: send, recv: recv, counts: counts)
        r.wait()
    }

    /// Personalised exchange of 16-bit words: block r of `send` (sendCounts[r] words at
    /// sendOffsets[r]) goes to rank r; rank r's block for this one lands at recvOffsets[r].
    /// The count arrays are copied into the request's schedule when it starts (libnbc).
    public func ialltoallv(send: UnsafePointer<UInt16>, sendCounts: [Int32], sendOffsets: [Int32],
                           recv: UnsafeMutablePointer<UInt16>, recvCounts: [Int32], recvOffsets: [Int32]) -> Request {
        guard size > 1 else { return Request(handle: nil) }
        return sendCounts.withUnsafeBufferPointer { sc in sendOffsets.withUnsafeBufferPointer { so in
            recvCounts.withUnsafeBufferPointer { rc in recvOffsets.withUnsafeBufferPointer { ro in
                request("alltoall") {
                    MPI_Ialltoallv(send, sc.baseAddress, so.baseAddress, cmpi_uint16(), recv, rc.baseAddress, ro.baseAddress,
                                   cmpi_uint16(), comm, $0)
                }
            } }
        } }
    }

    /// Every rank's block of 16-bit words (counts[r] at offsets[r]) on every rank.
    public func iallgatherv(send: UnsafePointer<UInt16>, count: Int, recv: UnsafeMutablePointer<UInt16>,
                            counts: [Int32], offsets: [Int32]) -> Request {
        guard size > 1 else { return Request(handle: nil) }
        return counts.withUnsafeBufferPointer { c in offsets.withUnsafeBufferPointer { o in
            request("allgather") {
                MPI_Iallgatherv(send, Int32(count), cmpi_uint16(), recv, c.baseAddress, o.baseAddress, cmpi_uint16(), comm, $0)
            }
        } }
    }

    /// Every rank's block of floats (counts[r] at offsets[r]) on every rank, in place: this
    /// rank's block is already at its offset in `buf`.
    public func allgatherv(inPlace buf: FPtr, counts: [Int32], offsets: [Int32]) {
        guard size > 1 else { return }
        counts.withUnsafeBufferPointer { c in offsets.withUnsafeBufferPointer { o in
            complete("allgather") {
                MPI_Iallgatherv(cmpi_in_place(), 0, cmpi_float(), buf, c.baseAddress, o.baseAddress, cmpi_float(), comm, $0)
            }
        } }
    }

    public func ibarrier() -> Request { request("barrier") { MPI_Ibarrier(comm, $0) } }

    /// Every rank's `count` floats, concatenated in rank order, on every rank.
    public func allgather(_ send: UnsafePointer<Float>, count: Int, into recv: FPtr) {
        complete("allgather") { MPI_Iallgather(send, Int32(count), cmpi_float(), recv, Int32(count), cmpi_float(), comm, $0) }
    }

    public func iallgather(_ send: UnsafePointer<Float>, count: Int, into recv: FPtr) -> Request {
        request("allgather") { MPI_Iallgather(send, Int32(count), cmpi_float(), recv, Int32(count), cmpi_float(), comm, $0) }
    }

    /// Gathers a string from every rank (for host names).
    public func allgather(string: String, maxBytes: Int = 256) -> [String] {
        var mine = [UInt8](repeating: 0, count: maxBytes)
        for (i, b) in string.utf8.prefix(maxBytes - 1).enumerated() { mine[i] = b }
        var all = [UInt8](repeating: 0, count: maxBytes * size)
        mine.withUnsafeBufferPointer { m in
            all.withUnsafeMutableBufferPointer { a in
                complete("allgather") {
                    MPI_Iallgather(m.baseAddress, Int32(maxBytes), cmpi_byte(), a.baseAddress, Int32(maxBytes), cmpi_byte(), comm, $0)
                }
            }
        }
        return (0..<size).map { r in
            let slice = all[(r * maxBytes)..<((r + 1) * maxBytes)]
            return String(decoding: slice.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Every rank's bytes at `root` (in rank order); nil elsewhere.
    public func gather(_ data: [UInt8], root: Int = 0) -> [[UInt8]]? {
        var sizes = [Int32](repeating: 0, count: size)
        let mine = [Int32(data.count)]
        mine.withUnsafeBufferPointer { m in
            sizes.withUnsafeMutableBufferPointer { s in
                complete("gather") { MPI_Igather(m.baseAddress, 1, cmpi_int32(), s.baseAddress, 1, cmpi_int32(), Int32(root), comm, $0) }
            }
        }
        var displs = [Int32](repeating: 0, count: size)
        for r in 1..<max(size, 1) { displs[r] = displs[r - 1] + sizes[r - 1] }
        let total = rank == root ? Int(sizes.reduce(0, +)) : 0
        var all = [UInt8](repeating: 0, count: max(total, 1))
        data.withUnsafeBufferPointer { d in
            all.withUnsafeMutableBufferPointer { a in
                sizes.withUnsafeBufferPointer { s in
                    displs.withUnsafeBufferPointer { o in
                        complete("gather") {
                            MPI_Igatherv(d.baseAddress, Int32(d.count), cmpi_byte(), a.baseAddress, s.baseAddress, o.baseAddress,
                                         cmpi_byte(), Int32(root), comm, $0)
                        }
                    }
                }
            }
        }
        guard rank == root else { return nil }
        return (0..<size).map { r in Array(all[Int(displs[r])..<(Int(displs[r]) + Int(sizes[r]))]) }
    }

    /// Rank 0's bytes on every rank.
    public func broadcast(_ data: inout [UInt8]) {
        var n = [Int64(data.count)]
        n.withUnsafeMutableBufferPointer { p in
            complete("broadcast") { MPI_Ibcast(p.baseAddress, 1, cmpi_int64(), 0, comm, $0) }
        }
        if data.count != Int(n[0]) { data = [UInt8](repeating: 0, count: Int(n[0])) }
        data.withUnsafeMutableBufferPointer { p in
            complete("broadcast") { MPI_Ibcast(p.baseAddress, Int32(p.count), cmpi_byte(), 0, comm, $0) }
        }
    }
}

/// An MPI-3 shared-memory window: one allocation per node that every rank of
/// the node maps. `allocate` is collective over the node communicator.
public final class SharedWindow {
    var win: MPI_Win?
    public let base: FPtr
    public let count: Int
    let node: Communicator

    /// `count` floats, all placed in local rank 0's segment so the array is
    /// contiguous; every rank gets a pointer to its start.
    public init(node: Communicator, count: Int) {
        self.node = node
        self.count = count
        let bytes = node.rank == 0 ? max(count, 1) * 4 : 0
        node.barrier()  // timed: MPI_Win_allocate_shared has no non-blocking form
        var ptr: UnsafeMutableRawPointer?
        var w: MPI_Win?
        MPI_Win_allocate_shared(MPI_Aint(bytes), 4, cmpi_info_null(), node.comm, &ptr, &w)
        var size: MPI_Aint = 0
        var disp: Int32 = 0
        var base0: UnsafeMutableRawPointer?
        MPI_Win_shared_query(w, 0, &size, &disp, &base0)
        win = w
        base = base0!.bindMemory(to: Float.self, capacity: max(count, 1))
        // Passive target for the whole run; publish() orders writes and reads.
        MPI_Win_lock_all(Int32(MPI_MODE_NOCHECK), w)
    }

    /// Makes this rank's writes visible to the node and waits for every other
    /// rank's: sync, barrier, sync.
    public func publish() {
        MPI_Win_sync(win)
        node.barrier()
        MPI_Win_sync(win)
    }

    deinit {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        guard finalized == 0 else { return }
        MPI_Win_unlock_all(win)
        MPI_Win_free(&win)
    }
}
