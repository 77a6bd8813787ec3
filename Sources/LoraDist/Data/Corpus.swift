import Foundation

/// A tokenised corpus split into train and dev token streams.
///
/// The split is deterministic and independent of file order: each document (a
/// file) is cut into blocks of `blockBytes`, and a block goes to dev when a hash
/// of (file name, block index) falls under `devPercent`. Each document starts
/// with BOS and ends with EOS.
public struct Corpus {
    public let train: [Int32]
    public let dev: [Int32]
    public let documents: Int
    public let bytes: Int

    public static let blockBytes = 4096

    /// Train and dev from separate paths (corpora already split by document).
    public init(train: String, dev: String, tokenizer: Tokenizer) throws {
        let t = try Corpus(path: train, tokenizer: tokenizer, devPercent: 0)
        let d = try Corpus(path: dev, tokenizer: tokenizer, devPercent: 0)
        self.train = t.train + t.dev
        self.dev = d.train + d.dev
        documents = t.documents
        bytes = t.bytes
    }

    /// All of a path's tokens, for evaluation (test sets, other domains).
    public static func tokens(path: String, tokenizer: Tokenizer) throws -> [Int32] {
        let c = try Corpus(path: path, tokenizer: tokenizer, devPercent: 0)
        return c.train + c.dev
    }

    public init(path: String, tokenizer: Tokenizer, devPercent: Int = 5) throws {
        let files = try Self.listFiles(path)
        var train: [Int32] = [], dev: [Int32] = []
        var bytes = 0
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw LoraDistError("cannot read corpus file \(file)")
            }
            bytes += data.count
            let text = String(decoding: data, as: UTF8.self)
            let name = (file as NSString).lastPathComponent
            // Cut at line ends near each block boundary so blocks are whole lines.
            let utf8 = Array(text.utf8)
            var start = 0, block = 0
            while start < utf8.count {
                var end = min(start + Self.blockBytes, utf8.count)
                while end < utf8.count, utf8[end - 1] != UInt8(ascii: "\n"), end - start < 2 * Self.blockBytes { end += 1 }
                var ids = tokenizer.encode(String(decoding: utf8[start..<end], as: UTF8.self))
                if start == 0 { ids.insert(tokenizer.bos, at: 0) }
                if end == utf8.count { ids.append(tokenizer.eos) }
                if Int(fnv1a("\(name)#\(block)") % 100) < devPercent { dev += ids } else { train += ids }
                start = end
                block += 1
            }
        }
        guard bytes > 0 else { throw LoraDistError("corpus at \(path) is empty") }
        if dev.isEmpty && devPercent > 0 {  // a tiny corpus: hold out its last tenth
            let cut = train.count - max(train.count / 10, 1)
            dev = Array(train[cut...])
            train = Array(train[..<cut])
        }
        self.train = train
        self.dev = dev
        self.documents = files.count
        self.bytes = bytes
    }

    /// A file, or every .txt file under a folder (sorted, so every rank sees the same order).
    public static func listFiles(_ path: String) throws -> [String] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LoraDistError("data path \(path) does not exist")
        }
        guard isDir.boolValue else { return [path] }
        guard let walker = FileManager.default.enumerator(atPath: path) else {
            throw LoraDistError("cannot list data folder \(path)")
        }
        let files = walker.compactMap { $0 as? String }.filter { $0.hasSuffix(".txt") }.sorted()
            .map { path + "/" + $0 }
        guard !files.isEmpty else { throw LoraDistError("data folder \(path) holds no .txt files") }
        return files
    }
}

/// The global batch of each step, fixed by (seed, step): sequence i of step s
/// starts at a position drawn from its own random stream. Which rank computes a
/// sequence does not change the sequence, so results do not depend on world size.
public struct Sampler {
    public let tokens: [Int32]
    public let seqLen: Int
    public let seed: UInt64

    public init(tokens: [Int32], seqLen: Int, seed: UInt64) throws {
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
