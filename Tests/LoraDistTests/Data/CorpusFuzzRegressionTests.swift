import Foundation
import Testing
@testable import LoraDist

/// JSON Lines inputs the fuzz-jsonl target (Fuzz/jsonl, tools/fuzz.sh) found trapping Corpus.
@Suite struct CorpusFuzzRegressionTests {
    /// fuzz-jsonl: a .jsonl file whose one record has an empty text gave a corpus of no tokens,
    /// and holding out a tenth of it indexed element -1 (Corpus).
    @Test("a JSON Lines corpus of empty texts or blank lines is refused")
    func emptyJSONLines() throws {
        let dir = TestPaths.tempDir("fuzz-jsonl")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let crash = Data(base64Encoded: "eyJpZCI6MywidGV4dCI6IiIsInNjb3JlIjpudWxsLCJ0YWdzIjpbXSwibWV0YSI6eyJzb3VyY2UiOiJmaXh0dXJlIiwib2siOmZhbHNlfX0K")!
        for (i, bytes) in [crash, Data("\n  \n\t\n".utf8), Data("{\"text\":\"\"}\n{\"text\":\"\"}\n".utf8)].enumerated() {
            let path = dir + "/\(i).jsonl"
            try bytes.write(to: URL(fileURLWithPath: path))
            for devPercent in [0, 5] {
                do {
                    _ = try Corpus(path: path, tokenizer: ByteTokenizer(), devPercent: devPercent)
                    Issue.record("accepted \(path)")
                } catch let e as LoraDistError {
                    #expect(e.message.contains("holds no text"))
                }
            }
        }
    }
}
