import CBLAS
import Foundation

/// PowerSGD (Vogels et al. 2019) as torch's `powerSGD_hook` computes it for one bucket holding
/// the whole trainable gradient, with `use_error_feedback`, `warm_start`, min_compression_rate 2
/// and orthogonalisation epsilon 0:
///
///  1. M = gradient + this rank's error feedback (kept from the previous step), copied.
///  2. Each tensor is a matrix rows × (the rest); it is compressed at rank r' = min(rows, cols, r)
///     only if 2·(rows + cols)·r' < rows·cols. The others (1-D tensors, small or thin ones) are
///     summed uncompressed, in one allreduce.
///  3. Q (cols × r'): at the first compressed step standard normal values from a seed every rank
///     shares, later the previous step's Q (warm start); orthogonalised.
///  4. P = M·Q, allreduced; orthogonalised; Q = Mᵀ·P, allreduced; M ≈ P·Qᵀ.
///  5. Error feedback: M − result / W (W ranks), for every tensor of the bucket.
///
/// Orthogonalisation is torch's: Gram-Schmidt up to rank 2, Householder QR (LAPACK sgeqrf +
/// sorgqr) above, so the factors match torch's signs too. One difference, on purpose: a zero
/// column stays zero where torch (epsilon 0) divides by its zero norm and gets NaN (LoRA's B
/// starts at zero, so A's gradient is exactly zero at first).
///
/// torch averages (it divides the sums by W); lora-dist's gradients are already scaled so that
/// the sum over ranks is the gradient, so P·Qᵀ here is the sum and the error is M − sum / W:
/// the same numbers in torch's units divided by W. With W = 1 the two are identical.
public final class PowerSGD {
    /// A trainable tensor as a matrix, and where its compressed factors live.
    public struct Matrix {
        public let offset: Int, rows: Int, cols: Int
        /// 0: sent uncompressed
        public let rank: Int
        let p: Int, q: Int      // offsets into P and Q
    }

    public let matrices: [Matrix]
    public let count: Int
    public let rank: Int
    let worldSize: Int
    let seed: UInt64
    /// Every compressed tensor's P (rows × r') and Q (cols × r'), row-major, one after another.
    public let p: FloatBuffer
    public let q: FloatBuffer
    /// Q holds a previous step's factors (warm start); false until the first compressed step.
    public var hasQ = false
    /// This rank's error feedback over the whole gradient, and the copy of M it is computed from.
    public let error: FloatBuffer
    public var hasError = false
    let copy: FloatBuffer
    let flat: FloatBuffer           // the uncompressed tensors, concatenated
    let uncompressedCount: Int
    // QR scratch
    let colMajor: FloatBuffer, tau: FloatBuffer, work: FloatBuffer

    /// `shapes`: each trainable tensor's (arena offset, shape), covering [0, count).
    public init(shapes: [(offset: Int, shape: [Int])], count: Int, rank: Int, worldSize: Int, seed: UInt64) {
        var ms: [Matrix] = [], pTotal = 0, qTotal = 0, flatTotal = 0, widest = 1, tallest = 1
        for (offset, shape) in shapes {
            let rows = shape.first ?? 1, cols = shape.dropFirst().reduce(1, *)
            let r = min(rows, cols, rank)
            let compress = 2 * (rows + cols) * r < rows * cols
            ms.append(Matrix(offset: offset, rows: rows, cols: cols, rank: compress ? r : 0, p: pTotal, q: qTotal))
            if compress {
                pTotal += rows * r; qTotal += cols * r
                tallest = max(tallest, rows, cols); widest = max(widest, r)
            } else {
                flatTotal += rows * cols
            }
        }
        matrices = ms
        self.count = count
        self.rank = rank
        self.worldSize = worldSize
        self.seed = seed
        p = FloatBuffer(pTotal)
        q = FloatBuffer(qTotal)
        error = FloatBuffer(count)
        copy = FloatBuffer(count)
        flat = FloatBuffer(flatTotal)
        uncompressedCount = flatTotal
        colMajor = FloatBuffer(tallest * widest)
        tau = FloatBuffer(widest)
        work = FloatBuffer(max(64 * widest, 1))
    }

    /// What a step of PowerSGD at `rank` allreduces for tensors of these shapes (uncompressed
    /// tensors whole, compressed ones as P and Q), and the FLOPs of its products per rank
    /// (P = M·Q, Q = Mᵀ·P, M ≈ P·Qᵀ): the planner's model, by the rule `init` applies.
    public static func floats(shapes: [[Int]], rank: Int) -> (floats: Int, flops: Double) {
        var floats = 0, flops = 0.0
        for shape in shapes {
            let rows = shape.first ?? 1, cols = shape.dropFirst().reduce(1, *), r = min(rows, cols, rank)
            if 2 * (rows + cols) * r < rows * cols {
                floats += (rows + cols) * r
                flops += 3 * 2 * Double(rows) * Double(cols) * Double(r)
            } else {
                floats += rows * cols
            }
        }
        return (floats, flops)
    }

    /// Floats one step puts into allreduces: the uncompressed tensors, then P, then Q.
    public var allreducedCounts: (uncompressed: Int, p: Int, q: Int) { (uncompressedCount, p.count, q.count) }

    /// Replaces the gradient at `grads` (this rank's, `count` floats) by PowerSGD's approximation
    /// of its sum over ranks. `allreduce(buffer, n)` sums n floats over every rank in place.
    public func run(grads: FPtr, allreduce: (FPtr, Int) -> Void) {
        let n = count
        if !hasError { error.zero(); hasError = true }
        let e = error.ptr, c = copy.ptr
        for i in 0..<n { grads[i] += e[i] }
        c.update(from: grads, count: n)

        // The uncompressed tensors, in one allreduce.
        var at = 0
        for m in matrices where m.rank == 0 {
            (flat.ptr + at).update(from: grads + m.offset, count: m.rows * m.cols)
            at += m.rows * m.cols
        }
        allreduce(flat.ptr, uncompressedCount)
        at = 0
        for m in matrices where m.rank == 0 {
            (grads + m.offset).update(from: flat.ptr + at, count: m.rows * m.cols)
            at += m.rows * m.cols
        }

        if !hasQ {
            var g = SplitMix64(seed: SplitMix64.mix(seed, 0x9057_5CD0))
            for i in 0..<q.count { q.ptr[i] = g.normal() }
            hasQ = true
        }
        let compressed = matrices.filter { $0.rank > 0 }
        for m in compressed { orthogonalize(q.ptr + m.q, rows: m.cols, cols: m.rank) }
        // P = M·Q
        for m in compressed {
            BLAS.call {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m.rows), Int32(m.rank), Int32(m.cols), 1,
                            grads + m.offset, Int32(m.cols), q.ptr + m.q, Int32(m.rank), 0, p.ptr + m.p, Int32(m.rank))
            }
        }
        allreduce(p.ptr, p.count)
        for m in compressed { orthogonalize(p.ptr + m.p, rows: m.rows, cols: m.rank) }
        // Q = Mᵀ·P
        for m in compressed {
            BLAS.call {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(m.cols), Int32(m.rank), Int32(m.rows), 1,
                            grads + m.offset, Int32(m.cols), p.ptr + m.p, Int32(m.rank), 0, q.ptr + m.q, Int32(m.rank))
            }
        }
        allreduce(q.ptr, q.count)
        // M ≈ P·Qᵀ
        for m in compressed {
            BLAS.call {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m.rows), Int32(m.cols), Int32(m.rank), 1,
                            p.ptr + m.p, Int32(m.rank), q.ptr + m.q, Int32(m.rank), 0, grads + m.offset, Int32(m.cols))
            }
        }
        let share = 1 / Float(worldSize)
        for i in 0..<n { e[i] = c[i] - grads[i] * share }
    }

    /// Orthonormal columns of the rows × cols row-major matrix at `a` (cols ≤ rows), as torch's
    /// `_orthogonalize` makes them.
    func orthogonalize(_ a: FPtr, rows: Int, cols: Int) {
        if cols <= 2 {
            // Modified Gram-Schmidt (torch's _orthogonalize_gram_schmidt).
            for j in 0..<cols {
                var s: Float = 0
                for i in 0..<rows { s += a[i * cols + j] * a[i * cols + j] }
                let norm = s.squareRoot()
                if norm > 0 { for i in 0..<rows { a[i * cols + j] /= norm } }
                for k in (j + 1)..<max(cols, j + 1) {
                    var d: Float = 0
                    for i in 0..<rows { d += a[i * cols + j] * a[i * cols + k] }
                    for i in 0..<rows { a[i * cols + k] -= d * a[i * cols + j] }
                }
            }
            return
        }
        // Householder QR, reduced: Q replaces the matrix.
        let cm = colMajor.ptr
        for i in 0..<rows { for j in 0..<cols { cm[j * rows + i] = a[i * cols + j] } }
        var m = Int32(rows), n = Int32(cols), k = Int32(cols), lda = Int32(rows), lwork = Int32(work.count), info: Int32 = 0
        sgeqrf_(&m, &n, cm, &lda, tau.ptr, work.ptr, &lwork, &info)
        sorgqr_(&m, &n, &k, cm, &lda, tau.ptr, work.ptr, &lwork, &info)
        for i in 0..<rows { for j in 0..<cols { a[i * cols + j] = cm[j * rows + i] } }
    }
}
