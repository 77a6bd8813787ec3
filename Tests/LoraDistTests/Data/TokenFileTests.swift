import Foundation
import Testing
@testable import LoraDist

/// The token file: the same ids as tokenising in memory (Corpus), reused while nothing changed,
/// rebuilt when a source file, the tokenizer or the file itself changed. Multi-rank builds are
/// checked by TokenFileCLITests.
@Suite struct TokenFileTests {
    /// A tokenizer of bytes whose identity and vocabulary size a test chooses (ids past 65,535
    /// need 32-bit storage).
    struct Named: Tokenizer {
        var identity: String
        var vocabSize: Int
        var shift: Int32 = 0
        var bos: Int32 { Int32(vocabSize - 2) }
        var eos: Int32 { Int32(vocabSize - 1) }
        func encode(_ text: String) -> [Int32] { text.utf8.map { Int32($0) + shift } }
        func decode(_ ids: [Int32]) -> String { "" }
    }

    static func corpus() throws -> String {
        let dir = try writeCorpus("tokfile", lines: 3000) { "line \($0): the quick brown fox \($0 * 7919 % 1000)" }
        let records = (0..<200).map { "{\"text\": \"record \($0) says \\u00e9\\n\($0 % 13)\"}" }.joined(separator: "\n")
        try records.write(toFile: dir + "/r.jsonl", atomically: true, encoding: .utf8)
        return dir
    }

    static func open(_ path: String, _ folder: String, _ tok: Tokenizer = ByteTokenizer(), devPercent: Int = 5) throws -> TokenFile {
        try TokenFile.open(path: path, tokenizer: tok, devPercent: devPercent, reading: CorpusReading(), folder: folder)
    }

    @Test("the same ids, counts and split as tokenising in memory", arguments: [0, 5, 30])
    func equalsCorpus(devPercent: Int) throws {
        let data = try Self.corpus(), folder = TestPaths.tempDir("tokens")
        let c = try Corpus(path: data, tokenizer: ByteTokenizer(), devPercent: devPercent)
        let f = try Self.open(data, folder, devPercent: devPercent)
        #expect(Array(f.train) == c.train && Array(f.dev) == c.dev)
        #expect(f.documents == c.documents && f.bytes == c.bytes && f.width == 2 && !f.reused)
        #expect(f.fileBytes == (try FileManager.default.attributesOfItem(atPath: f.path)[.size] as! NSNumber).intValue)
        // a small vocabulary's ids take 2 bytes each
        #expect(f.fileBytes < TokenFile.headerBytes + 2 * (c.train.count + c.dev.count) + 64)
    }

    @Test func tinyCorpusHoldsOutItsLastTenth() throws {
        let data = try writeCorpus("tokfile-tiny", lines: 3) { "tiny \($0)" }
        let c = try Corpus(path: data, tokenizer: ByteTokenizer(), devPercent: 5)
        let f = try Self.open(data, TestPaths.tempDir("tokens"))
        #expect(!c.dev.isEmpty && Array(f.train) == c.train && Array(f.dev) == c.dev)
    }

    /// Found by tools/fuzz.sh tokenfile: a header with valid checksums that holds no ids (the
    /// tiny-corpus cut went below zero) or more than fit a file (its size overflowed) is not a
    /// token file to reuse: it is rebuilt.
    @Test("a checksummed header with no ids or too many is rebuilt, not trusted", arguments: [(0, 0), (1 << 50, 0), (0, 1 << 62)])
    func impossibleCountsAreRebuilt(train: Int, dev: Int) throws {
        let data = try writeCorpus("tokfile-counts", lines: 30) { "counts \($0)" }, folder = TestPaths.tempDir("tokens")
        let first = try Self.open(data, folder)
        let (trainIDs, devIDs, path) = (Array(first.train), Array(first.dev), first.path)  // before the file is rewritten under its map
        let raw = try #require(FileManager.default.contents(atPath: path))
        var h = try #require(raw.withUnsafeBytes { TokenFile.Header.decode($0) })
        h.train = train
        h.dev = dev
        try Data(h.encoded()).write(to: URL(fileURLWithPath: path + ".new"))
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: path + ".new", toPath: path)
        let again = try Self.open(data, folder)
        #expect(!again.reused && Array(again.train) == trainIDs && Array(again.dev) == devIDs)
    }

    @Test func reusedUntilASourceFileChanges() throws {
        let data = try Self.corpus(), folder = TestPaths.tempDir("tokens")
        let first = try Self.open(data, folder)
        let again = try Self.open(data, folder)
        #expect(again.reused && again.path == first.path && Array(again.train) == Array(first.train))
        // The same size, one byte different: the checksum changes, the file is rebuilt.
        let file = data + "/c.txt"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[100] = bytes[100] == UInt8(ascii: "x") ? UInt8(ascii: "y") : UInt8(ascii: "x")
        try bytes.write(to: URL(fileURLWithPath: file))
        let changed = try Self.open(data, folder)
        #expect(!changed.reused && changed.path == first.path)
        #expect(Array(changed.train) == (try Corpus(path: data, tokenizer: ByteTokenizer()).train))
        #expect(try Self.open(data, folder).reused)
        // A file added to the folder: rebuilt too.
        try "more".write(toFile: data + "/d.txt", atomically: true, encoding: .utf8)
        #expect(!(try Self.open(data, folder).reused))
    }

    @Test func anotherTokenizerHasItsOwnFile() throws {
        let data = try Self.corpus(), folder = TestPaths.tempDir("tokens")
        let a = try Self.open(data, folder, Named(identity: "a", vocabSize: 300))
        let b = try Self.open(data, folder, Named(identity: "b", vocabSize: 300, shift: 1))
        #expect(!b.reused && a.path != b.path && a.train[1] + 1 == b.train[1])
        #expect(try Self.open(data, folder, Named(identity: "a", vocabSize: 300)).reused)
    }

    @Test("ids past 65,535 are stored in 32 bits")
    func wideVocabulary() throws {
        let data = try Self.corpus(), folder = TestPaths.tempDir("tokens")
        let tok = Named(identity: "wide", vocabSize: 70_000, shift: 65_600)
        let f = try Self.open(data, folder, tok)
        let c = try Corpus(path: data, tokenizer: tok, devPercent: 5)
        #expect(f.width == 4 && Array(f.train) == c.train && Array(f.dev) == c.dev && f.train.contains { $0 > 65_535 })
    }

    @Test("a damaged, cut or half-written file is rebuilt, never read",
          arguments: ["payload", "trailer", "header", "truncated", "empty"])
    func corruption(kind: String) throws {
        let data = try Self.corpus(), folder = TestPaths.tempDir("tokens")
        let good = try Self.open(data, folder)
        let expected = (Array(good.train), Array(good.dev))
        let h = FileHandle(forUpdatingAtPath: good.path)!
        let size = Int(h.seekToEndOfFile())
        switch kind {
        case "payload": h.seek(toFileOffset: UInt64(TokenFile.headerBytes + 1001)); h.write(Data([0x5A]))
        case "trailer": h.seek(toFileOffset: UInt64(size - 2)); h.write(Data([0xA5]))
        case "header": h.seek(toFileOffset: 16); h.write(Data([0x01]))  // the train count
        case "truncated": h.truncateFile(atOffset: UInt64(size - 100))
        default: h.truncateFile(atOffset: 0)
        }
        h.closeFile()
        let f = try Self.open(data, folder)
        #expect(!f.reused && Array(f.train) == expected.0 && Array(f.dev) == expected.1)
        #expect(try Self.open(data, folder).reused)
    }

    @Test("a build that stopped before its rename leaves nothing that is read")
    func crashedBuild() throws {
        let data = try Self.corpus(), folder = TestPaths.tempDir("tokens")
        let good = try Self.open(data, folder)
        // What a build killed before its rename leaves: the whole file under its temporary name only.
        let name = (good.path as NSString).lastPathComponent
        try FileManager.default.moveItem(atPath: good.path, toPath: folder + "/." + name + ".tmp-1-2")
        let f = try Self.open(data, folder)
        #expect(!f.reused && FileManager.default.fileExists(atPath: good.path))
    }

    @Test func jsonLinesErrorsNameTheirLine() throws {
        let dir = TestPaths.tempDir("tokfile-bad")
        try "{\"text\": \"a\"}\n{\"text\": 3}\n".write(toFile: dir + "/x.jsonl", atomically: true, encoding: .utf8)
        let folder = TestPaths.tempDir("tokens")
        var message = ""
        do { _ = try Self.open(dir, folder) } catch { message = "\(error)" }
        #expect(message.hasPrefix(dir + "/x.jsonl:2: "), "\(message)")
        #expect((try FileManager.default.contentsOfDirectory(atPath: folder)).isEmpty)
    }
}
