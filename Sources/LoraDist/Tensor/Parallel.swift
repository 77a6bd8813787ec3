import Foundation

/// Element-wise kernels split their rows over the cores this rank may use (the
/// same number as its BLAS threads), so they do not run on one core while sgemm
/// ran on all of them.
public enum Parallel {
    /// Workers per kernel; BLAS.setThreads keeps it equal to the BLAS thread count.
    nonisolated(unsafe) public static var workers = 1

    /// Runs body over contiguous parts of 0..<n at once; parts of at least `grain` items.
    /// `workers`: Parallel.workers unless a test asks for another count.
    @inline(__always)
    public static func chunks(_ n: Int, grain: Int = 1, workers: Int = workers, _ body: (Range<Int>) -> Void) {
        let k = parts(n, grain: grain, workers: workers)
        if k <= 1 { body(0..<n); return }
        DispatchQueue.concurrentPerform(iterations: k) { i in body((n * i / k)..<(n * (i + 1) / k)) }
    }

    /// How many parts `chunks` cuts n items into (1: body runs on the calling thread).
    @inline(__always)
    static func parts(_ n: Int, grain: Int, workers: Int = workers) -> Int { max(1, min(workers, n / max(grain, 1))) }
}
