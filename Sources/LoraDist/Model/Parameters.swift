/// Where every parameter lives.
///
/// Parameters are laid out in two flat arenas: the trainable one, which has a
/// gradient, optimizer state and is what the gradient exchange moves, and the
/// frozen one, which has none of these. LoRA and full fine-tuning differ only in
/// which arena a tensor is placed: under LoRA the base weights are frozen and the
/// adapters trainable; under full fine-tuning every base weight is trainable.
/// Under QLoRA the frozen projections are stored as NF4 bytes in their arena slots.
public struct ParamSpec {
    public let name: String        // Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
    public let shape: [Int]
    public let trainable: Bool
    public let decay: Bool         // AdamW weight decay applies (not to norms)
    public var nf4: Bool = false   // stored 4-bit (frozen only)
    public var count: Int { shape.reduce(1, *) }
    /// fp32 slots the tensor takes in its arena.
    public var slots: Int { nf4 ? NF4Layout(count: count).slotFloats : count }
}

public struct Param {
    public let spec: ParamSpec
    public let offset: Int         // slot offset in the values
    public let value: FPtr         // fp32 values, or the NF4 bytes when spec.nf4
    public let grad: FPtr?         // nil when frozen
    public var name: String { spec.name }
    public var count: Int { spec.count }
    public var nf4: NF4Tensor? { spec.nf4 ? NF4Tensor(count: count, base: UnsafeMutableRawPointer(value)) : nil }

    /// The values as fp32 (dequantized when stored as NF4).
    public var floats: [Float] { nf4?.dequantized() ?? Array(UnsafeBufferPointer(start: value, count: count)) }
}

public final class ParameterStore {
    public private(set) var params: [Param] = []
    public let byName: [String: Param]
    public let frozenCount: Int
    public let trainableCount: Int
    /// The trainable arena's values; in a store of one allocation the frozen arena follows
    /// them (`values + trainableCount`). Arena offsets are resolved with `slot(_:)`.
    public let values: FPtr
    /// The frozen arena's values: right after the trainable ones, or (an adapter set: several
    /// adapters on one base) a base held elsewhere and shared by several stores.
    public let frozenValues: FPtr
    /// Gradients of the trainable arena, same layout.
    public let grads: FloatBuffer
    private let owned: FloatBuffer?

    /// `allocate` hands back storage for `count` floats; by default a private buffer. With
    /// `frozen`, the frozen arena is that memory (`frozenSlots(specs)` floats, filled by its
    /// owner) and `allocate` is asked for the trainable arena alone.
    public init(specs: [ParamSpec], allocate: ((Int) -> FPtr)? = nil, frozen frozenBase: FPtr? = nil) {
        let trainable = specs.filter(\.trainable), frozen = specs.filter { !$0.trainable }
        precondition(!trainable.contains(where: \.nf4), "NF4 tensors are frozen")
        trainableCount = trainable.reduce(0) { $0 + $1.count }
        frozenCount = frozen.reduce(0) { $0 + $1.slots }
        let total = frozenBase == nil ? trainableCount + frozenCount : trainableCount
        if let allocate {
            values = allocate(total)
            owned = nil
        } else {
            let b = FloatBuffer(total)
            values = b.ptr
            owned = b
        }
        frozenValues = frozenBase ?? values + trainableCount
        grads = FloatBuffer(trainableCount)
        var list: [Param] = [], map: [String: Param] = [:]
        var off = 0
        for s in trainable + frozen {
            let p = Param(spec: s, offset: off, value: s.trainable ? values + off : frozenValues + (off - trainableCount),
                          grad: s.trainable ? grads.ptr + off : nil)
            list.append(p)
            map[s.name] = p
            off += s.slots
        }
        params = list
        byName = map
    }

    public subscript(name: String) -> Param { byName[name]! }

    /// Where arena offset `i` lives: the trainable arena below `trainableCount`, the frozen above.
    public func slot(_ i: Int) -> FPtr { i < trainableCount ? values + i : frozenValues + (i - trainableCount) }

    /// Floats of the frozen arena `specs` lay out (NF4 tensors in their byte slots).
    public static func frozenSlots(_ specs: [ParamSpec]) -> Int { specs.filter { !$0.trainable }.reduce(0) { $0 + $1.slots } }

    /// Calls `fill(elements, destination)` for each part of `p` inside `owned`
    /// (arena offsets); `elements` is the range within the tensor, row-major.
    /// Ranks of a node share the values, and each writes only what it owns.
    /// An NF4 tensor is quantized whole by the rank that owns its first slot.
    /// The values are checked as they arrive: a NaN or ∞ from a file is refused naming the
    /// tensor and element (before an NF4 tensor is quantized, which would hide it).
    public func fill(_ p: Param, owned: [Range<Int>], _ fill: (Range<Int>, FPtr) throws -> Void) throws {
        try fillValues(p, owned: owned) { elements, dst in
            try fill(elements, dst)
            if let i = (0..<elements.count).first(where: { !dst[$0].isFinite }) {
                throw LoraDistError("tensor '\(p.name)' holds a non-finite value (NaN or infinity) at element \(elements.lowerBound + i)")
            }
        }
    }

    private func fillValues(_ p: Param, owned: [Range<Int>], _ fill: (Range<Int>, FPtr) throws -> Void) rethrows {
        if let q = p.nf4 {
            guard owned.contains(where: { $0.contains(p.offset) }) else { return }
            let staging = FloatBuffer(p.count)
            try fill(0..<p.count, staging.ptr)
            q.quantize(staging.ptr)
            return
        }
        let span = p.offset..<(p.offset + p.count)
        for r in owned.map({ $0.clamped(to: span) }) where !r.isEmpty {
            try fill((r.lowerBound - p.offset)..<(r.upperBound - p.offset), slot(r.lowerBound))
        }
    }

    /// The first tensor (in `params` order) with a NaN or ∞ inside the `owned` ranges, and the
    /// element: a loaded model is checked before it computes anything, so a bad file is named
    /// instead of ending later in "loss is nan". NF4 tensors are checked dequantized, whole,
    /// by the rank that owns their first slot (as it quantized them).
    public func firstNonFinite(owned: [Range<Int>], where include: (Param) -> Bool = { _ in true }) -> (name: String, element: Int)? {
        for p in params where include(p) {
            if p.spec.nf4 {
                guard owned.contains(where: { $0.contains(p.offset) }) else { continue }
                if let i = p.floats.firstIndex(where: { !$0.isFinite }) { return (p.name, i) }
                continue
            }
            let span = p.offset..<(p.offset + p.count)
            for r in owned.map({ $0.clamped(to: span) }) where !r.isEmpty {
                for i in r where !slot(i).pointee.isFinite { return (p.name, i - p.offset) }
            }
        }
        return nil
    }

    /// Like `fill`, from the whole tensor `make` produces (not called when this rank owns none of `p`).
    /// (Unchecked: what `make` computes is not read from a file.)
    public func write(_ p: Param, owned: [Range<Int>], _ make: () throws -> [Float]) rethrows {
        var whole: [Float]?
        try fillValues(p, owned: owned) { elements, dst in
            if whole == nil { whole = try make() }
            whole!.withUnsafeBufferPointer { dst.update(from: $0.baseAddress! + elements.lowerBound, count: elements.count) }
        }
    }

    /// Everything, for a process that owns the whole store.
    public var all: [Range<Int>] { [0..<totalCount] }
    public var trainableValues: FPtr { values }
    public var totalCount: Int { trainableCount + frozenCount }   // slots
    /// Weights (elements), however they are stored.
    public var elementCount: Int { params.reduce(0) { $0 + $1.count } }
    /// Bytes the values take: fp32 slots, NF4 bytes included.
    public var valueBytes: Int { 4 * totalCount }

    /// What the NF4 tensors hold and take, padding included (nil without any).
    public var nf4Summary: NF4Summary? { NF4Summary(params.filter(\.spec.nf4).map { NF4Layout(count: $0.count) }) }
    public var trainable: [Param] { params.filter { $0.spec.trainable } }
}
