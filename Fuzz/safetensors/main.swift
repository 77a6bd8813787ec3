// safetensors: the header and every tensor, as a model directory's weights and a PEFT
// adapter are loaded (HuggingFace.Weights / loadBase / loadAdapter read through SafeTensors).
// The bytes are held in an exactly sized buffer (not a page-rounded map), so the address
// sanitizer sees any read past the end.
import Foundation
@testable import LoraDist

func fuzzOne(_ data: Data) {
    guard let st = try? SafeTensors(data: data, path: "model.safetensors") else { return }
    _ = try? HuggingFace.Weights(single: st)
    for name in st.names {
        guard let e = try? st.entry(name), e.count <= maxElements else { continue }
        if SafeTensors.floating.contains(e.dtype) {
            _ = try? st.floats(name)
            if e.count > 2 {   // a part of it, as a rank loads its owned range
                var part = [Float](repeating: 0, count: e.count - 2)
                part.withUnsafeMutableBufferPointer { try? st.floats(name, elements: 1..<(e.count - 1), into: $0.baseAddress!) }
            }
        } else {
            _ = try? st.ints(name)
        }
    }
}

func fuzzSeeds() -> [Data] {
    let dir = scratch
    var out: [Data] = []
    let cases: [[(name: String, shape: [Int], values: [Float])]] = [
        [],
        [("a", [2, 3], [1, 2, 3, 4, 5, 6])],
        [("model.embed_tokens.weight", [4, 2], Array(repeating: 0.5, count: 8)), ("model.norm.weight", [2], [1, 1]), ("s", [], [3])],
    ]
    for (i, c) in cases.enumerated() {
        let p = dir + "/seed-\(i).safetensors"
        try! SafeTensors.write(c, to: p)
        out.append(FileManager.default.contents(atPath: p)!)
    }
    return out
}
