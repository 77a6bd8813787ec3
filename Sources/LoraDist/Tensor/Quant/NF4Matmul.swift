/// The linear kernel over an NF4 weight W[out, in]: rows of W are dequantized a
/// tile at a time into one reusable buffer, and each tile goes to sgemm like an
/// fp32 weight would. The weight is frozen, so there is no dW; the backward only
/// needs the input gradient through Wᵀ.
public enum NF4Matmul {
    /// Tiles hold at most this many floats (4 MiB): big enough that sgemm runs at
    /// full speed on them, small enough to stay out of the way of the activations.
    static let tileFloats = 1 << 20

    /// The dequantization buffer one model's projections share (they run one at a time), or its
    /// lane of the tiles the rank's model replicas share (TileShare).
    public final class Scratch {
        let buffer: FloatBuffer
        let share: TileShare?
        let lane: Int

        public init(floats: Int) { buffer = FloatBuffer(floats); share = nil; lane = 0 }

        init(share: TileShare, lane: Int) {
            buffer = share.buffers[0]
            self.share = share
            self.lane = lane
        }

        convenience init(config c: ModelConfig) { self.init(floats: Self.floats(config: c)) }

        static func floats(config c: ModelConfig) -> Int {
            max(NF4Matmul.tileFloats, c.hiddenSize, c.intermediateSize, c.numAttentionHeads * c.headDim)
        }

        /// Rows `rows` of W dequantized: into this model's buffer, or within a pass of its
        /// TileShare into the buffer the lanes share, each lane doing its part.
        func tile(_ w: NF4Tensor, rows: Range<Int>, inDim: Int) -> UnsafePointer<Float> {
            if let share, share.lanes > 1 { return share.tile(w, rows: rows, inDim: inDim, lane: lane) }
            precondition(lane == 0, "a model replica's NF4 product outside a pass of its TileShare")
            dequantize(w, rows: rows, inDim: inDim, into: buffer.ptr)
            return UnsafePointer(buffer.ptr)
        }

        /// The sgemm is done with the last tile (a shared buffer goes back to the lanes).
        func release() {
            if let share, share.lanes > 1 { share.release(lane: lane) }
        }
    }

    /// Rows of W per tile for a weight with `inDim` columns.
    static func tileRows(inDim: Int, outDim: Int, scratch: Scratch) -> Int {
        max(1, min(outDim, scratch.buffer.count / inDim))
    }

    /// Rows `rows` of W into out, split over the rank's cores.
    static func dequantize(_ w: NF4Tensor, rows: Range<Int>, inDim: Int, into out: FPtr) {
        Profile.measure(.dequantize) {
            Parallel.chunks(rows.count, grain: 8) { part in
                let first = (rows.lowerBound + part.lowerBound) * inDim
                w.dequantize(first..<(rows.lowerBound + part.upperBound) * inDim, into: out + part.lowerBound * inDim)
            }
        }
    }

    /// y[n, out] = x[n, in] · W[out, in]ᵀ; rows of y `ldy` apart (default out)
    public static func forward(y: FPtr, x: UnsafePointer<Float>, w: NF4Tensor, n: Int, inDim: Int, outDim: Int,
                               scratch: Scratch, ldy: Int? = nil) {
        let rows = tileRows(inDim: inDim, outDim: outDim, scratch: scratch)
        var o0 = 0
        while o0 < outDim {
            let o1 = min(o0 + rows, outDim)
            let tile = scratch.tile(w, rows: o0..<o1, inDim: inDim)
            // y[:, o0..<o1] = x · W[o0..<o1]ᵀ
            sgemm(transB: true, m: n, n: o1 - o0, k: inDim, a: x, lda: inDim, b: tile, ldb: inDim,
                  c: y + o0, ldc: ldy ?? outDim)
            scratch.release()
            o0 = o1
        }
    }

    /// dx[n, in] (+)= dy[n, out] · W[out, in]; rows of dy `ldy` apart (default out)
    public static func backwardInput(dx: FPtr, dy: UnsafePointer<Float>, w: NF4Tensor, n: Int, inDim: Int,
                                     outDim: Int, accumulate: Bool, scratch: Scratch, ldy: Int? = nil) {
        let rows = tileRows(inDim: inDim, outDim: outDim, scratch: scratch)
        var o0 = 0
        while o0 < outDim {
            let o1 = min(o0 + rows, outDim)
            let tile = scratch.tile(w, rows: o0..<o1, inDim: inDim)
            // dx += dy[:, o0..<o1] · W[o0..<o1]; the first tile overwrites unless accumulating
            sgemm(m: n, n: inDim, k: o1 - o0, a: dy + o0, lda: ldy ?? outDim, b: tile, ldb: inDim,
                  beta: (o0 == 0 && !accumulate) ? 0 : 1, c: dx, ldc: inDim)
            scratch.release()
            o0 = o1
        }
    }
}
