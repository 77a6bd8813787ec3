import Foundation

/// What a LoRA checkpoint records of the base it was trained on: CRC-32C over
/// the frozen tensors' values in name order. Empty under full fine-tuning,
/// whose checkpoints hold every weight.
public enum BaseIdentity {
    public static func of(_ model: LlamaModel) -> String {
        let frozen = model.store.params.filter { $0.grad == nil }.sorted { $0.name < $1.name }
        guard !frozen.isEmpty else { return "" }
        var crc: UInt32 = 0
        for p in frozen { crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: p.value, count: p.spec.slots * 4)) }
        return describe(crc: crc, tensors: frozen.count, values: frozen.reduce(0) { $0 + $1.count })
    }

    /// %ld, not %d: a 7B base has more than 2^31 frozen values, and %d would print its low 32 bits.
    static func describe(crc: UInt32, tensors: Int, values: Int) -> String {
        String(format: "crc32c:%08x over %ld frozen tensors (%ld values)", crc, tensors, values)
    }
}
