// tokenizer.json (BPETokenizer(tokenizerJSON:), as `--model DIR` loads it), then a few texts
// encoded and decoded with what it built.
import Foundation
@testable import LoraDist

let texts = ["Hello, world! 12345 héllo 日本語\n\tdon't  stop", "<s>a</s><|endoftext|>", "", " ", "🙂\u{0}\u{FFFD}x"]

func fuzzOne(_ data: Data) {
    guard let tok = try? BPETokenizer(tokenizerJSON: data) else { return }
    _ = tok.vocabSize
    for t in texts {
        let ids = tok.encode(t)
        _ = tok.decode(ids)
    }
    _ = tok.decode([0, 1, 2, Int32(tok.vocabSize - 1), Int32(tok.vocabSize), -1, Int32.max])
}

func fuzzSeeds() -> [Data] { [] }
