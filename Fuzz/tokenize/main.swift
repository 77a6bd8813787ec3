// Corpus text through each fixture tokenizer (Tests/Fixtures/tokenizer/*/tokenizer.json):
// the bytes as `--data` reads a .txt file with --replace-invalid-utf8 (UTF8Check, then the
// blocks of Corpus.blockRanges, each encoded), and two invariants: the blocks tile the text
// without cutting a character, and decoding what was encoded gives the text back.
import Foundation
@testable import LoraDist

let tokenizers: [(String, BPETokenizer)] = {
    let root = ProcessInfo.processInfo.environment["LORADIST_FIXTURES"] ?? "Tests/Fixtures"
    let dir = root + "/tokenizer"
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    let list = names.compactMap { n -> (String, BPETokenizer)? in
        guard let d = FileManager.default.contents(atPath: "\(dir)/\(n)/tokenizer.json") else { return nil }
        return (n, try! BPETokenizer(tokenizerJSON: d))
    }
    precondition(!list.isEmpty, "no tokenizer fixtures under \(dir) (set LORADIST_FIXTURES)")
    return list
}()

func fuzzOne(_ data: Data) {
    let utf8: [UInt8] = data.withUnsafeBytes { UTF8Check.replacing($0.bindMemory(to: UInt8.self)).bytes }
    let text = String(decoding: utf8, as: UTF8.self)
    let blocks = utf8.withUnsafeBufferPointer { Corpus.blockRanges($0) }
    var next = 0
    for r in blocks {
        if r.lowerBound != next || r.isEmpty || (r.lowerBound < utf8.count && utf8[r.lowerBound] & 0xC0 == 0x80) {
            fatalError("block \(r) after \(next) of \(utf8.count) bytes: not a tiling at character boundaries")
        }
        next = r.upperBound
    }
    if next != utf8.count { fatalError("blocks cover \(next) of \(utf8.count) bytes") }
    for (name, tok) in tokenizers {
        for r in blocks { _ = tok.encode(String(decoding: utf8[r], as: UTF8.self)) }
        let ids = tok.encode(text)
        for id in ids where id < 0 || Int(id) >= tok.vocabSize { fatalError("\(name): id \(id) outside the vocabulary \(tok.vocabSize)") }
        let back = tok.decode(ids)
        if back != text && !(tok.addPrefixSpace && back == " " + text) {
            fatalError("\(name): decode(encode(text)) differs: \(Array(text.utf8)) -> \(ids) -> \(Array(back.utf8))")
        }
    }
}

func fuzzSeeds() -> [Data] {
    ["Hello, world! 12345 héllo 日本語\n\tdon't  stop", "<s>a</s><|endoftext|>", "  \n\n  x", "🙂\u{0}\u{FFFD}x", "I'm 1234567 years"]
        .map { Data($0.utf8) }
}
