import Foundation

/// exp without libm: Cephes' expf (range reduction by ln 2 in two parts, degree-5
/// polynomial, 2ⁿ built in the exponent bits), within 4e-7 relative of libm on [−87, 88],
/// clamped outside. Plain scalar arithmetic with no calls, so loops over it vectorise;
/// libm's scalar expf was the largest element-wise cost of a step.
@inline(__always)
func fastExp(_ x: Float) -> Float {
    var xc = x < -87.3 ? -87.3 : x
    xc = xc > 88.3 ? 88.3 : xc
    // round(x · log2 e) by the 1.5·2²³ trick: the sum's low mantissa bits hold the integer
    let shifted = xc * 1.44269504088896341 + 12_582_912
    let n = shifted - 12_582_912
    let r = xc - n * 0.693359375 + n * 2.12194440e-4
    var p: Float = 1.9875691500e-4
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * r * r + r + 1
    let e = Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000
    return p * Float(bitPattern: UInt32(bitPattern: (e &+ 127) &<< 23))
}

/// fastExp on 8 lanes: the same operations in the same order, so each lane's bits equal
/// the scalar function's. Explicit vectors because the loops that need it (softmax rows
/// in place, attention's gradient) are ones LLVM does not vectorise by itself.
@inline(__always)
func fastExp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    var xc = x.replacing(with: -87.3, where: x .< -87.3)
    xc.replace(with: 88.3, where: xc .> 88.3)
    let shifted = xc * 1.44269504088896341 + 12_582_912
    let n = shifted - 12_582_912
    let r = xc - n * 0.693359375 + n * 2.12194440e-4
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * r * r + r + 1
    let e = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
    return p * unsafeBitCast((e &+ 127) &<< 23, to: SIMD8<Float>.self)
}

/// 8 floats at x + j (no alignment needed), and their store.
@inline(__always) func load8(_ x: UnsafePointer<Float>, _ j: Int) -> SIMD8<Float> {
    UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self)
}
@inline(__always) func store8(_ v: SIMD8<Float>, _ x: FPtr, _ j: Int) {
    UnsafeMutableRawPointer(x + j).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// The largest of x[0..<n] (−∞ for n = 0; NaNs are passed over, as `x > m ? x : m` does).
/// Eight running maxima: a single one is a chain of dependent compares, one element a cycle.
@inline(__always)
func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: -.infinity)
    var j = 0
    while j + 8 <= n {
        let v = load8(x, j)
        acc.replace(with: v, where: v .> acc)
        j += 8
    }
    var m = -Float.infinity
    for i in 0..<8 where acc[i] > m { m = acc[i] }
    while j < n { if x[j] > m { m = x[j] }; j += 1 }
    return m
}

/// Σ exp(x[i] − shift) for i in 0..<n, in the same order as expShifted.
@inline(__always)
func sumExpShifted(_ x: UnsafePointer<Float>, _ n: Int, shift: Float) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var j = 0
    while j + 8 <= n {
        acc += fastExp(load8(x, j) - shift)
        j += 8
    }
    var s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    while j < n { s += fastExp(x[j] - shift); j += 1 }
    return s
}

/// exp(x[i] − shift) into out[i] for i in 0..<n; returns their sum, in 8 interleaved partial
/// sums (lane k adds elements k, k + 8, ...: a fixed order). out may alias x.
@inline(__always)
func expShifted(_ x: UnsafePointer<Float>, _ out: FPtr, _ n: Int, shift: Float) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var j = 0
    while j + 8 <= n {
        let e = fastExp(load8(x, j) - shift)
        store8(e, out, j)
        acc += e
        j += 8
    }
    var s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    while j < n {
        let e = fastExp(x[j] - shift)
        out[j] = e
        s += e
        j += 1
    }
    return s
}

/// exp(x[i] − shift) · c into out[i] for i in 0..<n: expShifted then scaleRow in one pass,
/// the same bits. out may alias x.
@inline(__always)
func expScaled(_ x: UnsafePointer<Float>, _ out: FPtr, _ n: Int, shift: Float, by c: Float) {
    var j = 0
    while j + 8 <= n { store8(fastExp(load8(x, j) - shift) * c, out, j); j += 8 }
    while j < n { out[j] = fastExp(x[j] - shift) * c; j += 1 }
}

/// x[0..<n] *= c.
@inline(__always)
func scaleRow(_ x: FPtr, _ n: Int, by c: Float) {
    var j = 0
    while j + 8 <= n { store8(load8(x, j) * c, x, j); j += 8 }
    while j < n { x[j] *= c; j += 1 }
}
