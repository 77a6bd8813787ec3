import Foundation
import Testing
@testable import LoraDist

/// Model replicas sharing dequantized NF4 tiles (NF4Matmul.TileShare) compute exactly what each
/// computes with a tile buffer of its own: the same tiles, the same values, the same sgemm calls.
@Suite struct NF4TileShareTests {
    /// A weight of `out` × `inDim` normal values as NF4 (an odd count: a short last block).
    static func weight(out: Int, inDim: Int, seed: UInt64) -> (NF4Tensor, UnsafeMutableRawPointer) {
        var g = SplitMix64(seed: seed)
        let x = (0..<(out * inDim)).map { _ in g.normal() }
        let layout = NF4Layout(count: x.count)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: layout.bytes, alignment: 16)
        let q = NF4Tensor(count: x.count, base: raw)
        x.withUnsafeBufferPointer { q.quantize($0.baseAddress!) }
        return (q, raw)
    }

    static func random(_ count: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<count).map { _ in g.normal() }
    }

    /// What one lane computes: two weights, forward and input gradient (overwriting and
    /// accumulating), in the order a layer's forward and backward meet them; returns its outputs.
    static func products(w1: NF4Tensor, w2: NF4Tensor, lane: Int, scratch: NF4Matmul.Scratch) -> [Float] {
        let n = 3 + lane, i1 = 71, o1 = 301, o2 = 45   // w1 [301, 71], w2 [45, 301]
        let x = random(n * i1, seed: 10 + UInt64(lane)), dy = random(n * o2, seed: 20 + UInt64(lane))
        var h = [Float](repeating: 0, count: n * o1), y = [Float](repeating: 0, count: n * o2)
        var dh = [Float](repeating: 0, count: n * o1), dx = random(n * i1, seed: 30 + UInt64(lane))
        NF4Matmul.forward(y: &h, x: x, w: w1, n: n, inDim: i1, outDim: o1, scratch: scratch)
        NF4Matmul.forward(y: &y, x: h, w: w2, n: n, inDim: o1, outDim: o2, scratch: scratch)
        NF4Matmul.backwardInput(dx: &dh, dy: dy, w: w2, n: n, inDim: o1, outDim: o2, accumulate: false, scratch: scratch)
        NF4Matmul.backwardInput(dx: &dx, dy: dh, w: w1, n: n, inDim: i1, outDim: o1, accumulate: true, scratch: scratch)
        return h + y + dh + dx
    }

    @Test("lanes sharing tiles compute what each computes alone, bit for bit", arguments: [2, 3])
    func sharedEqualsPrivate(lanes: Int) throws {
        let (w1, r1) = Self.weight(out: 301, inDim: 71, seed: 1), (w2, r2) = Self.weight(out: 45, inDim: 301, seed: 2)
        defer { r1.deallocate(); r2.deallocate() }
        // Tiles of 40 rows of w1 (8 tiles, the last short: chunks of 8 rows) and 9 of w2 (5 tiles,
        // chunks of 8 and 1 rows, or one of 1 row): several tiles per product, each cut in chunks.
        let floats = 40 * 71
        #expect(NF4Matmul.tileRows(inDim: 301, outDim: 45, scratch: NF4Matmul.Scratch(floats: floats)) == 9)
        let alone = (0..<lanes).map { Self.products(w1: w1, w2: w2, lane: $0, scratch: NF4Matmul.Scratch(floats: floats)) }

        let share = NF4Matmul.TileShare(floats: floats, lanes: lanes)
        let scratches = (0..<lanes).map { share.scratch(lane: $0) }
        let threads = ReplicaThreads(extra: lanes - 1)
        let results = UnsafeMutablePointer<[Float]>.allocate(capacity: lanes)
        results.initialize(repeating: [], count: lanes)
        defer { results.deinitialize(count: lanes); results.deallocate() }
        for round in 0..<2 {  // a second pass starts from tile 0 again
            share.pass(lanes: lanes) {
                threads.run { lane in
                    // In the second round the last lane starts late: the others run through every
                    // buffer (26 tiles, 4 buffers) and wait for it to hand them back.
                    if round == 1 && lane == lanes - 1 { usleep(20_000) }
                    results[lane] = Self.products(w1: w1, w2: w2, lane: lane, scratch: scratches[lane])
                }
            }
            for lane in 0..<lanes {
                #expect(results[lane].map(\.bitPattern) == alone[lane].map(\.bitPattern), "round \(round), lane \(lane)")
            }
        }
        #expect(share.sharedTiles == 2 * 2 * (8 + 5))  // rounds × (forward + backward) × tiles
        // Outside a pass lane 0 is a model of its own again (evaluation, generation).
        #expect(Self.products(w1: w1, w2: w2, lane: 0, scratch: scratches[0]).map(\.bitPattern) == alone[0].map(\.bitPattern))
        #expect(share.sharedTiles == 2 * 2 * (8 + 5))
    }

    /// A pass with one lane (a micro-batch of one sequence on a rank with replicas) is lane 0 alone.
    @Test func oneLanePassIsPrivate() throws {
        let (w1, r1) = Self.weight(out: 301, inDim: 71, seed: 1), (w2, r2) = Self.weight(out: 45, inDim: 301, seed: 2)
        defer { r1.deallocate(); r2.deallocate() }
        let share = NF4Matmul.TileShare(floats: 40 * 71, lanes: 2)
        let alone = Self.products(w1: w1, w2: w2, lane: 0, scratch: NF4Matmul.Scratch(floats: 40 * 71))
        let got = share.pass(lanes: 1) { Self.products(w1: w1, w2: w2, lane: 0, scratch: share.scratch(lane: 0)) }
        #expect(got.map(\.bitPattern) == alone.map(\.bitPattern))
        #expect(share.sharedTiles == 0)
    }
}
