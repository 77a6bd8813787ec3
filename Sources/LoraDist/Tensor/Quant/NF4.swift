/// NF4 with double quantization, as QLoRA and bitsandbytes store a frozen base.
///
/// A tensor of `count` weights (row-major) is cut into blocks of 64; each block
/// keeps one absmax and sixteen-level codes of x / absmax on the NF4 code book,
/// two per byte (the first element in the high nibble). The absmax values are
/// themselves quantized ("double quantization"): their mean is the offset, and
/// absmax − offset is coded to 8 bits on bitsandbytes' signed dynamic code in
/// blocks of 256 with one fp32 scale each. In all 4 + 8/64 + 32/(64·256) ≈ 4.127
/// bits per weight. A tail that does not fill a block is a short block of its
/// own (its absmax covers only the real elements); the padding nibble of an odd
/// count codes 0.0, as bitsandbytes pads, and is never read. Every rounding step
/// follows bitsandbytes 0.50 on CPU, so the bytes are the same as its
/// quantize_4bit(quant_type="nf4", blocksize=64, compress_statistics=True) (NF4Tests).
///
/// Bytes of one tensor, each part 4-byte aligned (`NF4Layout`):
///   codes [ceil(count/2)] u8 · absmaxQ [blocks] u8 · absmax2 [blocks2] f32 · offset f32
public struct NF4Layout: Equatable {
    public static let blockSize = 64
    public static let scaleBlockSize = 256

    public let count: Int
    public var blocks: Int { (count + Self.blockSize - 1) / Self.blockSize }
    public var scaleBlocks: Int { (blocks + Self.scaleBlockSize - 1) / Self.scaleBlockSize }
    public var codeBytes: Int { (count + 1) / 2 }
    /// Elements added to fill the last block: recorded, never stored as codes.
    public var padding: Int { blocks * Self.blockSize - count }

    var absmaxQOffset: Int { align(codeBytes) }
    var absmax2Offset: Int { absmaxQOffset + align(blocks) }
    var offsetOffset: Int { absmax2Offset + 4 * scaleBlocks }
    public var bytes: Int { offsetOffset + 4 }
    /// The storage as a number of fp32 slots (the parameter arena counts in floats).
    public var slotFloats: Int { bytes / 4 }
    public var bitsPerWeight: Double { Double(8 * bytes) / Double(max(count, 1)) }

    public init(count: Int) { self.count = count }
    private func align(_ n: Int) -> Int { (n + 3) & ~3 }
}

/// A view of one NF4 tensor's bytes.
public struct NF4Tensor {
    public let layout: NF4Layout
    public let base: UnsafeMutableRawPointer

    public init(count: Int, base: UnsafeMutableRawPointer) {
        layout = NF4Layout(count: count)
        self.base = base
    }

    public var codes: UnsafeMutablePointer<UInt8> { base.assumingMemoryBound(to: UInt8.self) }
    public var absmaxQ: UnsafeMutablePointer<UInt8> { (base + layout.absmaxQOffset).assumingMemoryBound(to: UInt8.self) }
    public var absmax2: UnsafeMutablePointer<Float> { (base + layout.absmax2Offset).assumingMemoryBound(to: Float.self) }
    public var offset: UnsafeMutablePointer<Float> { (base + layout.offsetOffset).assumingMemoryBound(to: Float.self) }

    /// Quantizes `count` floats from `x` into this tensor's bytes.
    /// `absmax` is scratch for `layout.blocks` floats.
    public func quantize(_ x: UnsafePointer<Float>) {
        let n = layout.count, bs = NF4Layout.blockSize, nb = layout.blocks
        codes.initialize(repeating: 0, count: layout.codeBytes)
        if n & 1 == 1 { codes[n >> 1] = NF4.zeroCode }   // the padding nibble (low) of an odd count
        let absmax = UnsafeMutablePointer<Float>.allocate(capacity: max(nb, 1))
        defer { absmax.deallocate() }
        for b in 0..<nb {
            let lo = b * bs, hi = min(lo + bs, n)
            var m: Float = 0
            for i in lo..<hi { m = Swift.max(m, abs(x[i])) }
            // bitsandbytes: a full block multiplies by the rounded reciprocal and keeps
            // its absmax (0 for a zero block); the short last block divides and keeps the clamp.
            if hi - lo == bs {
                absmax[b] = m
                let inv = 1 / Swift.max(m, 1e-38)
                for i in lo..<hi { put(i, NF4.encode(Swift.min(Swift.max(x[i] * inv, -1), 1))) }
            } else {
                let a = Swift.max(m, 1e-38)
                absmax[b] = a
                for i in lo..<hi { put(i, NF4.encode(Swift.min(Swift.max(x[i] / a, -1), 1))) }
            }
        }
        // Double quantization of the absmax values around their mean.
        let mean = NF4.torchMean(absmax, nb)
        offset.pointee = mean
        for s in 0..<layout.scaleBlocks {
            let lo = s * NF4Layout.scaleBlockSize, hi = min(lo + NF4Layout.scaleBlockSize, nb)
            var m: Float = 0
            for b in lo..<hi { m = Swift.max(m, abs(absmax[b] - mean)) }
            absmax2[s] = m
            guard m > 0 else { for b in lo..<hi { absmaxQ[b] = 0 }; continue }
            let inv = 1 / m
            for b in lo..<hi { absmaxQ[b] = NF4.encodeDynamic(Swift.min(Swift.max((absmax[b] - mean) * inv, -1), 1)) }
        }
    }

    @inline(__always)
    private func put(_ i: Int, _ q: UInt8) {
        codes[i >> 1] |= (i & 1 == 0) ? q << 4 : q
    }

    /// The absmax of block `b` as double quantization restores it.
    @inline(__always)
    public func absmax(_ b: Int) -> Float {
        let scaled = NF4.dynamicPointer[Int(absmaxQ[b])] * absmax2[b / NF4Layout.scaleBlockSize]  // rounded, then + offset
        return scaled + offset.pointee
    }

    /// Dequantizes elements `range` (row-major) into `out[0 ..< range.count]`.
    public func dequantize(_ range: Range<Int>, into out: FPtr) {
        let bs = NF4Layout.blockSize
        var i = range.lowerBound
        let end = range.upperBound
        let codes = self.codes, pairs = NF4.pairs, code = NF4.codePointer
        while i < end {
            let b = i / bs
            let blockEnd = Swift.min((b + 1) * bs, end)
            let am = absmax(b)
            var o = out + (i - range.lowerBound)
            if i & 1 == 1 {  // odd start: the low nibble of a byte
                o.pointee = code[Int(codes[i >> 1] & 0xF)] * am
                o += 1; i += 1
            }
            // Two elements per byte from a 256-entry table of (high, low) pairs.
            let c = codes + (i >> 1)
            let bytes = (blockEnd - i) >> 1
            for j in 0..<bytes {
                let p = Int(c[j]) &* 2
                o[2 &* j] = pairs[p] * am
                o[2 &* j &+ 1] = pairs[p &+ 1] * am
            }
            i += 2 * bytes
            o += 2 * bytes
            if i < blockEnd {
                o.pointee = code[Int(codes[i >> 1] >> 4)] * am
                i += 1
            }
        }
    }

    public func dequantized() -> [Float] {
        [Float](unsafeUninitializedCapacity: layout.count) { buf, n in
            if layout.count > 0 { dequantize(0..<layout.count, into: buf.baseAddress!) }
            n = layout.count
        }
    }
}

public enum NF4 {
    /// The NF4 code book (QLoRA, Appendix E; bitsandbytes' values).
    public static let code: [Float] = [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ]

    /// (high, low) values of every byte: pairs[2b], pairs[2b + 1]. The tables live
    /// behind plain pointers (allocated once, never freed) so the dequantization loop
    /// reads them without array bounds checks or retains.
    static let pairs: UnsafePointer<Float> = table((0..<256).flatMap { [code[$0 >> 4], code[$0 & 0xF]] })
    static let codePointer: UnsafePointer<Float> = table(code)
    static let dynamicPointer: UnsafePointer<Float> = table(NF4DynamicCode.values)

    private static func table(_ values: [Float]) -> UnsafePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: values.count)
        p.initialize(from: values, count: values.count)
        return UnsafePointer(p)
    }

    /// Boundaries halfway between neighbouring code values.
    static let midpoints: [Float] = (0..<15).map { (code[$0] + code[$0 + 1]) / 2 }

    /// The index of the nearest code value (the lower one on a tie).
    @inline(__always)
    static func encode(_ v: Float) -> UInt8 {
        var q: UInt8 = 0
        for m in midpoints where v > m { q += 1 }
        return q
    }

    /// The code of 0.0, which pads an odd count (high nibble of the last byte is data).
    static let zeroCode: UInt8 = 7

    /// bitsandbytes' signed dynamic 8-bit code (create_dynamic_map(signed=True)).
    public static let dynamicCode: [Float] = NF4DynamicCode.values

    /// bitsandbytes codes v ∈ [−1, 1] on the dynamic code through a table of 65536
    /// entries over a uniform grid, not by exact nearest value; the grid rounds a few
    /// values to the neighbour code, and we must round them the same way.
    static let dynamicTable: [UInt8] = {
        let c = dynamicCode
        let mids = (0..<(c.count - 1)).map { (c[$0] + c[$0 + 1]) * 0.5 }
        var j = 0   // mids and the grid both ascend: count the midpoints below each grid value
        return (0..<65536).map { i in
            let g = Float(2 * i) / 65535 - 1
            while j < mids.count && mids[j] < g { j += 1 }
            return UInt8(j)
        }
    }()

    @inline(__always)
    static func encodeDynamic(_ v: Float) -> UInt8 {
        let t = (v + 1) * 0.5
        return dynamicTable[Int((0.5 as Float).addingProduct(t, 65535))]  // fmaf, truncated, as the C kernel
    }

    /// torch.mean of a float32 CPU tensor as one thread computes it (bitsandbytes takes
    /// the offset this way): a cascade sum over 8 lanes × 4 accumulators, then / n.
    /// The order of the additions decides the last bit, and the last bit can move an
    /// absmax code, so the order is copied, not approximated.
    static func torchMean(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
        guard n > 0 else { return 0 }
        let W = 8
        if n < W {
            var p: [Float] = [0, 0, 0, 0]
            for k in 0..<n { p[k < 4 * (n / 4) ? k % 4 : 0] += a[k] }
            return (((p[0] + p[1]) + p[2]) + p[3]) / Float(n)
        }
        let vs = n / W, size = vs / 4
        let sm1 = Swift.max(size - 1, 0)
        let lp = Swift.max(4, (Int.bitWidth - sm1.leadingZeroBitCount) / 4)
        // acc[level][ilp][lane]
        var acc = [Float](repeating: 0, count: 4 * 4 * W)
        func addRows(_ i: Int) {       // rows 4i ..< 4i+4 of the [vs, 8] view into level 0
            for r in 0..<4 { for l in 0..<W { acc[r * W + l] += a[(4 * i + r) * W + l] } }
        }
        var i = 0
        while i + (1 << lp) <= size {
            for _ in 0..<(1 << lp) { addRows(i); i += 1 }
            for j in 1..<4 {
                for e in 0..<(4 * W) { acc[j * 4 * W + e] += acc[(j - 1) * 4 * W + e]; acc[(j - 1) * 4 * W + e] = 0 }
                if i & (((1 << lp) - 1) << (j * lp)) != 0 { break }
            }
        }
        while i < size { addRows(i); i += 1 }
        var p0 = [Float](repeating: 0, count: 4 * W)
        for e in 0..<(4 * W) { p0[e] = ((acc[e] + acc[4 * W + e]) + acc[8 * W + e]) + acc[12 * W + e] }
        for r in (4 * size)..<vs { for l in 0..<W { p0[l] += a[r * W + l] } }
        var s: Float = 0
        for k in (vs * W)..<n { s += a[k] }
        for l in 0..<W { s += ((p0[l] + p0[W + l]) + p0[2 * W + l]) + p0[3 * W + l] }
        return s / Float(n)
    }
}
