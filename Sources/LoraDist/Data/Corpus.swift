import Foundation

/// How corpus files are read: which JSON Lines field holds the text, and what to do
/// with bytes that are not UTF-8.
public struct CorpusReading: Equatable, Sendable {
    /// The field of each JSON Lines record that holds its text.
    public var textField: String
    /// Read invalid UTF-8 (and lone surrogate escapes in JSON Lines) as U+FFFD instead of refusing the file.
    public var replaceInvalidUTF8: Bool

    public init(textField: String = "text", replaceInvalidUTF8: Bool = false) {
        self.textField = textField
        self.replaceInvalidUTF8 = replaceInvalidUTF8
    }
}

extension TrainOptions {
    /// How this run reads --data and --dev-data.
    public var corpusReading: CorpusReading {
        CorpusReading(textField: textField, replaceInvalidUTF8: replaceInvalidUTF8)
    }
}

/// A tokenised corpus split into train and dev token streams.
///
/// A corpus path is a file or a folder. A `.jsonl` file holds JSON Lines, one record
/// per line, each record a document (see `JSONLines`); any other file is one plain
/// text document. A folder contributes every `.txt` and `.jsonl` file under it.
/// Every document starts with BOS and ends with EOS. Files must be UTF-8.
///
/// The split is deterministic and independent of file order: a text file is cut into
/// blocks of about `blockBytes`, and a block goes to dev when a hash of (file name,
/// block index) falls under `devPercent`; a JSON Lines record goes to dev, whole, when
/// a hash of (file name, record index) does.
public struct Corpus {
    public let train: [Int32]
    public let dev: [Int32]
    /// Text files plus JSON Lines records.
    public let documents: Int
    /// Bytes of the files read.
    public let bytes: Int
    /// Invalid UTF-8 bytes read as U+FFFD (only with `replaceInvalidUTF8`; otherwise they are refused).
    public let replacedBytes: Int
    /// Lone surrogate escapes (`\uD800`) in JSON Lines strings read as U+FFFD (likewise).
    public let replacedSurrogates: Int
    /// Data files in a data folder that were not read (.json, .csv, .parquet, .TXT, ...), relative to the folder.
    public let skipped: [String]

    public static let blockBytes = 4096

    /// Train and dev from separate paths (corpora already split by document).
    public init(train: String, dev: String, tokenizer: Tokenizer, reading: CorpusReading = CorpusReading()) throws {
        let t = try Corpus(path: train, tokenizer: tokenizer, devPercent: 0, reading: reading)
        let d = try Corpus(path: dev, tokenizer: tokenizer, devPercent: 0, reading: reading)
        self.train = t.train + t.dev
        self.dev = d.train + d.dev
        documents = t.documents
        bytes = t.bytes
        let same = train == dev  // eval reads one path as both
        replacedBytes = same ? d.replacedBytes : t.replacedBytes + d.replacedBytes
        replacedSurrogates = same ? d.replacedSurrogates : t.replacedSurrogates + d.replacedSurrogates
        skipped = same ? d.skipped : t.skipped + d.skipped
    }

    /// All of a path's tokens, for evaluation (test sets, other domains).
    public static func tokens(path: String, tokenizer: Tokenizer, reading: CorpusReading = CorpusReading()) throws -> [Int32] {
        let c = try Corpus(path: path, tokenizer: tokenizer, devPercent: 0, reading: reading)
        return c.train + c.dev
    }

    public init(path: String, tokenizer: Tokenizer, devPercent: Int = 5, reading: CorpusReading = CorpusReading()) throws {
        let text = try CorpusText(path: path, reading: reading, devPercent: devPercent)
        var train: [Int32] = [], dev: [Int32] = []
        let replacedSurrogates = try text.tokenize(text.units.indices, tokenizer: tokenizer, train: &train, dev: &dev)
        guard !train.isEmpty || !dev.isEmpty else { throw text.holdsNoText }
        if dev.isEmpty && devPercent > 0 {  // a tiny corpus: hold out its last tenth
            let cut = Self.tinyCut(train.count)
            dev = Array(train[cut...])
            train = Array(train[..<cut])
        }
        self.train = train
        self.dev = dev
        self.documents = text.documents
        self.bytes = text.bytes
        self.replacedBytes = text.replacedBytes
        self.replacedSurrogates = replacedSurrogates
        self.skipped = text.listing.skipped
    }

    /// Where a corpus with no dev block is cut: its last tenth (at least one token) becomes dev.
    static func tinyCut(_ count: Int) -> Int { count - max(count / 10, 1) }

    static func isDev(_ name: String, _ unit: Int, _ devPercent: Int) -> Bool {
        Int(fnv1a("\(name)#\(unit)") % 100) < devPercent
    }

    /// A document's blocks: each block ends after the first line end at or past `blockBytes`,
    /// or at 2 × `blockBytes` when a line is longer (moved on to the next character boundary,
    /// so a character is never cut in two). An empty document has no blocks.
    static func blockRanges(_ utf8: UnsafeBufferPointer<UInt8>) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start = 0
        while start < utf8.count {
            var end = min(start + blockBytes, utf8.count)
            while end < utf8.count, utf8[end - 1] != UInt8(ascii: "\n"), end - start < 2 * blockBytes { end += 1 }
            while end < utf8.count, utf8[end] & 0xC0 == 0x80 { end += 1 }
            out.append(start..<end)
            start = end
        }
        return out
    }

    // MARK: - Which files

    public enum Format: Equatable, Sendable {
        case text, jsonLines
    }

    /// The files a path stands for, with their format, and (for a folder) what was not read.
    public struct Listing {
        public let files: [(path: String, format: Format)]
        public let skipped: [String]
    }

    static let compressed: Set<String> = ["gz", "bz2", "xz", "zst", "zip", "tgz", "tar", "7z", "lz4"]

    /// Why a file of this extension is not read, or nil when it is read (as text or JSON Lines).
    static func refusal(extension ext: String) -> String? {
        switch ext {
        case "json":
            return "a .json file is not read (it may hold one JSON document): if it holds one JSON object per line, "
                + "as Dataset.to_json writes, name it .jsonl"
        case "parquet", "arrow":
            return "a .\(ext) file is not read: write JSON Lines (Dataset.to_json(\"NAME.jsonl\")) or text"
        case _ where compressed.contains(ext):
            return "a compressed file is not read: decompress it first"
        default:
            return nil
        }
    }

    static func format(of file: String) -> Format {
        (file as NSString).pathExtension == "jsonl" ? .jsonLines : .text
    }

    /// A file (`.jsonl`: JSON Lines; `.json`, `.parquet`, `.arrow` and compressed files are refused;
    /// anything else is text), or every `.txt` and `.jsonl` file under a folder, sorted so every rank
    /// sees the same order. A folder's compressed `.txt` / `.jsonl` files are refused; its other files
    /// are skipped, and those that look like data are listed in `skipped`.
    public static func list(_ path: String) throws -> Listing {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LoraDistError("data path \(path) does not exist")
        }
        guard isDir.boolValue else {
            if let why = refusal(extension: (path as NSString).pathExtension.lowercased()) {
                throw LoraDistError("\(path): \(why)")
            }
            return Listing(files: [(path, format(of: path))], skipped: [])
        }
        guard let walker = FileManager.default.enumerator(atPath: path) else {
            throw LoraDistError("cannot list data folder \(path)")
        }
        var files: [String] = [], others: [String] = []
        for case let rel as String in walker {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path + "/" + rel, isDirectory: &isDir), !isDir.boolValue else { continue }
            if rel.hasSuffix(".txt") || rel.hasSuffix(".jsonl") {
                files.append(rel)
                continue
            }
            let ns = rel as NSString
            let inner = (ns.deletingPathExtension as NSString).pathExtension
            if compressed.contains(ns.pathExtension.lowercased()), inner == "txt" || inner == "jsonl" {
                throw LoraDistError("\(path)/\(rel): a compressed file is not read: decompress it first")
            }
            // Hidden files (.DS_Store, .git/...) are not worth a mention.
            if !rel.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { others.append(rel) }
        }
        files.sort()
        others.sort()
        // What a folder's reader should hear about: data lora-dist does not read (README.md, SHA256SUMS
        // and the like go unmentioned).
        let skipped = others.filter {
            let ext = ($0 as NSString).pathExtension.lowercased()
            return refusal(extension: ext) != nil || ["txt", "jsonl", "csv", "tsv", "text"].contains(ext)
        }
        guard !files.isEmpty else {
            var message = "data folder \(path) holds no .txt files and no .jsonl files"
            if !others.isEmpty {
                let shown = others.prefix(5).joined(separator: ", ") + (others.count > 5 ? ", ..." : "")
                message += " (it holds \(shown))"
                if let why = others.lazy.compactMap({ refusal(extension: ($0 as NSString).pathExtension.lowercased()) }).first {
                    message += "; \(why)"
                }
            }
            throw LoraDistError(message)
        }
        return Listing(files: files.map { (path + "/" + $0, format(of: $0)) }, skipped: skipped)
    }

    /// The files `list` reads.
    public static func listFiles(_ path: String) throws -> [String] {
        try list(path).files.map(\.path)
    }
}

/// The global batch of each step, fixed by (seed, step): sequence i of step s
/// starts at a position drawn from its own random stream. Which rank computes a
/// sequence does not change the sequence, so results do not depend on world size.
public struct Sampler {
    public let tokens: TokenIDs
    public let seqLen: Int
    public let seed: UInt64

    public init(tokens: [Int32], seqLen: Int, seed: UInt64) throws {
        try self.init(tokens: TokenIDs(tokens), seqLen: seqLen, seed: seed)
    }

    public init(tokens: TokenIDs, seqLen: Int, seed: UInt64) throws {
        guard tokens.count > seqLen + 1 else {
            throw LoraDistError("training split has \(tokens.count) tokens, fewer than one sequence of \(seqLen + 1)")
        }
        self.tokens = tokens
        self.seqLen = seqLen
        self.seed = seed
    }

    /// Writes inputs[T] and targets[T] (the next tokens) of global sequence `index` of `step`.
    public func fill(step: Int, index: Int, inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>) {
        var g = SplitMix64(seed: SplitMix64.mix(seed, UInt64(step), UInt64(index)))
        let start = g.below(tokens.count - seqLen)
        for t in 0..<seqLen {
            inputs[t] = tokens[start + t]
            targets[t] = tokens[start + t + 1]
        }
    }

    /// Seed for dropout masks of a global sequence.
    public func dropoutSeed(step: Int, index: Int) -> UInt64 {
        SplitMix64.mix(seed ^ 0xD50, UInt64(step), UInt64(index))
    }
}
