import Foundation

/// The threads a rank's model replicas run on: threads of their own, started once.
/// Not GCD's shared pool: work blocked elsewhere in the process (a test runner, pipe
/// readers) can starve it, and a replica waiting for a pool thread would wait forever.
final class ReplicaThreads {
    /// What the threads share; they hold this, not the pool, so the pool can go away.
    private final class State: @unchecked Sendable {
        var work: ((Int) -> Void)?
        var stop = false
        let start: [DispatchSemaphore]
        let done = DispatchSemaphore(value: 0)
        init(_ n: Int) { start = (0..<n).map { _ in DispatchSemaphore(value: 0) } }
    }
    private let state: State

    /// `extra` threads besides the caller's.
    init(extra: Int) {
        state = State(extra)
        for i in 0..<extra {
            let s = state
            let t = Thread {
                while true {
                    s.start[i].wait()
                    if s.stop { return }
                    s.work?(i + 1)
                    s.done.signal()
                }
            }
            t.stackSize = 16 << 20
            t.start()
        }
    }

    deinit {
        state.stop = true
        for s in state.start { s.signal() }
    }

    /// body(0) on the calling thread and body(1 ... extra) on the pool's threads; returns when all are done.
    func run(_ body: @escaping (Int) -> Void) {
        state.work = body
        for s in state.start { s.signal() }
        body(0)
        for _ in state.start { state.done.wait() }
        state.work = nil
    }
}
