import Foundation
import Testing
@testable import LoraDist

/// NF4 with double quantization against bitsandbytes' CPU implementation
/// (fixtures from tools/make_nf4_fixtures.py, Tests/Fixtures/nf4/): the packed codes,
/// the 8-bit absmax codes, the second-level scales and the offset must be identical;
/// dequantized values within float rounding (1e-6 relative to the tensor's absmax).
@Suite struct NF4Tests {
    static let fixture = TestPaths.fixtures + "/nf4/nf4.safetensors"

    static func quantized(_ x: [Float]) -> (NF4Tensor, UnsafeMutableRawPointer) {
        let layout = NF4Layout(count: x.count)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: layout.bytes, alignment: 16)
        let q = NF4Tensor(count: x.count, base: raw)
        x.withUnsafeBufferPointer { q.quantize($0.baseAddress!) }
        return (q, raw)
    }

    @Test func codeBooksMatchBitsandbytes() throws {
        let st = try SafeTensors(path: Self.fixture)
        #expect(try st.floats("nf4_code") == NF4.code)
        let dq = try st.floats("dq_code")
        #expect(dq.map(\.bitPattern) == NF4.dynamicCode.map(\.bitPattern))
    }

    @Test(arguments: ["w1", "w2", "w3"])
    func quantizeMatchesBitsandbytes(_ name: String) throws {
        let st = try SafeTensors(path: Self.fixture)
        let x = try st.floats(name + ".weight")
        let (q, raw) = Self.quantized(x)
        defer { raw.deallocate() }
        let l = q.layout
        let codes = try st.ints(name + ".codes"), absmaxQ = try st.ints(name + ".absmax_q")
        #expect(codes.count == l.codeBytes, "packed bytes")
        #expect(absmaxQ.count == l.blocks, "blocks")
        let ourCodes = (0..<l.codeBytes).map { Int(q.codes[$0]) }
        let mismatches = zip(ourCodes, codes).filter { $0 != $1 }.count
        #expect(mismatches == 0, "\(mismatches) of \(codes.count) code bytes differ")
        #expect((0..<l.blocks).map { Int(q.absmaxQ[$0]) } == absmaxQ)
        let absmax2 = try st.floats(name + ".absmax2")
        #expect(absmax2.count == l.scaleBlocks)
        #expect((0..<l.scaleBlocks).map { q.absmax2[$0].bitPattern } == absmax2.map(\.bitPattern))
        #expect(q.offset.pointee.bitPattern == (try st.floats(name + ".offset"))[0].bitPattern)
        let ref = try st.floats(name + ".dequant")
        let ours = q.dequantized()
        #expect(relativeError(ours, ref) <= 1e-6)
    }

    /// Dequantizing any sub-range (odd starts, ends inside a block) gives the same values as the whole.
    @Test func rangesAgreeWithWhole() throws {
        var g = SplitMix64(seed: 3)
        let x = (0..<(7 * 45)).map { _ in g.normal() }     // 315: a short last block, an odd count
        let (q, raw) = Self.quantized(x)
        defer { raw.deallocate() }
        let whole = q.dequantized()
        #expect(q.layout.padding == 5 * 64 - 315)
        for r in [0..<315, 1..<2, 63..<65, 5..<300, 314..<315, 256..<315] {
            var part = [Float](repeating: .nan, count: r.count)
            part.withUnsafeMutableBufferPointer { q.dequantize(r, into: $0.baseAddress!) }
            #expect(part == Array(whole[r]), "range \(r)")
        }
        // Quantization error stays within half the widest NF4 gap of each block's absmax.
        for (a, b) in zip(x, whole) { #expect(abs(a - b) <= 0.16 * 3.5) }
    }

    /// The storage: 4.127 bits per weight once the tensor is large.
    @Test func bitsPerWeight() {
        let l = NF4Layout(count: 4096 * 4096)
        #expect(abs(l.bitsPerWeight - 4.127) < 0.001)
        #expect(NF4Layout(count: 1).bytes == 16)   // one nibble, one absmax code, one scale, one offset: aligned
    }

    /// A Linear over an NF4 weight computes x·dequant(W)ᵀ forward and dy·dequant(W) backward,
    /// also when the weight is cut into several tiles.
    @Test func matmulOverTiles() {
        let n = 5, inDim = 70, outDim = 33
        var g = SplitMix64(seed: 9)
        let w = (0..<(outDim * inDim)).map { _ in g.normal() }
        let x = (0..<(n * inDim)).map { _ in g.normal() }, dy = (0..<(n * outDim)).map { _ in g.normal() }
        let (q, raw) = Self.quantized(w)
        defer { raw.deallocate() }
        let wd = FloatBuffer(q.dequantized())
        let xb = FloatBuffer(x), dyb = FloatBuffer(dy)
        let yRef = FloatBuffer(n * outDim), dxRef = FloatBuffer(n * inDim)
        Matmul.forward(y: yRef.ptr, x: xb.ptr, w: wd.ptr, n: n, inDim: inDim, outDim: outDim)
        Matmul.backward(dx: dxRef.ptr, dw: nil, dy: dyb.ptr, x: xb.ptr, w: wd.ptr, n: n, inDim: inDim, outDim: outDim)
        for floats in [inDim * 4, 1 << 20] {   // 4 rows per tile (9 tiles), and one tile
            let scratch = NF4Matmul.Scratch(floats: floats)
            let y = FloatBuffer(n * outDim), dx = FloatBuffer(n * inDim)
            NF4Matmul.forward(y: y.ptr, x: xb.ptr, w: q, n: n, inDim: inDim, outDim: outDim, scratch: scratch)
            NF4Matmul.backwardInput(dx: dx.ptr, dy: dyb.ptr, w: q, n: n, inDim: inDim, outDim: outDim,
                                    accumulate: false, scratch: scratch)
            #expect(relativeError(y.array, yRef.array) < 1e-5)
            #expect(relativeError(dx.array, dxRef.array) < 1e-5)
        }
    }
}
