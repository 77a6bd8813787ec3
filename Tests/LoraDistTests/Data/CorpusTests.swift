import Foundation
import Testing
@testable import LoraDist

/// Corpus reading: JSON Lines (as `datasets.Dataset.to_json` writes it), mixed folders,
/// UTF-8 refusal and replacement, and the train/dev split of plain text kept as it was.
@Suite struct CorpusTests {
    static let fixtures = TestPaths.fixtures + "/jsonl"

    static func tinyBPE() throws -> BPETokenizer {
        try BPETokenizer(tokenizerJSON: Data(contentsOf: URL(fileURLWithPath: TestPaths.fixtures + "/tokenizer/tiny/tokenizer.json")))
    }

    static func write(_ dir: String, _ name: String, _ text: String) throws -> String {
        let path = dir + "/" + name
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func write(_ dir: String, _ name: String, bytes: [UInt8]) throws -> String {
        let path = dir + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The message of the LoraDistError `body` throws (nil when it does not throw).
    static func refusal(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let e as LoraDistError { return e.message } catch { return "\(error)" }
    }

    /// A string's UTF-8 bytes as ByteTokenizer ids.
    static func ids(_ s: String) -> [Int32] { s.utf8.map { Int32($0) } }

    static func all(_ path: String, _ tok: Tokenizer = ByteTokenizer(), _ reading: CorpusReading = CorpusReading()) throws -> [Int32] {
        try Corpus.tokens(path: path, tokenizer: tok, reading: reading)
    }

    // MARK: - JSON Lines

    @Test("datasets' to_json output reads as the same documents as one .txt file per text",
          arguments: ["to_json.jsonl", "to_json_utf8.jsonl"])
    func datasetsToJSON(_ file: String) throws {
        let texts = try FileManager.default.contentsOfDirectory(atPath: Self.fixtures + "/texts").sorted()
        #expect(texts.count == 7)
        for tok in [ByteTokenizer() as Tokenizer, try Self.tinyBPE()] {
            let jsonl = try Corpus(path: Self.fixtures + "/" + file, tokenizer: tok, devPercent: 0)
            let txt = try Corpus(path: Self.fixtures + "/texts", tokenizer: tok, devPercent: 0)
            #expect(jsonl.train == txt.train, "\(file): \(jsonl.train.count) vs \(txt.train.count) tokens")
            #expect(jsonl.dev.isEmpty && jsonl.documents == 7 && txt.documents == 7)
        }
        // Document boundaries: BOS text EOS per non-empty record, nothing for the empty one.
        let ids = try Self.all(Self.fixtures + "/" + file)
        var docs: [String] = []
        var current: [UInt8]?
        for id in ids {
            switch id {
            case 256: #expect(current == nil); current = []
            case 257: docs.append(String(decoding: current!, as: UTF8.self)); current = nil
            default: current!.append(UInt8(id))
            }
        }
        let expected = try texts.map { try String(contentsOfFile: Self.fixtures + "/texts/" + $0, encoding: .utf8) }
        #expect(docs == expected.filter { !$0.isEmpty })
        #expect(docs[2].contains("\u{1F600}") && docs[2].contains("\u{0}") && docs[1].contains("a/b, \"quoted\", back\\slash"))
        #expect(!docs.joined().contains("\u{FFFD}"))
    }

    @Test("--text-field picks the field; keys are compared unescaped")
    func textField() throws {
        let dir = TestPaths.tempDir("corpus-field")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try Self.write(dir, "d.jsonl", """
            {"text": "not this", "\\u0062ody": "first body"}
            {"body": "second body", "n": [1, {"text": 2}]}

            """)
        let ids = try Self.all(f, ByteTokenizer(), CorpusReading(textField: "body"))
        let want: [Int32] = [256] + Self.ids("first body") + [257, 256] + Self.ids("second body") + [257]
        #expect(ids == want)
        let m = Self.refusal { _ = try Self.all(f) }
        #expect(m == "\(f):2: no \"text\" field (it has \"body\", \"n\"); choose the field with --text-field")
    }

    @Test("blank lines, CRLF line ends, a BOM and Python's NaN are accepted")
    func lenientWhereHarmless() throws {
        let dir = TestPaths.tempDir("corpus-blank")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try Self.write(dir, "d.jsonl", "\u{FEFF}{\"text\":\"a\",\"x\":NaN,\"y\":-Infinity}\r\n\r\n   \n{\"text\":\"b\",\"z\":1.5e-3}")
        #expect(try Self.all(f) == [256, 97, 257, 256, 98, 257])
    }

    static let malformed: [(line: String, message: String)] = [
        (#"{"text": "a",}"#, "not JSON: expected a '\"' to start a key at byte 14 of the line"),
        (#"{"text": "a"#, "not JSON: a string is not closed at the end of the line"),
        (#"{"text": "a"} {"#, "not JSON: expected the end of the line after the object at byte 15 of the line"),
        (#"text: a"#, "not JSON: expected a value at byte 1 of the line"),
        (#"[{"text": "a"}]"#, "a JSON record must be an object, this line is an array"),
        (#""a""#, "a JSON record must be an object, this line is a string"),
        (#"{"title": "a"}"#, "no \"text\" field (it has \"title\"); choose the field with --text-field"),
        (#"{}"#, "no \"text\" field (the object is empty); choose the field with --text-field"),
        (#"{"text": null}"#, "field \"text\" is null, not a string"),
        (#"{"text": ["a"]}"#, "field \"text\" is an array, not a string"),
        (#"{"text": 12}"#, "field \"text\" is a number, not a string"),
        (#"{"text": "a", "text": "b"}"#, "field \"text\" appears twice"),
        ("{\"text\": \"a\tb\"}", "not JSON: control character U+0009 inside a string (JSON needs it escaped) at byte 12 of the line"),
        (#"{"text": "a\xb"}"#, "not JSON: unknown escape '\\x' at byte 13 of the line"),
        (#"{"text": "a\u12"}"#, "not JSON: expected four hex digits after \\u at byte 16 of the line"),
        (#"{"text": "\ud800 alone"}"#, "lone surrogate \\ud800 in a string at byte 11 of the line is not text (pass --replace-invalid-utf8 to read it as U+FFFD)"),
        (#"{"text": "a", "n": 01}"#, "not JSON: expected ',' or '}' after a value at byte 21 of the line"),
        (#"{"text": "a", "n": tru}"#, "not JSON: expected a value at byte 20 of the line"),
        (String(repeating: "[", count: 600), "not JSON: nested more than 512 deep at byte 513 of the line"),
    ]

    @Test("a malformed line is refused with file:line and what is wrong", arguments: 0..<malformed.count)
    func malformedLine(_ k: Int) throws {
        let dir = TestPaths.tempDir("corpus-bad-\(k)")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (line, message) = Self.malformed[k]
        // Line 3: after a good record and a blank line (line numbers count every line).
        let f = try Self.write(dir, "d.jsonl", "{\"text\": \"good\"}\n\n\(line)\n{\"text\": \"after\"}\n")
        #expect(Self.refusal { _ = try Self.all(f) } == "\(f):3: \(message)")
    }

    @Test("JSON Lines split by record: whole documents, the same whatever else is in the folder or between the lines")
    func recordSplit() throws {
        let dir = TestPaths.tempDir("corpus-records")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let records = (0..<60).map { "record \($0): " + String(repeating: "words and more words ", count: 1 + $0 % 7) }
        func jsonl(_ separator: String) -> String {
            records.map { "{\"id\": 1, \"text\": \"\($0)\"}" }.joined(separator: separator) + "\n"
        }
        _ = try Self.write(dir, "a/r.jsonl", jsonl("\n"))
        _ = try Self.write(dir, "b/r.jsonl", jsonl("\n\n  \n"))
        _ = try Self.write(dir, "b/other.txt", String(repeating: "other text\n", count: 300))  // one block: one whole document
        func documents(_ ids: [Int32]) -> [String] {
            ids.split(separator: 256).map { d in
                #expect(d.last == 257)
                return String(decoding: d.dropLast().map { UInt8($0) }, as: UTF8.self)
            }
        }
        let a = try Corpus(path: dir + "/a", tokenizer: ByteTokenizer(), devPercent: 30)
        let b = try Corpus(path: dir + "/b", tokenizer: ByteTokenizer(), devPercent: 30)
        #expect(a.train.first == 256 && a.dev.first == 256)
        let (trainDocs, devDocs) = (documents(a.train), documents(a.dev))
        #expect(trainDocs.count + devDocs.count == 60 && Set(trainDocs + devDocs) == Set(records))
        #expect(devDocs.count >= 8 && devDocs.count <= 30, "\(devDocs.count) of 60 records held out at 30%")
        #expect(documents(b.dev).filter { $0.hasPrefix("record") } == devDocs)
        #expect(a.documents == 60 && b.documents == 61)
    }

    // MARK: - UTF-8

    @Test("invalid UTF-8 is refused with the file and byte offset")
    func invalidUTF8() throws {
        let dir = TestPaths.tempDir("corpus-utf8")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let prefix = Array("héllo\nwörld ".utf8)  // 14 bytes
        let cases: [([UInt8], String)] = [
            ([0xFF], "0xFF"), ([0x80], "0x80"), ([0xC0, 0x80], "0xC0"),            // stray, overlong
            ([0xED, 0xA0, 0x80], "0xED"), ([0xF4, 0x90, 0x80, 0x80], "0xF4"),     // surrogate, above U+10FFFF
            ([0xE2, 0x82], "0xE2"),                                              // truncated at the end of the file
        ]
        for (bad, byte) in cases {
            let f = try Self.write(dir, "c.txt", bytes: prefix + bad)
            #expect(Self.refusal { _ = try Self.all(f) }
                    == "\(f): not valid UTF-8 at byte offset 14 (line 2, byte \(byte)); pass --replace-invalid-utf8 to read invalid bytes as U+FFFD")
        }
        // In JSON Lines the offset counts from the start of the file, not of the line.
        let j = try Self.write(dir, "d.jsonl", bytes: Array("{\"text\":\"ok\"}\n{\"text\":\"b".utf8) + [0xFE] + Array("\"}\n".utf8))
        #expect(Self.refusal { _ = try Self.all(j) }?.hasPrefix("\(j): not valid UTF-8 at byte offset 24 (line 2, byte 0xFE)") == true)
    }

    @Test("UTF8Check agrees with Swift's decoder on random bytes")
    func utf8CheckMatchesSwift() {
        var g = SplitMix64(seed: 7)
        for n in [0, 1, 3, 17, 1000, 20000] {
            for mix in 0..<3 {
                // mix 0: any byte; 1: mostly ASCII; 2: mostly bytes of multi-byte sequences
                let bytes: [UInt8] = (0..<n).map { _ in
                    let r = UInt8(truncatingIfNeeded: g.next())
                    return mix == 1 && r < 200 ? r & 0x7F : mix == 2 ? 0x80 | (r & 0x7F) : r
                }
                let swift = Array(String(decoding: bytes, as: UTF8.self).utf8)
                bytes.withUnsafeBufferPointer { b in
                    let r = UTF8Check.replacing(b)
                    #expect(r.bytes == swift)
                    #expect((UTF8Check.firstInvalid(b) == nil) == (String(validating: bytes, as: UTF8.self) != nil))
                    #expect((r.replaced == 0) == (UTF8Check.firstInvalid(b) == nil))
                }
            }
        }
        let sample: [UInt8] = [0x61, 0xFF, 0x62, 0xE2, 0x82, 0x63, 0xF0, 0x9F, 0x98]
        sample.withUnsafeBufferPointer { b in
            let r = UTF8Check.replacing(b)
            #expect(r.replaced == 1 + 2 + 3)   // FF, E2 82 (one maximal subpart), F0 9F 98
            #expect(String(decoding: r.bytes, as: UTF8.self) == "a\u{FFFD}b\u{FFFD}c\u{FFFD}")
            #expect(UTF8Check.firstInvalid(b) == 1)
        }
    }

    @Test("--replace-invalid-utf8 reads invalid bytes as U+FFFD and counts them")
    func replaceInvalidUTF8() throws {
        let dir = TestPaths.tempDir("corpus-replace")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let reading = CorpusReading(replaceInvalidUTF8: true)
        let bytes: [UInt8] = Array("ok ".utf8) + [0xFF, 0xE2, 0x82] + Array(" end\n".utf8)
        _ = try Self.write(dir, "c.txt", bytes: bytes)
        _ = try Self.write(dir, "d.jsonl", bytes: Array("{\"text\":\"x".utf8) + [0xC3] + Array("\\ud800y\\udc00\"}\n".utf8))
        let c = try Corpus(path: dir, tokenizer: ByteTokenizer(), devPercent: 0, reading: reading)
        #expect(c.replacedBytes == 3 + 1 && c.replacedSurrogates == 2)
        let fffd = Self.ids("\u{FFFD}")
        let txt: [Int32] = [256] + Self.ids("ok ") + fffd + fffd + Self.ids(" end\n") + [257]
        let jsonl: [Int32] = [256] + Self.ids("x") + fffd + fffd + Self.ids("y") + fffd + [257]
        #expect(c.train == txt + jsonl)
        // As Swift's own decoder would have read it: what every file gave before.
        #expect(Array(c.train[1..<(txt.count - 1)]) == Self.ids(String(decoding: bytes, as: UTF8.self)))
    }

    // MARK: - Folders and files

    @Test("a folder mixes .txt and .jsonl (sorted, recursive); other data files are listed, compressed ones refused")
    func mixedFolder() throws {
        let dir = TestPaths.tempDir("corpus-mixed")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try Self.write(dir, "a.txt", "plain text\n")
        let b = try Self.write(dir, "b.jsonl", "{\"text\":\"one\"}\n{\"text\":\"two\"}\n")
        let c = try Self.write(dir, "sub/c.txt", "more text\n")
        for other in ["README.md", "SHA256SUMS", "notes.json", "table.CSV", ".hidden.json", "sub/x.parquet"] {
            _ = try Self.write(dir, other, "{}\n")
        }
        #expect(try Corpus.listFiles(dir) == [a, b, c])
        let corpus = try Corpus(path: dir, tokenizer: ByteTokenizer(), devPercent: 0)
        #expect(corpus.skipped == ["notes.json", "sub/x.parquet", "table.CSV"])
        #expect(corpus.documents == 4)
        #expect(corpus.train == (try Self.all(a)) + (try Self.all(b)) + (try Self.all(c)))

        _ = try Self.write(dir, "sub/more.jsonl.gz", "")
        #expect(Self.refusal { _ = try Self.all(dir) } == "\(dir)/sub/more.jsonl.gz: a compressed file is not read: decompress it first")
    }

    @Test("what a path cannot be: refused with the reason")
    func refusedPaths() throws {
        let dir = TestPaths.tempDir("corpus-refused")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let json = try Self.write(dir, "train.json", "{\"text\":\"a\"}\n")
        #expect(Self.refusal { _ = try Self.all(json) }?.hasPrefix("\(json): a .json file is not read") == true)
        let gz = try Self.write(dir, "c.txt.gz", "")
        #expect(Self.refusal { _ = try Self.all(gz) } == "\(gz): a compressed file is not read: decompress it first")
        let pq = try Self.write(dir, "d.parquet", "")
        #expect(Self.refusal { _ = try Self.all(pq) }?.hasPrefix("\(pq): a .parquet file is not read") == true)
        // A folder with nothing to read names what it holds; one with a compressed .txt refuses it.
        try FileManager.default.removeItem(atPath: gz)
        let m = Self.refusal { _ = try Self.all(dir) }
        #expect(m?.hasPrefix("data folder \(dir) holds no .txt files and no .jsonl files (it holds d.parquet, train.json); a .parquet file") == true, "\(m ?? "")")
        _ = try Self.write(dir, "c.txt.gz", "")
        #expect(Self.refusal { _ = try Self.all(dir) } == "\(dir)/c.txt.gz: a compressed file is not read: decompress it first")
        // Any other single file is text, as before.
        let md = try Self.write(dir, "notes.md", "# notes\n")
        let want: [Int32] = [256] + Self.ids("# notes\n") + [257]
        #expect(try Self.all(md) == want)
    }

    // MARK: - The plain-text split is what it was

    /// Corpus(path:) before JSON Lines, verbatim but for the names.
    static func previousAlgorithm(_ path: String, tokenizer: Tokenizer, devPercent: Int) throws -> (train: [Int32], dev: [Int32]) {
        let files = try FileManager.default.subpathsOfDirectory(atPath: path).filter { $0.hasSuffix(".txt") }.sorted()
            .map { path + "/" + $0 }
        var train: [Int32] = [], dev: [Int32] = []
        for file in files {
            let data = FileManager.default.contents(atPath: file)!
            let text = String(decoding: data, as: UTF8.self)
            let name = (file as NSString).lastPathComponent
            let utf8 = Array(text.utf8)
            var start = 0, block = 0
            while start < utf8.count {
                var end = min(start + Corpus.blockBytes, utf8.count)
                while end < utf8.count, utf8[end - 1] != UInt8(ascii: "\n"), end - start < 2 * Corpus.blockBytes { end += 1 }
                var ids = tokenizer.encode(String(decoding: utf8[start..<end], as: UTF8.self))
                if start == 0 { ids.insert(tokenizer.bos, at: 0) }
                if end == utf8.count { ids.append(tokenizer.eos) }
                if Int(fnv1a("\(name)#\(block)") % 100) < devPercent { dev += ids } else { train += ids }
                start = end
                block += 1
            }
        }
        if dev.isEmpty && devPercent > 0 {
            let cut = train.count - max(train.count / 10, 1)
            dev = Array(train[cut...])
            train = Array(train[..<cut])
        }
        return (train, dev)
    }

    @Test(".txt corpora split into the same train and dev tokens as before")
    func textSplitUnchanged() throws {
        let dir = TestPaths.tempDir("corpus-txt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var g = SplitMix64(seed: 3)
        let words = ["the", "rain", "in", "Spain", "café", "naïve", "中文", "😀", "stays", "plain,", "—", "x"]
        for f in 0..<6 {
            var text = f == 2 ? "\u{FEFF}" : ""
            let lines = 200 + 150 * f
            for l in 0..<lines {
                let n = l == 77 && f == 4 ? 3000 : 3 + g.below(25)  // file 4 has one line longer than 2 blocks
                text += (0..<n).map { _ in f == 4 && l == 77 ? "ascii" : words[g.below(words.count)] }.joined(separator: " ")
                text += f == 3 ? "\r\n" : "\n"
            }
            _ = try Self.write(dir, f == 5 ? "sub/f\(f).txt" : "f\(f).txt", text)
        }
        _ = try Self.write(dir, "tiny.txt", "a short file without a final newline")
        for tok in [ByteTokenizer() as Tokenizer, try Self.tinyBPE()] {
            for devPercent in [0, 5, 20] {
                let now = try Corpus(path: dir, tokenizer: tok, devPercent: devPercent)
                let before = try Self.previousAlgorithm(dir, tokenizer: tok, devPercent: devPercent)
                #expect(now.train == before.train && now.dev == before.dev, "devPercent \(devPercent)")
            }
        }
    }

    @Test("a line longer than two blocks is cut on a character boundary, not inside a character")
    func longLineCutOnCharacter() throws {
        let dir = TestPaths.tempDir("corpus-long")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = "a" + String(repeating: "é", count: 9000)  // the cut at 8192 bytes falls inside an é
        let f = try Self.write(dir, "long.txt", text)
        let ids = try Self.all(f)
        #expect(String(decoding: ids.filter { $0 < 256 }.map { UInt8($0) }, as: UTF8.self) == text)
        // What the previous cut made of it: two U+FFFD where one é was.
        let before = try Self.previousAlgorithm(dir, tokenizer: ByteTokenizer(), devPercent: 0).train
        #expect(String(decoding: before.filter { $0 < 256 }.map { UInt8($0) }, as: UTF8.self).contains("\u{FFFD}"))
    }
}

/// The same refusals from the command line: one line, exit 1, nothing written.
extension CorpusTests {
    @Suite("Corpus input from the command line", .tags(.cli))
    struct CLI {
        static func corpusText() -> String {
            (0..<120).map { "Line \($0): the river ran quietly past the old mill, where the children played." }
                .joined(separator: "\n") + "\n"
        }

        static func train(_ data: String, runDir: String, _ extra: [String] = []) throws -> (Int32, String, String) {
            try runProcess(TestPaths.binary, ["train", "--model", "tiny", "--steps", "2", "--seq", "16", "--batch", "2",
                                              "--quiet", "--data", data, "--run-dir", runDir] + extra)
        }

        static func expectOneErrorLine(_ result: (Int32, String, String), contains expected: String, runDir: String) {
            let (status, stdout, stderr) = result
            #expect(status == 1, "exit \(status); stderr: \(stderr)")
            let lines = stderr.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.count == 2 && lines[1].isEmpty, "stderr is not one line: \(stderr.debugDescription)")
            #expect(lines.first?.hasPrefix("lora-dist: error: ") == true)
            #expect(stderr.contains(expected), "expected \(expected.debugDescription) in \(stderr.debugDescription)")
            #expect(stdout.isEmpty, "stdout: \(stdout)")
            #expect(!FileManager.default.fileExists(atPath: runDir), "\(runDir) was created")
        }

        @Test func invalidUTF8Refused() throws {
            let dir = TestPaths.tempDir("cli-utf8")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var bytes = Array(Self.corpusText().utf8)
            bytes[5000] = 0xFF
            let f = dir + "/c.txt"
            try Data(bytes).write(to: URL(fileURLWithPath: f))
            Self.expectOneErrorLine(try Self.train(f, runDir: dir + "/run"),
                                    contains: "\(f): not valid UTF-8 at byte offset 5000 (line ", runDir: dir + "/run")
            // --dev-data is read the same way.
            let ok = dir + "/ok.txt"
            try Self.corpusText().write(toFile: ok, atomically: true, encoding: .utf8)
            Self.expectOneErrorLine(try Self.train(ok, runDir: dir + "/run", ["--dev-data", f]),
                                    contains: "\(f): not valid UTF-8 at byte offset 5000", runDir: dir + "/run")

            // With --replace-invalid-utf8 it trains and says how much it replaced.
            let (status, stdout, stderr) = try Self.train(f, runDir: dir + "/run2", ["--replace-invalid-utf8"])
            #expect(status == 0, "\(stderr)")
            #expect(stderr.contains("lora-dist: replaced 1 invalid UTF-8 byte(s) with U+FFFD\n"), "\(stderr)")
            #expect(stdout.contains("lora done"))
        }

        @Test func malformedJSONLinesRefused() throws {
            let dir = TestPaths.tempDir("cli-jsonl")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let good = Self.corpusText().split(separator: "\n").map { "{\"text\": \"\($0)\"}" }
            var lines = good
            lines[40] = "{\"text\": \"unterminated}"
            let f = dir + "/d.jsonl"
            try (lines.joined(separator: "\n") + "\n").write(toFile: f, atomically: true, encoding: .utf8)
            Self.expectOneErrorLine(try Self.train(f, runDir: dir + "/run"),
                                    contains: "\(f):41: not JSON: a string is not closed", runDir: dir + "/run")
            // The same file, fixed, trains; under eval too, with another text field.
            try (good.joined(separator: "\n") + "\n").write(toFile: f, atomically: true, encoding: .utf8)
            let (status, stdout, stderr) = try Self.train(f, runDir: dir + "/run")
            #expect(status == 0, "\(stderr)")
            #expect(stdout.contains("lora done"))
            let g = dir + "/e.jsonl"
            try (good.map { $0.replacingOccurrences(of: "\"text\"", with: "\"body\"") }.joined(separator: "\n") + "\n")
                .write(toFile: g, atomically: true, encoding: .utf8)
            let (s2, out2, err2) = try runProcess(TestPaths.binary, ["eval", "--model", "tiny", "--data", g, "--seq", "16",
                                                                     "--windows", "4", "--text-field", "body"])
            #expect(s2 == 0, "\(err2)")
            #expect(out2.contains("perplexity"))
            let (s3, _, err3) = try runProcess(TestPaths.binary, ["eval", "--model", "tiny", "--data", g, "--seq", "16", "--windows", "4"])
            #expect(s3 == 1 && err3.contains("\(g):1: no \"text\" field (it has \"body\")"), "\(err3)")
        }

        @Test("under mpirun every rank refuses and one line is printed")
        func refusedOnEveryRank() throws {
            let dir = TestPaths.tempDir("cli-utf8-mpi")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let f = dir + "/c.txt"
            try Data(Array(Self.corpusText().utf8) + [0xC3]).write(to: URL(fileURLWithPath: f))
            let (status, out, err) = try MultiRankCLITests.launch(2, ["train", "--model", "tiny", "--data", f, "--run-dir", dir + "/run"])
            #expect(status != 0)
            let lines = err.split(separator: "\n").filter { $0.contains("lora-dist: error:") }
            #expect(lines.count == 1, "\(err)")
            #expect(lines.first?.contains("not valid UTF-8 at byte offset") == true)
            #expect(out.isEmpty)
            #expect(!FileManager.default.fileExists(atPath: dir + "/run"))
        }
    }
}
