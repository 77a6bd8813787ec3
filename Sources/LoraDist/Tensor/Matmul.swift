import CBLAS
import Foundation

/// Row-major C = alpha · op(A) · op(B) + beta · C, through OpenBLAS.
/// op(A) is m × k, op(B) is k × n, C is m × n.
@inline(__always)
func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
           alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
           b: UnsafePointer<Float>, ldb: Int,
           beta: Float = 0, c: FPtr, ldc: Int) {
    FlopCounter.add(2 &* m &* n &* k)
    Profile.measureSgemm(Profile.GemmShape(transA: transA, transB: transB, m: m, n: n, k: k)) {
        BLAS.call {
            cblas_sgemm(CblasRowMajor,
                        transA ? CblasTrans : CblasNoTrans,
                        transB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                        beta, c, Int32(ldc))
        }
    }
}

/// The linear kernel, y = x · Wᵀ, with weights stored [out, in] as Hugging Face does.
public enum Matmul {
    /// y[n, out] = x[n, in] · W[out, in]ᵀ  (+ y when accumulate); rows of y `ldy` apart (default out)
    public static func forward(y: FPtr, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                               n: Int, inDim: Int, outDim: Int, accumulate: Bool = false, ldy: Int? = nil) {
        sgemm(transB: true, m: n, n: outDim, k: inDim, a: x, lda: inDim, b: w, ldb: inDim,
              beta: accumulate ? 1 : 0, c: y, ldc: ldy ?? outDim)
    }

    /// dx[n, in] (+)= dy[n, out] · W[out, in];  dW[out, in] += dyᵀ · x.
    /// Either output may be nil: frozen weights get no gradient. Rows of dy `ldy` apart (default out).
    public static func backward(dx: FPtr?, dw: FPtr?, dy: UnsafePointer<Float>,
                                x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                                n: Int, inDim: Int, outDim: Int, accumulateDx: Bool = false, ldy: Int? = nil) {
        let ldy = ldy ?? outDim
        if let dx {
            sgemm(m: n, n: inDim, k: outDim, a: dy, lda: ldy, b: w, ldb: inDim,
                  beta: accumulateDx ? 1 : 0, c: dx, ldc: inDim)
        }
        if let dw {
            sgemm(transA: true, m: outDim, n: inDim, k: n, a: dy, lda: ldy, b: x, ldb: inDim,
                  beta: 1, c: dw, ldc: inDim)
        }
    }
}

public enum BLAS {
    /// OpenBLAS's thread count must not change while a threaded call runs on another thread
    /// (the call splits its work by the count it reads as it goes: a change mid-call gives wrong
    /// products). Calls hold this lock shared, changes of the count exclusively. In a training
    /// process one thread calls sgemm at a time (replicas run on one BLAS thread each); the test
    /// process runs many models at once.
    nonisolated(unsafe) private static let lock: UnsafeMutablePointer<pthread_rwlock_t> = {
        let l = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
        pthread_rwlock_init(l, nil)
        return l
    }()

    /// body (an OpenBLAS call) while the thread count cannot change.
    @inline(__always)
    static func call<T>(_ body: () -> T) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return body()
    }

    /// body while no OpenBLAS call runs or starts, on any thread: for changes of the thread
    /// count, and for what forks (OpenBLAS's fork handler shuts its worker threads down, and a
    /// threaded call in flight on another thread then waits for them forever).
    static func exclusive<T>(_ body: () -> T) -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return body()
    }

    private static func setOpenBLASThreads(_ n: Int32) {
        exclusive { openblas_set_num_threads(n) }
    }

    /// Also sets how many workers the element-wise kernels use.
    public static func setThreads(_ n: Int) {
        setOpenBLASThreads(Int32(n))
        Parallel.workers = max(1, n)
    }
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// body with one BLAS thread, for work that calls sgemm from each of Parallel.workers
    /// threads at once (OpenBLAS runs concurrent multi-threaded calls one after another, on a
    /// lock); the thread count as before afterwards. Parallel.workers stays as it is.
    static func oneThreadPerWorker<T>(_ body: () throws -> T) rethrows -> T {
        let n = openblas_get_num_threads()
        guard n > 1 else { return try body() }
        setOpenBLASThreads(1)
        defer { setOpenBLASThreads(n) }
        return try body()
    }
    public static var config: String { String(cString: openblas_get_config()) }
}

/// Counts the floating-point operations sent to sgemm, for the step benchmark and
/// the planner's check. A lock, because replicas call sgemm from several threads
/// (uncontended it costs tens of nanoseconds against an sgemm's microseconds).
public enum FlopCounter {
    nonisolated(unsafe) private static var count = 0
    private static let lock = NSLock()

    public static var sgemm: Int { lock.lock(); defer { lock.unlock() }; return count }

    @inline(__always)
    static func add(_ flops: Int) {
        lock.lock()
        count &+= flops
        lock.unlock()
    }
}
