import Foundation

/// What an NF4 base costs, for summary.json's `nf4` object (docs/metrics.md).
public struct NF4Summary: Codable, Equatable {
    public var tensors: Int
    public var weights: Int
    public var bytes: Int                  // codes, 8-bit absmax codes, scales, offsets
    public var bitsPerWeight: Double
    public var blockSize: Int
    public var doubleQuantBlockSize: Int
    public var paddedTensors: Int          // tensors whose size does not divide into 64-blocks
    public var paddingElements: Int        // elements added to fill their last block

    enum CodingKeys: String, CodingKey {
        case tensors, weights, bytes
        case bitsPerWeight = "bits_per_weight"
        case blockSize = "block_size"
        case doubleQuantBlockSize = "double_quant_block_size"
        case paddedTensors = "padded_tensors"
        case paddingElements = "padding_elements"
    }

    /// The summary of these tensors' layouts; nil when there are none.
    public init?(_ layouts: [NF4Layout]) {
        guard !layouts.isEmpty else { return nil }
        tensors = layouts.count
        weights = layouts.reduce(0) { $0 + $1.count }
        bytes = layouts.reduce(0) { $0 + $1.bytes }
        bitsPerWeight = (Double(8 * bytes) / Double(weights) * 1000).rounded() / 1000
        blockSize = NF4Layout.blockSize
        doubleQuantBlockSize = NF4Layout.scaleBlockSize
        paddedTensors = layouts.filter { $0.padding > 0 }.count
        paddingElements = layouts.reduce(0) { $0 + $1.padding }
    }
}
