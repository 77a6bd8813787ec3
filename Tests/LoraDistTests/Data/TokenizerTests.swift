import Foundation
import Testing
@testable import LoraDist

/// BPETokenizer against Hugging Face `tokenizers` (Tests/Fixtures/tokenizer, made by
/// tools/make_tokenizer_fixtures.py): SmolLM2 built from its GGUF metadata, and a tiny trained
/// tokenizer under five pre-tokenizers loaded from tokenizer.json.
@Suite struct TokenizerTests {
    static let dir = TestPaths.fixtures + "/tokenizer"
    static let tinyVariants = ["tiny", "tiny_digits", "tiny_llama3", "tiny_qwen2", "tiny_gpt4o"]

    struct Case {
        var text: String
        var ids: [String: [Int32]]
        var decoded: [String: String]

        /// Expected ids for a tokenizer; the tiny variants store only what differs from "tiny".
        func expected(_ name: String) -> [Int32]? { ids[name] ?? (name.hasPrefix("tiny") ? ids["tiny"] : nil) }
    }

    static let cases: [Case] = {
        let text = try! String(contentsOfFile: dir + "/cases.jsonl", encoding: .utf8)
        return text.split(separator: "\n").map { line in
            let o = try! JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let ids = (o["ids"] as! [String: [Int]]).mapValues { $0.map(Int32.init) }
            return Case(text: o["text"] as! String, ids: ids, decoded: o["decoded"] as? [String: String] ?? [:])
        }
    }()

    static let smollm2: Result<BPETokenizer, Error> = Result(catching: {
        let m = try GGUFTokenizerMetadata(path: try smolLM2GGUF())
        return try BPETokenizer(tokens: m.tokens, merges: m.merges, tokenTypes: m.tokenTypes, bos: m.bos, eos: m.eos, pre: m.pre)
    })

    static func tiny(_ name: String) throws -> BPETokenizer {
        try BPETokenizer(tokenizerJSON: Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name)/tokenizer.json")))
    }

    /// Every case: ids equal to `tokenizers`', and decode gives the text back (or, where the
    /// vocabulary lacks a byte of it, what `tokenizers` decodes).
    func check(_ tok: BPETokenizer, _ name: String) {
        var mismatches = 0, checked = 0
        for c in Self.cases {
            guard let want = c.expected(name) else { continue }
            checked += 1
            let got = tok.encode(c.text)
            if got != want {
                mismatches += 1
                if mismatches <= 5 { Issue.record("\(name): \(c.text.debugDescription)\n  got  \(got)\n  want \(want)") }
            }
            let back = tok.decode(want)
            let wantText = c.decoded[name] ?? c.text
            if back != wantText {
                mismatches += 1
                if mismatches <= 5 { Issue.record("\(name) decode: \(back.debugDescription) != \(wantText.debugDescription)") }
            }
        }
        #expect(checked == Self.cases.count)
        #expect(mismatches == 0, "\(name): \(mismatches) mismatches in \(checked) cases")
    }

    @Test func casesAreVaried() {
        #expect(Self.cases.count > 2000)
        #expect(Self.cases.contains { $0.text.isEmpty })
        #expect(Self.cases.contains { $0.text.contains("👨‍👩‍👧‍👦") })
        #expect(Self.cases.contains { $0.text.contains("<|im_start|>") })
    }

    @Test func smollm2FromGGUFMatchesTokenizers() throws {
        let tok = try Self.smollm2.get()
        #expect(tok.vocabSize == 49152)
        #expect(tok.bos == 1 && tok.eos == 2)
        #expect(tok.preTokenizer == "smollm")
        check(tok, "smollm2")
    }

    @Test(arguments: tinyVariants) func tinyTokenizerJSONMatchesTokenizers(_ name: String) throws {
        let tok = try Self.tiny(name)
        #expect(tok.vocabSize == 600)
        #expect(tok.eos == 0 && tok.bos == 0)  // <|endoftext|>
        check(tok, name)
    }

    @Test func specialTokensAreMatchedWhole() throws {
        let tiny = try Self.tiny("tiny")
        #expect(tiny.addedTokens == ["<|endoftext|>": 0, "<|end|>": 1, "<|im_start|>": 2, "<|im_end|>": 3])
        #expect(tiny.encode("<|endoftext|>") == [0])
        #expect(tiny.encode("<|end|>oftext|>").first == 1)  // leftmost-longest
        #expect(tiny.decode([2, 0, 3]) == "<|im_start|><|endoftext|><|im_end|>")
        let smol = try Self.smollm2.get()
        #expect(smol.encode("<|im_start|>user\nhi<|im_end|>").first == 1)
        #expect(smol.encode("<|im_start|>user\nhi<|im_end|>").last == 2)
        #expect(smol.decode([1]) == "<|im_start|>")
    }

    @Test func smollm2SplitsEveryDigit() throws {
        let smol = try Self.smollm2.get()
        let ids = smol.encode("2024")
        #expect(ids.count == 4)
        #expect(smol.decode(ids) == "2024")
    }

    // MARK: - Bad input

    static func tinyJSON() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/tiny/tokenizer.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static func message(_ body: () throws -> Any) -> String {
        do {
            _ = try body()
            return "(no error)"
        } catch let e as LoraDistError {
            return e.message
        } catch {
            return "(not a LoraDistError: \(error))"
        }
    }

    static func fromJSON(_ edit: (inout [String: Any]) -> Void) -> String {
        message {
            var j = try tinyJSON()
            edit(&j)
            return try BPETokenizer(tokenizerJSON: JSONSerialization.data(withJSONObject: j))
        }
    }

    @Test func malformedTokenizerJSON() {
        let m = Self.message { try BPETokenizer(tokenizerJSON: Data("{\"model\": {\"type\": \"BPE\", ".utf8)) }
        #expect(m == "tokenizer.json is not valid JSON")
        #expect(Self.message { try BPETokenizer(tokenizerJSON: Data("[1, 2]".utf8)) } == "tokenizer.json is not a JSON object")
        #expect(Self.fromJSON { $0["model"] = nil } == "tokenizer.json has no \"model\" object")
        let noVocab = Self.fromJSON { j in
            var model = j["model"] as! [String: Any]
            model["vocab"] = nil
            j["model"] = model
        }
        #expect(noVocab == "tokenizer.json model has no \"vocab\" object")
        let badMerge = Self.fromJSON { j in
            var model = j["model"] as! [String: Any]
            model["merges"] = ["Ġ t", "a b c"]
            j["model"] = model
        }
        #expect(badMerge == "tokenizer.json merge 1 \"a b c\" is not two tokens separated by one space")
    }

    @Test func unknownModelType() {
        let m = Self.fromJSON { j in
            var model = j["model"] as! [String: Any]
            model["type"] = "WordPiece"
            j["model"] = model
        }
        #expect(m == "tokenizer.json model type \"WordPiece\" is not supported: only byte-level \"BPE\"")
    }

    @Test func unsupportedPipelinePieces() {
        #expect(Self.fromJSON { $0["normalizer"] = ["type": "NFC"] }.contains("normalizer NFC is not supported"))
        #expect(Self.fromJSON { $0["pre_tokenizer"] = NSNull() }.contains("has no pre_tokenizer"))
        #expect(Self.fromJSON { $0["pre_tokenizer"] = ["type": "Whitespace"] }.contains("must end with ByteLevel"))
        #expect(Self.fromJSON { $0["decoder"] = ["type": "WordPiece"] }.contains("decoder WordPiece is not supported"))
    }

    @Test func mergesReferringToUnknownTokens() {
        let json = Self.fromJSON { j in
            var model = j["model"] as! [String: Any]
            model["merges"] = [["Ġ", "t"], ["Ġ", "nosuchtoken"]]
            j["model"] = model
        }
        #expect(json == "merge 1 \"Ġ nosuchtoken\" uses \"nosuchtoken\", which is not in the vocabulary")
        let merged = Self.message {
            try BPETokenizer(tokens: ["a", "b", "c"], merges: ["a b"], tokenTypes: nil, bos: nil, eos: nil, pre: "gpt2")
        }
        #expect(merged == "merge 0 \"a b\" makes \"ab\", which is not in the vocabulary")
        let gguf = Self.message {
            try BPETokenizer(tokens: ["a", "b", "ab"], merges: ["a b", "a x"], tokenTypes: nil, bos: nil, eos: nil, pre: "gpt2")
        }
        #expect(gguf == "merge 1 \"a x\" uses \"x\", which is not in the vocabulary")
    }

    @Test func unknownGGUFPreTokenizer() {
        let m = Self.message {
            try BPETokenizer(tokens: ["a", "b", "ab"], merges: ["a b"], tokenTypes: nil, bos: nil, eos: nil, pre: "mystery")
        }
        #expect(m.hasPrefix("unknown GGUF pre-tokenizer \"mystery\" (tokenizer.ggml.pre)"))
        let range = Self.message {
            try BPETokenizer(tokens: ["a", "b", "ab"], merges: ["a b"], tokenTypes: nil, bos: 7, eos: nil, pre: "gpt2")
        }
        #expect(range == "tokenizer BOS id 7 is outside the vocabulary of 3")
    }

    // MARK: - Speed

    /// Encodes the Shakespeare corpus (tools/fetch-corpus.sh) with SmolLM2 and prints MB/s.
    /// Measure in release:
    ///   swift build -c release -Xswiftc -enable-testing --scratch-path .build-tok-rel --build-tests
    ///   swift test -c release -Xswiftc -enable-testing --scratch-path .build-tok-rel --skip-build --filter TokenizerTests/encodeThroughput
    @Test func encodeThroughput() throws {
        let tok = try Self.smollm2.get()
        let data = CacheFolders.data
        if !FileManager.default.fileExists(atPath: data + "/shakespeare/.complete") {
            let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-corpus.sh"])
            try #require(status == 0, "tools/fetch-corpus.sh failed: \(err)")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: data + "/shakespeare").filter { $0.hasSuffix(".txt") }.sorted()
        var texts: [String] = []
        var bytes = 0
        for f in files {
            let t = try String(contentsOfFile: data + "/shakespeare/" + f, encoding: .utf8)
            texts.append(t)
            bytes += t.utf8.count
        }
        let start = Date()
        var tokens = 0
        for t in texts { tokens += tok.encode(t).count }
        let seconds = Date().timeIntervalSince(start)
        let mb = Double(bytes) / 1e6
        print("BPETokenizer(SmolLM2) encode: \(String(format: "%.2f", mb)) MB, \(tokens) tokens in "
              + "\(String(format: "%.2f", seconds)) s = \(String(format: "%.2f", mb / seconds)) MB/s")
        #expect(tokens > bytes / 8)
    }
}

/// The SmolLM2 GGUF (fetched by tools/fetch-smollm2.sh when missing).
func smolLM2GGUF() throws -> String {
    let models = CacheFolders.models
    let path = models + "/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    if !FileManager.default.fileExists(atPath: models + "/SmolLM2-135M-Instruct/.complete") {
        let (status, _, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/fetch-smollm2.sh"])
        guard status == 0 else { throw LoraDistError("tools/fetch-smollm2.sh failed: \(err)") }
    }
    return path
}

/// Just the tokenizer metadata of a GGUF (v2/v3): header, then key/value pairs, read until the
/// tensor infos. Private to the tests so they do not depend on the library's GGUF reader.
private struct GGUFTokenizerMetadata {
    var tokens: [String] = []
    var merges: [String] = []
    var tokenTypes: [Int]?
    var bos: Int?
    var eos: Int?
    var pre: String?

    private enum Value {
        case int(Int)
        case string(String)
        case strings([String])
        case ints([Int])
        case other
    }

    init(path: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var r = Reader(raw: raw)
            guard try r.u32() == 0x4655_4747 else { throw LoraDistError("\(path) is not a GGUF file") }
            let version = try r.u32()
            guard version == 2 || version == 3 else { throw LoraDistError("GGUF version \(version) is not supported") }
            _ = try r.u64()  // tensor count
            let count = try r.u64()
            for _ in 0..<count {
                let key = try r.string()
                let type = try r.u32()
                let value = try r.value(type, keep: key.hasPrefix("tokenizer.ggml."))
                switch (key, value) {
                case ("tokenizer.ggml.tokens", .strings(let s)): tokens = s
                case ("tokenizer.ggml.merges", .strings(let s)): merges = s
                case ("tokenizer.ggml.token_type", .ints(let v)): tokenTypes = v
                case ("tokenizer.ggml.bos_token_id", .int(let v)): bos = v
                case ("tokenizer.ggml.eos_token_id", .int(let v)): eos = v
                case ("tokenizer.ggml.pre", .string(let s)): pre = s
                default: break
                }
            }
        }
    }

    private struct Reader {
        let raw: UnsafeRawBufferPointer
        var at = 0

        mutating func take(_ n: Int) throws -> Int {
            guard n >= 0, at + n <= raw.count else { throw LoraDistError("GGUF metadata is truncated") }
            defer { at += n }
            return at
        }

        mutating func u32() throws -> UInt32 { raw.loadUnaligned(fromByteOffset: try take(4), as: UInt32.self) }
        mutating func u64() throws -> UInt64 { raw.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self) }

        mutating func string() throws -> String {
            let n = Int(try u64())
            let start = try take(n)
            return String(decoding: UnsafeRawBufferPointer(rebasing: raw[start..<start + n]), as: UTF8.self)
        }

        /// Byte size of a scalar type; nil for string/array.
        static func size(_ type: UInt32) throws -> Int? {
            switch type {
            case 0, 1, 7: return 1
            case 2, 3: return 2
            case 4, 5, 6: return 4
            case 10, 11, 12: return 8
            case 8, 9: return nil
            default: throw LoraDistError("GGUF value type \(type) is unknown")
            }
        }

        mutating func int(_ type: UInt32) throws -> Int {
            let o = try take(try Self.size(type)!)
            switch type {
            case 0: return Int(raw[o])
            case 1: return Int(Int8(bitPattern: raw[o]))
            case 2: return Int(raw.loadUnaligned(fromByteOffset: o, as: UInt16.self))
            case 3: return Int(raw.loadUnaligned(fromByteOffset: o, as: Int16.self))
            case 4: return Int(raw.loadUnaligned(fromByteOffset: o, as: UInt32.self))
            case 5: return Int(raw.loadUnaligned(fromByteOffset: o, as: Int32.self))
            case 7: return Int(raw[o])
            case 10: return Int(raw.loadUnaligned(fromByteOffset: o, as: UInt64.self))
            case 11: return Int(raw.loadUnaligned(fromByteOffset: o, as: Int64.self))
            default: return 0  // floats: not needed
            }
        }

        mutating func value(_ type: UInt32, keep: Bool) throws -> Value {
            switch type {
            case 8: return .string(try string())
            case 9:
                let elem = try u32()
                let n = Int(try u64())
                if elem == 8 {
                    var out: [String] = []
                    if keep { out.reserveCapacity(n) }
                    for _ in 0..<n {
                        let s = try string()
                        if keep { out.append(s) }
                    }
                    return keep ? .strings(out) : .other
                }
                guard let size = try Self.size(elem) else { throw LoraDistError("GGUF nested arrays are not supported") }
                if !keep || elem == 6 || elem == 12 {
                    _ = try take(size * n)
                    return .other
                }
                var out: [Int] = []
                out.reserveCapacity(n)
                for _ in 0..<n { out.append(try int(elem)) }
                return .ints(out)
            case 6, 12:
                _ = try take(try Self.size(type)!)
                return .other
            default:
                return .int(try int(type))
            }
        }
    }
}
