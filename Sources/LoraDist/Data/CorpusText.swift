import Foundation

/// A corpus path's files as UTF-8 text, cut into the units that are tokenised on their own:
/// the blocks of a text file (`Corpus.blockRanges`) and the records of a JSON Lines file.
/// Each unit goes to train or dev whole (`Corpus.isDev`). Files are memory-mapped; a file
/// with invalid UTF-8 is refused, or (with `replaceInvalidUTF8`) copied with U+FFFD in place
/// of the bad bytes. `Corpus` tokenises every unit in one process; `TokenFile` splits the
/// units among a node's ranks.
final class CorpusText {
    struct Unit {
        var file: Int
        var range: Range<Int>   // bytes of the file's text
        var dev: Bool
        var bos: Bool, eos: Bool  // a text file's first and last block; every JSON Lines record
        var line: Int           // JSON Lines: the record's line number (messages); 0 for text
    }

    let path: String
    let listing: Corpus.Listing
    let units: [Unit]
    /// Bytes of the files read (before any replacement).
    let bytes: Int
    let documents: Int
    let replacedBytes: Int
    private let texts: [UnsafeBufferPointer<UInt8>]
    private let owners: [AnyObject]
    private let field: [UInt8]
    private let reading: CorpusReading

    init(path: String, reading: CorpusReading, devPercent: Int) throws {
        let listing = try Corpus.list(path)
        var texts: [UnsafeBufferPointer<UInt8>] = [], owners: [AnyObject] = [], units: [Unit] = []
        var bytes = 0, documents = 0, replacedBytes = 0
        for (index, (file, format)) in listing.files.enumerated() {
            let mapped: MappedFile
            do { mapped = try MappedFile(path: file) } catch { throw LoraDistError("cannot read corpus file \(file)") }
            bytes += mapped.bytes.count
            var text = mapped.bytes.bindMemory(to: UInt8.self)
            owners.append(mapped)
            if let bad = UTF8Check.firstInvalid(text) {
                guard reading.replaceInvalidUTF8 else {
                    let line = text[..<bad].reduce(1) { $0 + ($1 == 0x0A ? 1 : 0) }
                    let hex = String(text[bad], radix: 16, uppercase: true)
                    throw LoraDistError("\(file): not valid UTF-8 at byte offset \(bad) (line \(line), byte 0x\(hex.count < 2 ? "0" : "")\(hex)); "
                        + "pass --replace-invalid-utf8 to read invalid bytes as U+FFFD")
                }
                let r = UTF8Check.replacing(text)
                replacedBytes += r.replaced
                let copy = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(r.bytes.count, 1))
                _ = copy.initialize(from: r.bytes)
                owners.append(Deallocator(copy))
                text = UnsafeBufferPointer(rebasing: UnsafeBufferPointer(copy)[0..<r.bytes.count])
            }
            texts.append(text)
            let name = (file as NSString).lastPathComponent
            switch format {
            case .text:
                let ranges = Corpus.blockRanges(text)
                documents += 1
                for (block, r) in ranges.enumerated() {
                    units.append(Unit(file: index, range: r, dev: Corpus.isDev(name, block, devPercent),
                                      bos: block == 0, eos: block == ranges.count - 1, line: 0))
                }
            case .jsonLines:
                var start = text.count >= 3 && text[0] == 0xEF && text[1] == 0xBB && text[2] == 0xBF ? 3 : 0  // a BOM
                var lineNumber = 0, record = 0
                while start < text.count {
                    lineNumber += 1
                    var end = start
                    if let base = text.baseAddress,
                       let nl = memchr(base + start, 0x0A, text.count - start) {
                        end = base.distance(to: nl.assumingMemoryBound(to: UInt8.self))
                    } else {
                        end = text.count
                    }
                    let line = UnsafeBufferPointer(rebasing: text[start..<end])
                    defer { start = end + 1 }
                    if JSONLines.isBlank(line) { continue }
                    documents += 1
                    units.append(Unit(file: index, range: start..<end, dev: Corpus.isDev(name, record, devPercent),
                                      bos: true, eos: true, line: lineNumber))
                    record += 1
                }
            }
        }
        guard bytes > 0 else { throw LoraDistError("corpus at \(path) is empty") }
        self.path = path
        self.listing = listing
        self.units = units
        self.bytes = bytes
        self.documents = documents
        self.replacedBytes = replacedBytes
        self.texts = texts
        self.owners = owners
        self.field = Array(reading.textField.utf8)
        self.reading = reading
    }

    /// JSON Lines of blank lines or empty texts: no token at all.
    var holdsNoText: LoraDistError {
        LoraDistError("corpus at \(path) holds no text (\(documents) document(s), all empty)")
    }

    /// Text bytes of units `range`, for splitting the work evenly.
    func weight(_ range: Range<Int>) -> Int { units[range].reduce(0) { $0 + $1.range.count } }

    /// Tokenises units `range` in order, appending each to train or dev; returns the lone surrogate
    /// escapes replaced. A JSON Lines record that cannot be read throws "file:line: why".
    func tokenize(_ range: Range<Int>, tokenizer: Tokenizer, train: inout [Int32], dev: inout [Int32]) throws -> Int {
        var replaced = 0
        for i in range {
            let u = units[i]
            let ids = try encode(i, tokenizer: tokenizer, replaced: &replaced)
            if u.dev { dev += ids } else { train += ids }
        }
        return replaced
    }

    /// One unit's ids, BOS and EOS included.
    func encode(_ i: Int, tokenizer: Tokenizer, replaced: inout Int) throws -> [Int32] {
        let u = units[i]
        let bytes = UnsafeBufferPointer(rebasing: texts[u.file][u.range])
        var ids: [Int32]
        if u.line == 0 {
            ids = tokenizer.encode(String(decoding: bytes, as: UTF8.self))
        } else {
            let doc: [UInt8]
            do throws(JSONLines.Refusal) {
                let r = try JSONLines.field(field, of: bytes, replaceLoneSurrogates: reading.replaceInvalidUTF8)
                doc = r.text
                replaced += r.replaced
            } catch {
                throw LoraDistError("\(listing.files[u.file].path):\(u.line): \(error.message)")
            }
            // A record is one document: its text in blocks, as a text file's; an empty one has no tokens.
            guard !doc.isEmpty else { return [] }
            ids = doc.withUnsafeBufferPointer { b in
                Corpus.blockRanges(b).flatMap { tokenizer.encode(String(decoding: UnsafeBufferPointer(rebasing: b[$0]), as: UTF8.self)) }
            }
        }
        // A tokenizer without BOS or EOS (-1) adds none: -1 is no token id.
        if u.bos && tokenizer.bos >= 0 { ids.insert(tokenizer.bos, at: 0) }
        if u.eos && tokenizer.eos >= 0 { ids.append(tokenizer.eos) }
        return ids
    }
}

/// Frees a buffer when its owner goes.
private final class Deallocator {
    let buffer: UnsafeMutableBufferPointer<UInt8>
    init(_ b: UnsafeMutableBufferPointer<UInt8>) { buffer = b }
    deinit { buffer.deallocate() }
}
