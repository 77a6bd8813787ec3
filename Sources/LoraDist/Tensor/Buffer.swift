/// Flat fp32 storage. Every kernel works on raw pointers into buffers like these,
/// sized once before training so a step allocates nothing.
public typealias FPtr = UnsafeMutablePointer<Float>

public final class FloatBuffer {
    public let count: Int
    public let ptr: FPtr

    public init(_ count: Int) {
        self.count = count
        ptr = Profile.measure(.allocation) {
            let p = FPtr.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            return p
        }
        if Profile.enabled && Thread.isMainThread { Profile.allocatedBytes += 4 * count }
    }

    public convenience init(_ values: [Float]) {
        self.init(values.count)
        values.withUnsafeBufferPointer { ptr.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { ptr.deallocate() }

    public func zero() { ptr.update(repeating: 0, count: count) }
    public var array: [Float] { Array(UnsafeBufferPointer(start: ptr, count: count)) }
    public subscript(i: Int) -> Float {
        get { ptr[i] }
        set { ptr[i] = newValue }
    }
}

/// Deterministic random numbers (SplitMix64): the same seed gives the same
/// weights, dropout masks and batches on every machine and rank.
public struct SplitMix64 {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Float { Float(next() >> 40) * (1.0 / Float(1 << 24)) }

    /// Uniform integer in [0, n).
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// Standard normal (Box-Muller).
    public mutating func normal() -> Float {
        let u1 = max(Double(next() >> 11) * 0x1.0p-53, 1e-300)
        let u2 = Double(next() >> 11) * 0x1.0p-53
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }

    /// Mixes several values into one seed, so (seed, step, index) streams are independent.
    public static func mix(_ values: UInt64...) -> UInt64 {
        var g = SplitMix64(seed: 0x1234_5678)
        var h: UInt64 = 0
        for v in values {
            g.state ^= v
            h = g.next() ^ (h &* 0x100_0000_01B3)
        }
        return h
    }
}

@inline(__always) func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Foundation.cos(x) }

import Foundation
