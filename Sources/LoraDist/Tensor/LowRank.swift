import Foundation

/// Products with one dimension the size of a LoRA adapter's rank r, or of a group's stacked
/// ranks (LinearGroup): x·Aᵀ and s·dy·B [rows, r], s·xa·Bᵀ and mid·A [rows, wide], midᵀ·x
/// [r, wide], s·dyᵀ·xa [wide, r]. OpenBLAS packs the big operand of such a product into its
/// own layout first, and with one dimension of 8 to 32 the packing costs more than the
/// arithmetic: these products ran at 15-30 % of the sgemm yardstick. These kernels read the
/// big operand where it lies and copy only the small one (times α, padded to whole vectors of
/// 8) into a panel on the stack. `gemm` uses them for the products with a narrow output
/// (x·Aᵀ, s·dy·B with dB, dB): those were 2× faster than sgemm in a step; the others stay on
/// sgemm (`takes`).
///
/// Every product is  out[i, c] (=, or += with accumulate) Σ_k a(i, k) · α·p(k, c), and each
/// output element is one chain of fused multiply-adds over k in order, starting from its old
/// value (accumulate) or 0. Blocking rows, columns or k, and splitting rows or columns over
/// workers, changes no element's chain: the bits do not depend on Parallel.workers, and the
/// fused pass (`midAndGradient`) gives the bits of its two products run apart.
enum LowRank {
    /// The widest output (`takes`) these kernels are used for. Up to 32 (ranks 8-32, a group's
    /// stacked 16 or 24) OpenBLAS's packing was measured to dominate (15-30 % of the yardstick);
    /// wider ones were not measured against these kernels, and sgemm's packing is paid back
    /// over more columns there.
    static let maxWidth = 32

    /// Floats of one packed panel of the small operand (32 KB: stays in L1 while it is used).
    static let panelFloats = 8192
    /// Output columns packed at a time when the output is wide (s·xa·Bᵀ): r × 256 ≤ panelFloats.
    static let chunkColumns = 256

    /// Whether `gemm` runs a product on these kernels: when its output is at most maxWidth
    /// columns wide (x·Aᵀ, s·dy·B, dB: the small operand is the whole panel, the big one is
    /// streamed once). Products whose small dimension is k (s·xa·Bᵀ, mid·A: a wide output read
    /// and written once, memory-bound either way) or m (dA = midᵀ·x) ran slower on these kernels
    /// than on sgemm when measured in `bench step` (SmolLM2, LoRA all-linear, 4 × 512 and
    /// 1 × 2,048: 141-243 against 234-384 ms per step, 99-120 against 99-212), so they stay on sgemm.
    static func takes(m: Int, n: Int, k: Int) -> Bool { n <= maxWidth && k > 0 }

    /// sgemm's C = α·op(A)·op(B) + β·C (β 0 or 1, row-major) by these kernels when `takes` says
    /// so, else by sgemm. `workers`: how many threads share the output (the element-wise
    /// kernels' count; 1 inside a replica's lane).
    static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                     b: UnsafePointer<Float>, ldb: Int,
                     beta: Float = 0, c: FPtr, ldc: Int, workers: Int = Parallel.workers) {
        guard takes(m: m, n: n, k: k) else {
            return sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                         b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
        kernel(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
               beta: beta, c: c, ldc: ldc, workers: workers)
    }

    /// The same product on these kernels whatever its shape (k > 0). FLOPs counted and timed as
    /// sgemm's are, the shape marked as this kernel's in the profile.
    static func kernel(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                       alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                       b: UnsafePointer<Float>, ldb: Int,
                       beta: Float = 0, c: FPtr, ldc: Int, workers: Int = Parallel.workers) {
        precondition(beta == 0 || beta == 1, "LowRank.gemm takes beta 0 or 1")
        precondition(k > 0, "LowRank.kernel takes k > 0")
        guard m > 0, n > 0 else { return }
        FlopCounter.add(2 &* m &* n &* k)
        let job = Job(out: c, ldo: ldc, rows: m, cols: n, k: k,
                      a: a, aRow: transA ? 1 : lda, aStep: transA ? lda : 1,
                      p: b, pRow: transB ? 1 : ldb, pCol: transB ? ldb : 1,
                      alpha: alpha, accumulate: beta == 1)
        Profile.measureSgemm(Profile.GemmShape(transA: transA, transB: transB, m: m, n: n, k: k, kernel: .lowRank)) {
            job.split(workers: workers)
        }
    }

    /// mid[n, r] = α·dy[n, N]·b[N, r] and g[N, r] += α·dyᵀ·xa[n, r]: the adapter's s·dy·B and
    /// its dB, both of which read all of dy. On one worker, one pass over dy (each block of it
    /// read from memory once, for both); on several, the two products apart, mid split by its
    /// rows and g by its rows (the same chains: the same bits). b and g rows are r apart.
    /// Wider than maxWidth: two sgemm calls.
    static func midAndGradient(mid: FPtr, ldm: Int, g: FPtr, dy: UnsafePointer<Float>, ldy: Int,
                               b: UnsafePointer<Float>, xa: UnsafePointer<Float>, ldxa: Int,
                               n: Int, N: Int, r: Int, alpha: Float, workers: Int = Parallel.workers) {
        let fused = r <= maxWidth && n > 0 && N > 0 && Parallel.parts(n, grain: grainRows(2 * r * N), workers: workers) <= 1
        guard fused else {
            gemm(m: n, n: r, k: N, alpha: alpha, a: dy, lda: ldy, b: b, ldb: r, c: mid, ldc: ldm, workers: workers)
            gemm(transA: true, m: N, n: r, k: n, alpha: alpha, a: dy, lda: ldy, b: xa, ldb: ldxa, beta: 1, c: g, ldc: r,
                 workers: workers)
            return
        }
        FlopCounter.add(2 &* (2 &* n &* r &* N))
        Profile.measureSgemm(Profile.GemmShape(transA: false, transB: false, m: n, n: r, k: N, kernel: .lowRankMidAndGradient)) {
            Fused(mid: mid, ldm: ldm, g: g, dy: dy, ldy: ldy, b: b, xa: xa, ldxa: ldxa, n: n, N: N, r: r, alpha: alpha).run()
        }
    }

    /// How a rows × cols output with chains of k is shared between workers: by rows when it has
    /// at least as many rows as columns, else by column vectors of 8; `units` of them, at least
    /// `grain` per worker.
    static func split(rows: Int, cols: Int, k: Int) -> (byRows: Bool, units: Int, grain: Int) {
        rows >= cols ? (true, rows, grainRows(2 * cols * k)) : (false, (cols + 7) / 8, grainRows(16 * rows * k))
    }

    /// How many parts `gemm` cuts an m × n output with chains of k into on `workers` threads.
    static func parts(m: Int, n: Int, k: Int, workers: Int) -> Int {
        let s = split(rows: m, cols: n, k: k)
        return Parallel.parts(s.units, grain: s.grain, workers: workers)
    }

    /// Rows (or column vectors) per worker so that each part is worth handing to a thread:
    /// at least 1/4 million multiply-adds. `perRow`: FLOPs of one row.
    static func grainRows(_ perRow: Int) -> Int { max(1, (1 << 19) / max(perRow, 1)) }
}

/// a·b + c on 8 lanes: one FMA instruction on Haswell; on the x86-64 baseline, which has none
/// (LLVM would call fmaf per lane), a multiply and an add.
@inline(__always)
private func fmadd(_ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>) -> SIMD8<Float> {
    #if LORA_DIST_TARGET_HASWELL
    return c.addingProduct(a, b)
    #else
    return a * b + c
    #endif
}

/// Lanes 0..<count of x (count ≤ 8), the others 0; and their store.
@inline(__always)
private func loadPart(_ x: UnsafePointer<Float>, _ count: Int) -> SIMD8<Float> {
    if count >= 8 { return load8(x, 0) }
    var v = SIMD8<Float>()
    for l in 0..<count { v[l] = x[l] }
    return v
}
@inline(__always)
private func storePart(_ v: SIMD8<Float>, _ x: FPtr, _ count: Int) {
    if count >= 8 { return store8(v, x, 0) }
    for l in 0..<count { x[l] = v[l] }
}

extension LowRank {
    /// out[i, c] (+)= Σ_k a(i, k)·α·p(k, c) over rows × cols, a(i, k) = a[i·aRow + k·aStep],
    /// p(k, c) = p[k·pRow + c·pCol].
    fileprivate struct Job {
        let out: FPtr, ldo: Int, rows: Int, cols: Int, k: Int
        let a: UnsafePointer<Float>, aRow: Int, aStep: Int
        let p: UnsafePointer<Float>, pRow: Int, pCol: Int
        let alpha: Float, accumulate: Bool

        /// Over `workers` threads (the calling thread alone when the output is too small to share).
        func split(workers: Int) {
            let (byRows, units, grain) = LowRank.split(rows: rows, cols: cols, k: k)
            Parallel.chunks(units, grain: grain, workers: workers) { u in
                if byRows {
                    run(rows: u, cols: 0..<cols)
                } else {
                    run(rows: 0..<rows, cols: (8 * u.lowerBound)..<min(cols, 8 * u.upperBound))
                }
            }
        }

        /// The part rows × cols (cols from a multiple of 8), chunk by chunk of columns, each
        /// k-block's panel packed once (or read in place: whole vectors, α = 1).
        func run(rows: Range<Int>, cols: Range<Int>) {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: LowRank.panelFloats) { buffer in
                let buf = buffer.baseAddress!
                var c0 = cols.lowerBound
                while c0 < cols.upperBound {
                    let width = min(cols.count <= LowRank.maxWidth ? cols.count : LowRank.chunkColumns, cols.upperBound - c0)
                    let padded = (width + 7) & ~7
                    let direct = pCol == 1 && alpha == 1 && width % 8 == 0
                    let kb = direct ? k : max(1, LowRank.panelFloats / padded)
                    var k0 = 0
                    while k0 < k {
                        let kc = min(kb, k - k0)
                        let panel: UnsafePointer<Float>, ldp: Int
                        if direct {
                            panel = p + k0 * pRow + c0
                            ldp = pRow
                        } else {
                            pack(buf, k0: k0, kc: kc, c0: c0, width: width, padded: padded)
                            panel = UnsafePointer(buf)
                            ldp = padded
                        }
                        let block = Block(job: self, k0: k0, kc: kc, panel: panel, ldp: ldp, start: k0 == 0)
                        // The columns in tiles of 2 vectors (all of them, up to 4, when narrow).
                        let tileVectors = width <= LowRank.maxWidth ? (width + 7) / 8 : 2
                        let end = c0 + width
                        func tiles(_ part: Range<Int>) {
                            var t = c0
                            while t < end {
                                block.rows(part, c0: t, panelColumn: t - c0, vectors: min(tileVectors, (end - t + 7) / 8))
                                t += 8 * tileVectors
                            }
                        }
                        // A long chain (midᵀ·x: k = the rows of x) keeps a column tile's strip of
                        // the panel hot across row tiles; a short one keeps rows of a(i, ·) hot
                        // across column tiles (24 rows: whole tiles of 8, 6, 4 or 3).
                        if kc > 128 || tileVectors * 8 >= width {
                            tiles(rows)
                        } else {
                            var i = rows.lowerBound
                            while i < rows.upperBound {
                                tiles(i..<min(i + 24, rows.upperBound))
                                i += 24
                            }
                        }
                        k0 += kc
                    }
                    c0 += width
                }
            }
        }

        /// panel[kk, cc] = α·p(k0 + kk, c0 + cc), zero in the padding columns.
        private func pack(_ panel: FPtr, k0: Int, kc: Int, c0: Int, width: Int, padded: Int) {
            if pCol == 1 {
                for kk in 0..<kc {
                    let src = p + (k0 + kk) * pRow + c0, dst = panel + kk * padded
                    for cc in 0..<width { dst[cc] = alpha * src[cc] }
                    for cc in width..<padded { dst[cc] = 0 }
                }
            } else {
                for kk in 0..<kc { for cc in width..<padded { panel[kk * padded + cc] = 0 } }
                for cc in 0..<width {
                    let src = p + k0 * pRow + (c0 + cc) * pCol
                    for kk in 0..<kc { panel[kk * padded + cc] = alpha * src[kk * pRow] }
                }
            }
        }
    }

    /// One k-block of a Job over a packed (or in-place) panel.
    fileprivate struct Block {
        let job: Job, k0: Int, kc: Int, panel: UnsafePointer<Float>, ldp: Int
        let start: Bool   // the first k-block: an output that does not accumulate starts from 0

        /// Rows `rows` of the column tile at c0 (`vectors` vectors of 8), in tiles of the most
        /// rows its accumulators fit in 12 registers, the rest in tiles of 4, 2, 1.
        @inline(__always)
        func rows(_ rows: Range<Int>, c0: Int, panelColumn: Int, vectors: Int) {
            switch vectors {
            case 1: Tile<8, 1>.rows(self, rows, c0: c0, pc: panelColumn)
            case 2: Tile<6, 2>.rows(self, rows, c0: c0, pc: panelColumn)
            case 3: Tile<4, 3>.rows(self, rows, c0: c0, pc: panelColumn)
            default: Tile<3, 4>.rows(self, rows, c0: c0, pc: panelColumn)
            }
        }
    }

    /// R rows × V vectors of 8 columns, accumulated in registers.
    fileprivate enum Tile<let R: Int, let V: Int> {
        typealias Vectors = InlineArray<V, SIMD8<Float>>

        @inline(__always)
        static func rows(_ b: Block, _ rows: Range<Int>, c0: Int, pc: Int) {
            var i = rows.lowerBound
            while i + R <= rows.upperBound { run(b, i0: i, c0: c0, pc: pc); i += R }
            if R > 4 && i + 4 <= rows.upperBound { Tile<4, V>.run(b, i0: i, c0: c0, pc: pc); i += 4 }
            if R > 2 && i + 2 <= rows.upperBound { Tile<2, V>.run(b, i0: i, c0: c0, pc: pc); i += 2 }
            while i < rows.upperBound { Tile<1, V>.run(b, i0: i, c0: c0, pc: pc); i += 1 }
        }

        /// out[i0 ..< i0+R, c0 ..< c0+8V (within cols)]: its chains over the block's k.
        @inline(__always)
        static func run(_ b: Block, i0: Int, c0: Int, pc: Int) {
            let j = b.job
            let valid = min(8 * V, j.cols - c0)
            var acc = InlineArray<R, Vectors>(repeating: Vectors(repeating: .zero))
            if j.accumulate || !b.start {
                for i in 0..<R {
                    for v in 0..<V where 8 * v < valid { acc[i][v] = loadPart(j.out + (i0 + i) * j.ldo + c0 + 8 * v, valid - 8 * v) }
                }
            }
            // The inner loop walks pointers with wrapping arithmetic and unchecked subscripts: no
            // overflow or bounds checks between the FMAs, the accumulators stay in registers.
            var a = j.a + i0 * j.aRow + b.k0 * j.aStep, p = b.panel + pc
            let aRow = j.aRow, aStep = j.aStep, ldp = b.ldp
            for _ in 0..<b.kc {
                var pv = Vectors(repeating: .zero)
                for v in 0..<V { pv[unchecked: v] = load8(p, 8 &* v) }
                for i in 0..<R {
                    let s = SIMD8<Float>(repeating: a[i &* aRow])
                    for v in 0..<V { acc[unchecked: i][unchecked: v] = fmadd(s, pv[unchecked: v], acc[unchecked: i][unchecked: v]) }
                }
                a += aStep
                p += ldp
            }
            for i in 0..<R {
                for v in 0..<V where 8 * v < valid { storePart(acc[i][v], j.out + (i0 + i) * j.ldo + c0 + 8 * v, valid - 8 * v) }
            }
        }
    }

    /// midAndGradient on one thread: dy in blocks of columns; for each, α·b's rows and g's rows
    /// of the block in panels, and every row tile of dy feeding both: mid's accumulators
    /// (registers) and g's (the panel, in L1).
    fileprivate struct Fused {
        let mid: FPtr, ldm: Int, g: FPtr, dy: UnsafePointer<Float>, ldy: Int
        let b: UnsafePointer<Float>, xa: UnsafePointer<Float>, ldxa: Int
        let n: Int, N: Int, r: Int, alpha: Float

        func run() {
            let rp = (r + 7) & ~7
            let cb = max(8, LowRank.panelFloats / (2 * rp))
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * cb * rp + 4 * rp) { buffer in
                let pb = buffer.baseAddress!, tg = pb + cb * rp, sx = tg + cb * rp
                var c0 = 0
                while c0 < N {
                    let cc = min(cb, N - c0)
                    for c in 0..<cc {
                        for j in 0..<rp {
                            pb[c * rp + j] = j < r ? alpha * b[(c0 + c) * r + j] : 0
                            tg[c * rp + j] = j < r ? g[(c0 + c) * r + j] : 0
                        }
                    }
                    let block = FusedBlock(f: self, c0: c0, cc: cc, pb: pb, tg: tg, sx: sx, rp: rp)
                    switch rp / 8 {
                    case 1: FusedTile<4, 1>.rows(block)
                    case 2: FusedTile<2, 2>.rows(block)
                    case 3: FusedTile<2, 3>.rows(block)
                    default: FusedTile<1, 4>.rows(block)
                    }
                    for c in 0..<cc { for j in 0..<r { g[(c0 + c) * r + j] = tg[c * rp + j] } }
                    c0 += cc
                }
            }
        }
    }

    fileprivate struct FusedBlock {
        let f: Fused, c0: Int, cc: Int, pb: UnsafePointer<Float>, tg: FPtr, sx: FPtr, rp: Int
    }

    fileprivate enum FusedTile<let R: Int, let V: Int> {
        typealias Vectors = InlineArray<V, SIMD8<Float>>

        @inline(__always)
        static func rows(_ b: FusedBlock) {
            var i = 0
            while i + R <= b.f.n { run(b, i0: i); i += R }
            while i < b.f.n { FusedTile<1, V>.run(b, i0: i); i += 1 }
        }

        /// Rows i0 ..< i0+R of dy, columns of the block: mid's chains go on over these columns,
        /// g's over these rows.
        @inline(__always)
        static func run(_ b: FusedBlock, i0: Int) {
            let f = b.f, rp = b.rp, valid = f.r
            // α·xa of the R rows, padded: what each dy element multiplies into g
            for i in 0..<R {
                for j in 0..<rp { b.sx[i * rp + j] = j < f.r ? f.alpha * f.xa[(i0 + i) * f.ldxa + j] : 0 }
            }
            var sx = InlineArray<R, Vectors>(repeating: Vectors(repeating: .zero))
            for i in 0..<R { for v in 0..<V { sx[i][v] = load8(b.sx, i * rp + 8 * v) } }
            var acc = InlineArray<R, Vectors>(repeating: Vectors(repeating: .zero))
            if b.c0 > 0 {
                for i in 0..<R {
                    for v in 0..<V where 8 * v < valid { acc[i][v] = loadPart(f.mid + (i0 + i) * f.ldm + 8 * v, valid - 8 * v) }
                }
            }
            // (as Tile.run: pointers, wrapping arithmetic, unchecked subscripts)
            var dy = f.dy + i0 * f.ldy + b.c0, pb = b.pb, tg = b.tg
            let ldy = f.ldy
            for _ in 0..<b.cc {
                var pv = Vectors(repeating: .zero), gv = Vectors(repeating: .zero)
                for v in 0..<V {
                    pv[unchecked: v] = load8(pb, 8 &* v)
                    gv[unchecked: v] = load8(tg, 8 &* v)
                }
                for i in 0..<R {
                    let s = SIMD8<Float>(repeating: dy[i &* ldy])
                    for v in 0..<V {
                        acc[unchecked: i][unchecked: v] = fmadd(s, pv[unchecked: v], acc[unchecked: i][unchecked: v])
                        gv[unchecked: v] = fmadd(s, sx[unchecked: i][unchecked: v], gv[unchecked: v])
                    }
                }
                for v in 0..<V { store8(gv[unchecked: v], tg, 8 &* v) }
                dy += 1
                pb += rp
                tg += rp
            }
            for i in 0..<R {
                for v in 0..<V where 8 * v < valid { storePart(acc[i][v], f.mid + (i0 + i) * f.ldm + 8 * v, valid - 8 * v) }
            }
        }
    }
}
