import Foundation

/// How gradients travel: as they are (fp32), rounded to 16 bits, or as PowerSGD's low-rank
/// factors. `--grad-compression`; docs/distributed.md says what each sends and where.
public enum GradCompression: String, Codable, CaseIterable, Sendable {
    case none, bf16, fp16, powersgd

    /// Floats a rank keeps per trainable value beyond the gradient, for the memory estimate:
    /// bf16/fp16 a 16-bit copy and the received blocks (2 + ~2 bytes); PowerSGD its error
    /// feedback and M's copy (P and Q are smaller than the gradient, counted as one more).
    public var extraFloatsPerTrainable: Double {
        switch self {
        case .none: 0
        case .bf16, .fp16: 1
        case .powersgd: 3
        }
    }

    /// The 16-bit format of bf16 / fp16.
    public var half: HalfFormat? {
        switch self {
        case .bf16: .bf16
        case .fp16: .fp16
        default: nil
        }
    }
}

/// What `--grad-compression`, `--powersgd-rank` and `--powersgd-start-step` ask for.
public struct CompressionOptions: Equatable, Sendable {
    public var method: GradCompression = .none
    /// PowerSGD's rank (torch: matrix_approximation_rank), capped per tensor at min(rows, cols).
    public var powerSGDRank = 4
    /// Steps before this one exchange plain fp32 gradients (torch: start_powerSGD_iter).
    public var powerSGDStartStep = 10

    public init() {}
    public static let rankRange = 1...1024
    public static let startRange = 1...100_000_000
}

/// bf16 or fp16: the 16-bit words of a compressed bucket. Both round to nearest, ties to even.
public enum HalfFormat: Sendable {
    case bf16, fp16

    @inline(__always) public static func bf16Bits(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: b >> 16) | 0x40 }  // stays a NaN
        return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
    }

    // fp16 by bit arithmetic: Swift's Float16(x) and Float(h) compile, on x86-64 without F16C, to a
    // call of compiler-rt's __truncsfhf2 / __extendhfsf2 per value, which made fp16 compression
    // slower than sending fp32. These give the same bits (GradientCompressionTests checks every
    // half and the ties between them) in straight-line code the loops can vectorise.

    /// x rounded to the nearest fp16, ties to even; overflow to ±∞, NaN stays a (quiet) NaN.
    @inline(__always) public static func fp16Bits(_ x: Float) -> UInt16 {
        let sign = x.bitPattern & 0x8000_0000
        let a = x.bitPattern ^ sign                           // |x|
        let h: UInt32
        if a >= 0x4780_0000 {                                 // |x| ≥ 65536 (or ∞, NaN): no fp16 holds it
            h = a > 0x7F80_0000 ? 0x7E00 : 0x7C00
        } else if a < 0x3880_0000 {                           // below fp16's smallest normal: subnormal or 0
            // Adding 0.5 lines fp16's subnormal step (2^-24) up with the float's last mantissa bit,
            // so the FPU's own round-to-nearest-even does the rounding.
            let magic = Float(bitPattern: 0x3F00_0000)
            h = (Float(bitPattern: a) + magic).bitPattern &- magic.bitPattern
        } else {                                              // normal: rebias, round the 13 dropped bits
            let odd = (a >> 13) & 1
            h = (a &+ 0xC800_0FFF &+ odd) >> 13               // 0xC8000000 = (15 − 127) << 23, wrapping
        }
        return UInt16(truncatingIfNeeded: h | (sign >> 16))
    }

    /// The fp16 `h` as a Float (exact: every fp16 is a float).
    @inline(__always) public static func fp16Float(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let e = UInt32(h & 0x7C00), m = UInt32(h & 0x03FF)
        if e == 0x7C00 { return Float(bitPattern: sign | 0x7F80_0000 | (m << 13) | (m == 0 ? 0 : 0x40_0000)) }  // ∞, NaN (quiet)
        if e == 0 { return Float(sign: sign != 0 ? .minus : .plus, exponent: -24, significand: Float(m)) }       // subnormal, 0
        return Float(bitPattern: sign | ((e >> 10 + 112) << 23) | (m << 13))
    }

    public func encode(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int) {
        switch self {
        case .bf16: for i in 0..<count { dst[i] = Self.bf16Bits(src[i]) }
        case .fp16: for i in 0..<count { dst[i] = Self.fp16Bits(src[i]) }
        }
    }

    public func decode(_ src: UnsafePointer<UInt16>, _ dst: FPtr, count: Int) {
        switch self {
        case .bf16: for i in 0..<count { dst[i] = Float(bitPattern: UInt32(src[i]) << 16) }
        case .fp16: for i in 0..<count { dst[i] = Self.fp16Float(src[i]) }
        }
    }

    /// x rounded to this format, as a Float.
    public func rounded(_ x: Float) -> Float {
        var h: UInt16 = 0, y: Float = 0, v = x
        encode(&v, &h, count: 1)
        decode(&h, &y, count: 1)
        return y
    }
}

/// The sum over a communicator of `count` floats at `data`, sent as 16-bit words and added in
/// fp32: reduce-scatter by a personalised exchange (each rank receives every rank's 16-bit copy
/// of its block and adds them in fp32, in rank order), then an allgather of the rounded sums.
/// What one rank sends is (p−1)/p of the payload twice, at 2 bytes a value: half of a ring
/// allreduce of fp32. A custom MPI_Op could not do this: an op's operands and result have one
/// datatype, so a 16-bit allreduce would round every partial sum of the ring back to 16 bits.
///
/// The result is round16(Σ_r round16(x_r)), the same on every rank, written over `data`.
/// One instance per bucket, reused every step; `start`, then `advance` until `isDone`.
final class HalfAllreduce {
    let comm: Communicator
    /// The allgathers' own communicator: a bucket's allgather may start while a later bucket's
    /// exchange is already in flight, and one communicator's collectives must start in the same
    /// order on every rank.
    let gatherComm: Communicator
    let format: HalfFormat
    let data: FPtr
    let count: Int
    let blocks: [Range<Int>]          // block r: what rank r sums
    let words: UnsafeMutablePointer<UInt16>     // this rank's 16-bit copy, then the gathered sums
    let received: UnsafeMutablePointer<UInt16>  // p copies of this rank's block, then its rounded sum
    let sum: FloatBuffer
    var request = Request(handle: nil)
    private(set) var phase = 0        // 0 idle, 1 exchanging blocks, 2 gathering sums, 3 gathered
    /// Bytes this rank sends per call, and of them to ranks on other nodes.
    let bytesSent: Int
    let bytesSentOffNode: Int

    /// `nodeOf[r]`: the node of rank r of `comm`, for the byte count across nodes.
    init(comm: Communicator, gatherComm: Communicator, format: HalfFormat, data: FPtr, count: Int, nodeOf: [Int]) {
        self.comm = comm
        self.gatherComm = gatherComm
        self.format = format
        self.data = data
        self.count = count
        let p = comm.size
        blocks = (0..<p).map { Cluster.shard(count, parts: p, index: $0) }
        words = .allocate(capacity: max(count, 1))
        let mine = blocks[comm.rank].count
        received = .allocate(capacity: max(p * mine, 1))
        sum = FloatBuffer(mine)
        var sent = 0, off = 0
        for r in 0..<p where r != comm.rank {
            let b = 2 * (blocks[r].count + mine)  // my copy of its block, then my sum to it
            sent += b
            if nodeOf[r] != nodeOf[comm.rank] { off += b }
        }
        bytesSent = sent
        bytesSentOffNode = off
    }

    deinit {
        words.deallocate()
        received.deallocate()
    }

    var isDone: Bool { phase == 0 || phase == 3 }

    func start() {
        guard comm.size > 1, count > 0 else { phase = 3; return }
        format.encode(data, words, count: count)
        let p = comm.size, mine = blocks[comm.rank].count
        request = comm.ialltoallv(send: words, sendCounts: blocks.map { Int32($0.count) },
                                  sendOffsets: blocks.map { Int32($0.lowerBound) },
                                  recv: received, recvCounts: Array(repeating: Int32(mine), count: p),
                                  recvOffsets: (0..<p).map { Int32($0 * mine) })
        phase = 1
    }

    /// Moves on when the current collective has completed (waiting for it with `block`).
    func advance(block: Bool) {
        if phase == 1 {
            if block { request.wait() } else if !request.test() { return }
            let p = comm.size, mine = blocks[comm.rank].count
            let s = sum.ptr
            format.decode(received, s, count: mine)
            for r in 1..<p {
                let w = received + r * mine
                switch format {
                case .bf16: for i in 0..<mine { s[i] += Float(bitPattern: UInt32(w[i]) << 16) }
                case .fp16: for i in 0..<mine { s[i] += HalfFormat.fp16Float(w[i]) }
                }
            }
            format.encode(s, received, count: mine)
            request = gatherComm.iallgatherv(send: received, count: mine, recv: words, counts: blocks.map { Int32($0.count) },
                                       offsets: blocks.map { Int32($0.lowerBound) })
            phase = 2
        }
        if phase == 2 {
            if block { request.wait() } else if !request.test() { return }
            format.decode(words, data, count: count)
            phase = 3
        }
    }
}
