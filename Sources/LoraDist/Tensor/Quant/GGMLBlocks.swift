import Foundation

// ggml's block-quantized tensor types and their dequantization to fp32. The GGUF parser
// (Formats/GGUF.swift) finds the bytes; this file knows what they mean.

/// A ggml tensor type: its number in the file, name and block layout
/// (`blockSize` elements stored in `blockBytes` bytes).
public struct GGMLType: Equatable, CustomStringConvertible {
    public let rawValue: UInt32
    public let name: String
    public let blockSize: Int
    public let blockBytes: Int
    public var description: String { name }

    /// Every type ggml defines (ggml.c type_traits). Numbers 4, 5, 31–33 and 36–38 are retired.
    static let known: [UInt32: (String, Int, Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
        18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
        34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36),
        41: ("Q1_0", 128, 18),
    ]

    /// The types `GGUFFile.dequantize` turns into fp32: those with a kernel below.
    public static let dequantizable: Set<String> = Set(Dequant.kernels.keys)

    init?(rawValue: UInt32) {
        guard let (n, bs, bb) = Self.known[rawValue] else { return nil }
        self.rawValue = rawValue
        name = n
        blockSize = bs
        blockBytes = bb
    }

    public static func named(_ name: String) -> GGMLType? {
        guard let raw = known.first(where: { $0.value.0 == name })?.key else { return nil }
        return GGMLType(rawValue: raw)
    }

    public var isDequantizable: Bool { Self.dequantizable.contains(name) }
}

/// Block dequantizers, written after ggml-quants.c (dequantize_row_*): each turns
/// `blocks` consecutive blocks at `src` into blockSize·blocks floats at `dst`.
enum Dequant {
    typealias Kernel = (UnsafeRawPointer, FPtr, Int) -> Void

    /// Every type with a kernel, by ggml name.
    static let kernels: [String: Kernel] = [
        "F32": f32, "F16": f16, "BF16": bf16, "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1, "Q8_0": q8_0,
        "Q2_K": q2_K, "Q3_K": q3_K, "Q4_K": q4_K, "Q5_K": q5_K, "Q6_K": q6_K,
    ]

    static func kernel(_ t: GGMLType) -> Kernel? { kernels[t.name] }

    /// Writes fp32 values of elements `elements` of a tensor of type `t` whose blocks start at
    /// `src`, in ggml's linear order, to `out[0..<elements.count]`. Only the blocks that hold
    /// those elements are read; a block cut by either end goes through a one-block scratch.
    static func elements(_ elements: Range<Int>, of t: GGMLType, at src: UnsafeRawPointer, kernel: Kernel, into out: FPtr) {
        if elements.isEmpty { return }
        let bs = t.blockSize, bb = t.blockBytes
        var e = elements.lowerBound, o = out
        let end = elements.upperBound
        var scratch: [Float] = []
        while e < end {
            let block = e / bs, inBlock = e % bs
            if inBlock == 0 && end - e >= bs {
                let blocks = (end - e) / bs
                kernel(src + block * bb, o, blocks)
                e += blocks * bs
                o += blocks * bs
            } else {
                if scratch.isEmpty { scratch = [Float](repeating: 0, count: bs) }
                let n = min(bs - inBlock, end - e)
                scratch.withUnsafeMutableBufferPointer { s in
                    kernel(src + block * bb, s.baseAddress!, 1)
                    o.update(from: s.baseAddress! + inBlock, count: n)
                }
                e += n
                o += n
            }
        }
    }

    /// `block(p, y)` for each of `n` blocks: p its `bytes` bytes at `s`, y its `values` outputs at `d`.
    @inline(__always) static func each(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int, bytes: Int, values: Int,
                                       _ block: (UnsafeRawPointer, FPtr) -> Void) {
        for b in 0..<n { block(s + bytes * b, d + values * b) }
    }

    @inline(__always) static func half(_ p: UnsafeRawPointer, _ off: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: off, as: UInt16.self))))
    }

    static func f32(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        UnsafeMutableRawPointer(d).copyMemory(from: s, byteCount: 4 * n)  // little-endian hosts only
    }

    static func f16(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for i in 0..<n { d[i] = half(s, 2 * i) }
    }

    static func bf16(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        for i in 0..<n {
            d[i] = Float(bitPattern: UInt32(UInt16(littleEndian: s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
        }
    }

    /// d: f16, qs: 16 bytes of 4-bit values; x = (q − 8)·d; low nibbles are the first 16.
    static func q4_0(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        each(s, d, n, bytes: 18, values: 32) { p, y in
            let scale = half(p, 0)
            let q = (p + 2).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                y[j] = Float(Int(q[j] & 0x0F) - 8) * scale
                y[j + 16] = Float(Int(q[j] >> 4) - 8) * scale
            }
        }
    }

    /// d, m: f16; x = q·d + m.
    static func q4_1(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        each(s, d, n, bytes: 20, values: 32) { p, y in
            let scale = half(p, 0), m = half(p, 2)
            let q = (p + 4).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                y[j] = Float(q[j] & 0x0F) * scale + m
                y[j + 16] = Float(q[j] >> 4) * scale + m
            }
        }
    }

    /// d: f16, qh: 32 high bits, qs: 16 bytes; x = (q5 − 16)·d.
    static func q5_0(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        each(s, d, n, bytes: 22, values: 32) { p, y in
            let scale = half(p, 0)
            let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            let q = (p + 6).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let h0 = ((qh >> UInt32(j)) << 4) & 0x10, h1 = (qh >> UInt32(j + 12)) & 0x10
                y[j] = Float(Int32(UInt32(q[j] & 0x0F) | h0) - 16) * scale
                y[j + 16] = Float(Int32(UInt32(q[j] >> 4) | h1) - 16) * scale
            }
        }
    }

    /// d, m: f16, qh, qs; x = q5·d + m.
    static func q5_1(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        each(s, d, n, bytes: 24, values: 32) { p, y in
            let scale = half(p, 0), m = half(p, 2)
            let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            let q = (p + 8).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let h0 = ((qh >> UInt32(j)) << 4) & 0x10, h1 = (qh >> UInt32(j + 12)) & 0x10
                y[j] = Float(UInt32(q[j] & 0x0F) | h0) * scale + m
                y[j + 16] = Float(UInt32(q[j] >> 4) | h1) * scale + m
            }
        }
    }

    /// d: f16, qs: 32 int8; x = q·d.
    static func q8_0(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        each(s, d, n, bytes: 34, values: 32) { p, y in
            let scale = half(p, 0)
            let q = (p + 2).assumingMemoryBound(to: Int8.self)
            for j in 0..<32 { y[j] = Float(q[j]) * scale }
        }
    }

    /// scales[16] (4-bit scale | 4-bit min), qs[64] (2-bit), d, dmin: f16.
    static func q2_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        each(s, d, n, bytes: 84, values: 256) { p, out in
            var y = out
            let sc = p.assumingMemoryBound(to: UInt8.self)
            var q = (p + 16).assumingMemoryBound(to: UInt8.self)
            let dall = half(p, 80), dmin = half(p, 82)
            var i = 0
            for _ in 0..<2 {
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half16 in 0..<2 {
                        let v = sc[i]; i += 1
                        let dl = dall * Float(v & 0x0F), ml = dmin * Float(v >> 4)
                        for l in 0..<16 { y[l] = dl * Float((q[l + 16 * half16] >> shift) & 3) - ml }
                        y += 16
                    }
                    shift += 2
                }
                q += 32
            }
        }
    }

    /// hmask[32], qs[64], scales[12] (6-bit, packed), d: f16.
    static func q3_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        let kmask1: UInt32 = 0x0303_0303, kmask2: UInt32 = 0x0f0f_0f0f
        each(s, d, n, bytes: 110, values: 256) { p, out in
            var y = out
            let hm = p.assumingMemoryBound(to: UInt8.self)
            var q = (p + 32).assumingMemoryBound(to: UInt8.self)
            let dall = half(p, 108)
            var a0 = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 96, as: UInt32.self))
            var a1 = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 100, as: UInt32.self))
            let tmp = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 104, as: UInt32.self))
            let a2 = ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4)
            let a3 = ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
            a0 = (a0 & kmask2) | (((tmp >> 0) & kmask1) << 4)
            a1 = (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4)
            let words = [a0, a1, a2, a3]
            var scales = [Int8](repeating: 0, count: 16)
            for k in 0..<16 { scales[k] = Int8(bitPattern: UInt8(truncatingIfNeeded: words[k / 4] >> (8 * UInt32(k % 4)))) }
            var i = 0
            var m: UInt8 = 1
            for _ in 0..<2 {
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half16 in 0..<2 {
                        let dl = dall * Float(Int(scales[i]) - 32); i += 1
                        for l in 0..<16 {
                            let k = l + 16 * half16
                            let v = Int((q[k] >> shift) & 3) - ((hm[k] & m) != 0 ? 0 : 4)
                            y[l] = dl * Float(v)
                        }
                        y += 16
                    }
                    shift += 2
                    m <<= 1
                }
                q += 32
            }
        }
    }

    /// The j-th 6-bit (scale, min) pair of a Q4_K/Q5_K block's 12 scale bytes.
    @inline(__always) static func scaleMinK4(_ j: Int, _ q: UnsafePointer<UInt8>) -> (UInt8, UInt8) {
        if j < 4 { return (q[j] & 63, q[j + 4] & 63) }
        return ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }

    /// Q4_K (144 bytes): d, dmin: f16, scales[12], qs[128] (4-bit); x = d·scale·q − dmin·min.
    static func q4_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) { k4(s, d, n, fifthBit: false) }

    /// Q5_K (176 bytes): d, dmin: f16, scales[12], qh[32] (the fifth bits), qs[128].
    static func q5_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) { k4(s, d, n, fifthBit: true) }

    /// Q4_K and Q5_K, which differ only in Q5_K's high-bit plane (specialised per call site).
    @inline(__always) static func k4(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int, fifthBit: Bool) {
        let blockBytes = fifthBit ? 176 : 144
        each(s, d, n, bytes: blockBytes, values: 256) { p, out in
            var y = out
            let dall = half(p, 0), dmin = half(p, 2)
            let sc = (p + 4).assumingMemoryBound(to: UInt8.self)
            let qh = (p + 16).assumingMemoryBound(to: UInt8.self)
            var q = (p + (fifthBit ? 48 : 16)).assumingMemoryBound(to: UInt8.self)
            var u1: UInt8 = 1, u2: UInt8 = 2
            for j in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * j, sc), (s2, m2) = scaleMinK4(2 * j + 1, sc)
                let d1 = dall * Float(s1), n1 = dmin * Float(m1), d2 = dall * Float(s2), n2 = dmin * Float(m2)
                if fifthBit {
                    for l in 0..<32 { y[l] = d1 * Float((q[l] & 0x0F) + (qh[l] & u1 != 0 ? 16 : 0)) - n1 }
                    for l in 0..<32 { y[32 + l] = d2 * Float((q[l] >> 4) + (qh[l] & u2 != 0 ? 16 : 0)) - n2 }
                } else {
                    for l in 0..<32 { y[l] = d1 * Float(q[l] & 0x0F) - n1 }
                    for l in 0..<32 { y[32 + l] = d2 * Float(q[l] >> 4) - n2 }
                }
                y += 64
                q += 32
                u1 <<= 2
                u2 <<= 2
            }
        }
    }

    /// ql[128], qh[64], scales[16] (int8), d: f16; x = d·scale·(q6 − 32).
    static func q6_K(_ s: UnsafeRawPointer, _ d: FPtr, _ n: Int) {
        each(s, d, n, bytes: 210, values: 256) { p, out in
            var y = out
            var ql = p.assumingMemoryBound(to: UInt8.self)
            var qh = (p + 128).assumingMemoryBound(to: UInt8.self)
            var sc = (p + 192).assumingMemoryBound(to: Int8.self)
            let dall = half(p, 208)
            for _ in 0..<2 {
                for l in 0..<32 {
                    let i = l / 16
                    let q1 = Int((ql[l] & 0x0F) | ((qh[l] >> 0) & 3) << 4) - 32
                    let q2 = Int((ql[l + 32] & 0x0F) | ((qh[l] >> 2) & 3) << 4) - 32
                    let q3 = Int((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32
                    let q4 = Int((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32
                    y[l] = dall * Float(sc[i]) * Float(q1)
                    y[l + 32] = dall * Float(sc[i + 2]) * Float(q2)
                    y[l + 64] = dall * Float(sc[i + 4]) * Float(q3)
                    y[l + 96] = dall * Float(sc[i + 6]) * Float(q4)
                }
                y += 128
                ql += 64
                qh += 32
                sc += 8
            }
        }
    }
}
