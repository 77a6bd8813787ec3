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

/// exp(x[i] − shift) into out[i] for i in 0..<n; returns their sum. out may alias x.
/// Σ exp(x[i] − shift) for i in 0..<n, in the same order as expShifted.
@inline(__always)
func sumExpShifted(_ x: UnsafePointer<Float>, _ n: Int, shift: Float) -> Float {
    var acc = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
    var j = 0
    while j + 8 <= n {
        acc.0 += fastExp(x[j] - shift); acc.1 += fastExp(x[j + 1] - shift)
        acc.2 += fastExp(x[j + 2] - shift); acc.3 += fastExp(x[j + 3] - shift)
        acc.4 += fastExp(x[j + 4] - shift); acc.5 += fastExp(x[j + 5] - shift)
        acc.6 += fastExp(x[j + 6] - shift); acc.7 += fastExp(x[j + 7] - shift)
        j += 8
    }
    var s = ((acc.0 + acc.1) + (acc.2 + acc.3)) + ((acc.4 + acc.5) + (acc.6 + acc.7))
    while j < n { s += fastExp(x[j] - shift); j += 1 }
    return s
}

@inline(__always)
func expShifted(_ x: UnsafePointer<Float>, _ out: FPtr, _ n: Int, shift: Float) -> Float {
    for j in 0..<n { out[j] = fastExp(x[j] - shift) }
    // Sum in 8 interleaved partial sums: vectorises, and the order is fixed.
    var acc = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
    var j = 0
    while j + 8 <= n {
        acc.0 += out[j]; acc.1 += out[j + 1]; acc.2 += out[j + 2]; acc.3 += out[j + 3]
        acc.4 += out[j + 4]; acc.5 += out[j + 5]; acc.6 += out[j + 6]; acc.7 += out[j + 7]
        j += 8
    }
    var s = ((acc.0 + acc.1) + (acc.2 + acc.3)) + ((acc.4 + acc.5) + (acc.6 + acc.7))
    while j < n { s += out[j]; j += 1 }
    return s
}
