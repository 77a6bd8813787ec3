import Foundation

/// Token ids read in place: 16-bit (a vocabulary of at most 65,536) or 32-bit, from a
/// memory-mapped token file or from an array.
public struct TokenIDs: RandomAccessCollection, Equatable {
    let base: UnsafeRawPointer?
    let width: Int
    let owner: AnyObject?
    public let startIndex = 0
    public let endIndex: Int

    init(base: UnsafeRawPointer?, width: Int, count: Int, owner: AnyObject?) {
        self.base = base; self.width = width; self.endIndex = count; self.owner = owner
    }

    /// A copy of `ids` held in memory (test sets, small inputs).
    public init(_ ids: [Int32]) {
        let box = ArrayBox(ids)
        self.init(base: UnsafeRawPointer(box.buffer.baseAddress), width: 4, count: ids.count, owner: box)
    }

    @inline(__always)
    public subscript(i: Int) -> Int32 {
        width == 2 ? Int32(base!.load(fromByteOffset: 2 * i, as: UInt16.self))
                   : Int32(bitPattern: base!.load(fromByteOffset: 4 * i, as: UInt32.self))
    }

    /// Ids `r`, in place.
    public func ids(_ r: Range<Int>) -> TokenIDs {
        TokenIDs(base: base.map { $0 + width * r.lowerBound }, width: width, count: r.count, owner: owner)
    }

    public static func == (a: TokenIDs, b: TokenIDs) -> Bool { a.elementsEqual(b) }

    private final class ArrayBox {
        let buffer: UnsafeMutableBufferPointer<Int32>
        init(_ ids: [Int32]) {
            buffer = .allocate(capacity: Swift.max(ids.count, 1))
            _ = buffer.initialize(from: ids)
        }
        deinit { buffer.deallocate() }
    }
}

/// The ranks of one node that build a token file together: `Cluster.nodeGroup` under MPI,
/// `LoneProcess` in a process of its own. Every call is collective over the group.
public protocol NodeGroup {
    var rank: Int { get }
    var size: Int { get }
    /// Element-wise sum over the group's ranks.
    func sum(_ values: [Double]) -> [Double]
    /// Every rank's string, in rank order.
    func allgather(_ s: String) -> [String]
}

/// A group of one.
public struct LoneProcess: NodeGroup {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func sum(_ values: [Double]) -> [Double] { values }
    public func allgather(_ s: String) -> [String] { [s] }
}

/// A corpus tokenised once into a file that every rank of a node maps read-only, so a node holds
/// one copy of the tokens whatever its number of ranks (the page cache shares the pages).
///
/// The file lives in `CacheFolders.tokens`, named by a hash of what it is made of (the files'
/// paths, the tokenizer's identity, the reading options and the dev share), and is reused while
/// the CRC-32C checksums of the source files and the file's own checksums match; otherwise the
/// node's ranks rebuild it, each tokenising an equal share of the corpus's units (blocks and
/// records, `CorpusText`) and writing its ids at their place. The file is written beside its
/// final name, synced, and renamed over it only when whole, so a crashed build never leaves a
/// file that is reused.
///
/// Layout: a 4,096-byte header (`Header`), the train ids, the dev ids (uint16 when the vocabulary
/// has at most 65,536 ids, else uint32), then one CRC-32C per 64 MiB of ids.
public final class TokenFile {
    public let path: String
    public let train: TokenIDs
    public let dev: TokenIDs
    public let documents: Int
    public let bytes: Int
    public let replacedBytes: Int
    public let replacedSurrogates: Int
    public let skipped: [String]
    /// False when this call built the file.
    public let reused: Bool
    /// Bytes per id: 2 or 4.
    public let width: Int
    /// The file's size.
    public let fileBytes: Int

    static let headerBytes = 4096
    static let chunkBytes = 64 << 20
    static let magic: UInt64 = 0x314E_454B_4F54_444C  // "LDTOKEN1"

    /// What the header holds: little-endian UInt64 fields, then a CRC-32C of them.
    struct Header: Equatable {
        var width = 2, train = 0, dev = 0
        var documents = 0, bytes = 0, replacedBytes = 0, replacedSurrogates = 0
        var sources: UInt64 = 0  // hash of the key with every source file's checksums

        var fields: [UInt64] {
            [TokenFile.magic, UInt64(width), UInt64(train), UInt64(dev), UInt64(documents), UInt64(bytes),
             UInt64(replacedBytes), UInt64(replacedSurrogates), sources]
        }

        func encoded() -> [UInt8] {
            var out = [UInt8](repeating: 0, count: TokenFile.headerBytes)
            let f = fields
            out.withUnsafeMutableBytes { raw in
                for (i, v) in f.enumerated() { raw.storeBytes(of: v.littleEndian, toByteOffset: 8 * i, as: UInt64.self) }
                let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<(8 * f.count)]))
                raw.storeBytes(of: crc.littleEndian, toByteOffset: 8 * f.count, as: UInt32.self)
            }
            return out
        }

        /// nil when the bytes are not a whole, unchanged header.
        static func decode(_ raw: UnsafeRawBufferPointer) -> Header? {
            let n = 9
            guard raw.count >= TokenFile.headerBytes else { return nil }
            let f = (0..<n).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)) }
            let crc = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * n, as: UInt32.self))
            guard f[0] == TokenFile.magic, CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<(8 * n)])) == crc,
                  f[1] == 2 || f[1] == 4, f[2...7].allSatisfy({ $0 < 1 << 60 }),
                  // ids: some (a corpus without text is refused as it is built), and few enough that
                  // the sizes below cannot overflow (2^48 ids: a petabyte)
                  f[2] + f[3] > 0, f[2] < 1 << 48, f[3] < 1 << 48 else { return nil }
            return Header(width: Int(f[1]), train: Int(f[2]), dev: Int(f[3]), documents: Int(f[4]), bytes: Int(f[5]),
                          replacedBytes: Int(f[6]), replacedSurrogates: Int(f[7]), sources: f[8])
        }

        var payloadBytes: Int { (train + dev) * width }
        var chunks: Int { (payloadBytes + TokenFile.chunkBytes - 1) / TokenFile.chunkBytes }
        var fileBytes: Int { TokenFile.headerBytes + payloadBytes + 4 * chunks }
    }

    /// The token file of `path` read with `tokenizer`: reused when it is whole and its sources are
    /// unchanged, else built by the ranks of `group`. Collective over `group`; every rank throws the
    /// same error. `folder` defaults to `CacheFolders.tokens`.
    public static func open(path: String, tokenizer: Tokenizer, devPercent: Int, reading: CorpusReading,
                            group: NodeGroup = LoneProcess(), folder: String = CacheFolders.tokens) throws -> TokenFile {
        let listing = try Corpus.list(path)
        let absolute = listing.files.map { URL(fileURLWithPath: $0.path).standardizedFileURL.path }
        let key = "lora-dist token file v1|tokenizer \(tokenizer.identity)|field \(reading.textField)|replace \(reading.replaceInvalidUTF8)"
            + "|dev \(devPercent)|block \(Corpus.blockBytes)|" + absolute.joined(separator: "|")
        let name = String(format: "%016llx", fnv1a(key)) + ".tokens"
        let file = folder + "/" + name
        let sources = try agreed(group) { try sourceChecksums(listing, group: group) }
        let digest = fnv1a(key + "|" + sources.map { String($0) }.joined(separator: ","))
        let width = tokenizer.vocabSize <= 1 << 16 ? 2 : 4

        if let found = verified(file, sources: digest, width: width, group: group) {
            return TokenFile(file, found.0, found.1, devPercent: devPercent, skipped: listing.skipped, reused: true)
        }
        try build(path: path, file: file, tokenizer: tokenizer, devPercent: devPercent, reading: reading, width: width,
                  sources: digest, group: group)
        guard let built = verified(file, sources: digest, width: width, group: group, checkPayload: false) else {
            throw LoraDistError("token file \(file) was replaced while it was read; run again")
        }
        return TokenFile(file, built.0, built.1, devPercent: devPercent, skipped: listing.skipped, reused: false)
    }

    private init(_ path: String, _ h: Header, _ map: MappedFile, devPercent: Int, skipped: [String], reused: Bool) {
        self.path = path
        width = h.width
        fileBytes = h.fileBytes
        let all = TokenIDs(base: map.bytes.baseAddress.map { $0 + Self.headerBytes }, width: h.width,
                           count: h.train + h.dev, owner: map)
        if h.dev == 0 && devPercent > 0 {  // a tiny corpus: hold out its last tenth, as Corpus does
            let cut = Corpus.tinyCut(h.train)
            train = all.ids(0..<cut)
            dev = all.ids(cut..<h.train)
        } else {
            train = all.ids(0..<h.train)
            dev = all.ids(h.train..<(h.train + h.dev))
        }
        documents = h.documents
        bytes = h.bytes
        replacedBytes = h.replacedBytes
        replacedSurrogates = h.replacedSurrogates
        self.skipped = skipped
        self.reused = reused
    }

    /// Runs `body` on every rank of `group`; when any rank throws, every rank throws the lowest
    /// failing rank's message.
    static func agreed<T>(_ group: NodeGroup, _ body: () throws -> T) throws -> T {
        var result: T?, message = ""
        do { result = try body() } catch { message = "\(error)".isEmpty ? "failed" : "\(error)" }
        if group.size == 1 {
            if let result { return result }
            throw LoraDistError(message)
        }
        let all = group.allgather(message)
        if let first = all.first(where: { !$0.isEmpty }) { throw LoraDistError(first) }
        return result!
    }

    /// CRC-32C of every 64 MiB of the source files, split among the group's ranks.
    static func sourceChecksums(_ listing: Corpus.Listing, group: NodeGroup) throws -> [UInt32] {
        var chunks: [(file: Int, offset: Int, count: Int)] = []
        var sizes: [Int] = []
        for (i, f) in listing.files.enumerated() {
            let attributes = try? FileManager.default.attributesOfItem(atPath: f.path)
            guard let size = (attributes?[.size] as? NSNumber)?.intValue else { throw LoraDistError("cannot read corpus file \(f.path)") }
            sizes.append(size)
            var o = 0
            repeat { chunks.append((i, o, min(chunkBytes, size - o))); o += chunkBytes } while o < size
        }
        var mine = [Double](repeating: 0, count: chunks.count)
        var maps: [Int: MappedFile] = [:]
        for c in stride(from: group.rank, to: chunks.count, by: group.size) {
            let ch = chunks[c]
            let m = try maps[ch.file] ?? MappedFile(path: listing.files[ch.file].path)
            maps[ch.file] = m
            guard m.bytes.count == sizes[ch.file] else { throw LoraDistError("corpus file \(listing.files[ch.file].path) changed while it was read") }
            mine[c] = Double(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: m.bytes[ch.offset..<(ch.offset + ch.count)])))
        }
        let all = group.sum(mine)
        // The sizes go into the key too: a file cut at a chunk boundary changes no chunk's CRC.
        return sizes.map { UInt32(truncatingIfNeeded: $0) } + sizes.map { UInt32(truncatingIfNeeded: $0 >> 32) } + all.map { UInt32($0) }
    }

    /// The header and map of `file` when it is whole and made from `sources`; nil otherwise (on
    /// every rank alike). `checkPayload`: verify the ids' checksums too, split among the ranks.
    static func verified(_ file: String, sources: UInt64, width: Int, group: NodeGroup,
                         checkPayload: Bool = true) -> (Header, MappedFile)? {
        var found: (Header, MappedFile)?
        if let m = try? MappedFile(path: file), let h = Header.decode(m.bytes),
           h.sources == sources, h.width == width, m.bytes.count == h.fileBytes {
            found = (h, m)
        }
        // Every rank must see the same file (another node may replace it on a shared file system).
        let seen = group.sum([found == nil ? 1 : 0])
        guard seen[0] == 0, let (h, m) = found else { return nil }
        guard checkPayload else { return found }
        var mine = [Double](repeating: 0, count: h.chunks)
        let payload = UnsafeRawBufferPointer(rebasing: m.bytes[headerBytes..<(headerBytes + h.payloadBytes)])
        for c in stride(from: group.rank, to: h.chunks, by: group.size) {
            let lo = c * chunkBytes, hi = min(lo + chunkBytes, payload.count)
            mine[c] = Double(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: payload[lo..<hi])))
        }
        let crcs = group.sum(mine)
        let trailer = headerBytes + h.payloadBytes
        for c in 0..<h.chunks where UInt32(crcs[c]) != UInt32(littleEndian: m.bytes.loadUnaligned(fromByteOffset: trailer + 4 * c, as: UInt32.self)) {
            return nil
        }
        return found
    }

    /// Tokenises the corpus across the group's ranks into `file` (temporary name, then rename).
    static func build(path: String, file: String, tokenizer: Tokenizer, devPercent: Int, reading: CorpusReading, width: Int,
                      sources: UInt64, group: NodeGroup) throws {
        var corpus: CorpusText? = try agreed(group) { try CorpusText(path: path, reading: reading, devPercent: devPercent) }
        // An even share of the units' bytes for each rank, in order.
        let total = corpus!.weight(corpus!.units.indices)
        var bounds = [0], acc = 0
        for (i, u) in corpus!.units.enumerated() {
            acc += u.range.count
            while bounds.count < group.size && acc * group.size >= total * bounds.count { bounds.append(i + 1) }
        }
        while bounds.count <= group.size { bounds.append(corpus!.units.count) }
        bounds[group.size] = corpus!.units.count
        let mine = bounds[group.rank]..<bounds[group.rank + 1]

        // Rank 0 names the build's temporary files. Each rank streams its ids into two parts of its
        // own (train, dev), a few MiB at a time: a rank holds a buffer, not its share of the corpus.
        let folder = (file as NSString).deletingLastPathComponent
        let prefix = try agreed(group) { () throws -> String in
            guard group.rank == 0 else { return "" }
            try Files.createDirectory(folder)
            return folder + "/." + (file as NSString).lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        }
        let tmp = group.allgather(prefix)[0]
        let parts = [tmp + ".part\(group.rank)-train", tmp + ".part\(group.rank)-dev"]
        defer { for p in parts { unlink(p) } }
        let mineCounts = try agreed(group) { () throws -> [Double] in
            let writers = try parts.map { try PartWriter(path: $0, width: width) }
            var failed: Int?, surrogates = 0, bad: Int32?
            for i in mine {
                // The first unit that fails, so every rank reports the same one.
                guard let ids = try? corpus!.encode(i, tokenizer: tokenizer, replaced: &surrogates) else { failed = i; break }
                if bad == nil { bad = ids.first { $0 < 0 || Int($0) >= tokenizer.vocabSize } }
                try writers[corpus!.units[i].dev ? 1 : 0].append(ids)
            }
            try writers.forEach { try $0.finish() }
            // train ids, dev ids, first failing unit + 1, replaced surrogates, an id outside the vocabulary + 2^33
            return [Double(writers[0].count), Double(writers[1].count), failed.map { Double($0 + 1) } ?? 0, Double(surrogates),
                    bad.map { Double(Int($0) + (1 << 33)) } ?? 0]
        }
        var counts = [Double](repeating: 0, count: 5 * group.size)
        for k in 0..<5 { counts[5 * group.rank + k] = mineCounts[k] }
        counts = group.sum(counts)
        if let unit = (0..<group.size).map({ Int(counts[5 * $0 + 2]) }).first(where: { $0 > 0 }) {
            var scratch = 0
            _ = try corpus!.encode(unit - 1, tokenizer: tokenizer, replaced: &scratch)  // throws its message
            throw LoraDistError("corpus unit \(unit - 1) failed to tokenise")
        }
        if let id = (0..<group.size).map({ Int(counts[5 * $0 + 4]) }).first(where: { $0 > 0 }) {
            throw LoraDistError("the tokenizer produced id \(id - (1 << 33)), outside its vocabulary of \(tokenizer.vocabSize)")
        }
        let trainTotal = (0..<group.size).reduce(0) { $0 + Int(counts[5 * $1]) }
        let devTotal = (0..<group.size).reduce(0) { $0 + Int(counts[5 * $1 + 1]) }
        guard trainTotal + devTotal > 0 else { throw corpus!.holdsNoText }
        let trainAt = (0..<group.rank).reduce(0) { $0 + Int(counts[5 * $1]) }
        let devAt = (0..<group.rank).reduce(0) { $0 + Int(counts[5 * $1 + 1]) }
        let h = Header(width: width, train: trainTotal, dev: devTotal, documents: corpus!.documents, bytes: corpus!.bytes,
                       replacedBytes: corpus!.replacedBytes,
                       replacedSurrogates: (0..<group.size).reduce(0) { $0 + Int(counts[5 * $1 + 3]) }, sources: sources)
        // The text's pages go before the ids' are mapped: the node holds one of the two at a time.
        corpus = nil

        // Rank 0 makes the file at its full size; every rank copies its parts to their place.
        do {
            try agreed(group) {
                guard group.rank == 0 else { return }
                let fd = openFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
                guard fd >= 0 else { throw Files.ioError("cannot create", tmp) }
                defer { close(fd) }
                guard ftruncate(fd, off_t(h.fileBytes)) == 0 else { throw Files.ioError("cannot size", tmp) }
            }
            try agreed(group) {
                let fd = openFile(tmp, O_WRONLY)
                guard fd >= 0 else { throw Files.ioError("cannot open", tmp) }
                defer { close(fd) }
                try copy(parts[0], to: fd, at: headerBytes + width * trainAt, path: tmp)
                try copy(parts[1], to: fd, at: headerBytes + width * (trainTotal + devAt), path: tmp)
            }
            for p in parts { unlink(p) }
            // The ids' checksums, split among the ranks; rank 0 writes them and the header last.
            let m = try agreed(group) { try MappedFile(path: tmp) }
            var crcs = [Double](repeating: 0, count: h.chunks)
            let payload = UnsafeRawBufferPointer(rebasing: m.bytes[headerBytes..<(headerBytes + h.payloadBytes)])
            for c in stride(from: group.rank, to: h.chunks, by: group.size) {
                let lo = c * chunkBytes, hi = min(lo + chunkBytes, payload.count)
                crcs[c] = Double(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: payload[lo..<hi])))
            }
            crcs = group.sum(crcs)
            try agreed(group) {
                guard group.rank == 0 else { return }
                let fd = openFile(tmp, O_WRONLY)
                guard fd >= 0 else { throw Files.ioError("cannot open", tmp) }
                defer { close(fd) }
                var trailer = [UInt8](repeating: 0, count: 4 * h.chunks)
                trailer.withUnsafeMutableBytes { raw in
                    for c in 0..<h.chunks { raw.storeBytes(of: UInt32(crcs[c]).littleEndian, toByteOffset: 4 * c, as: UInt32.self) }
                }
                try write(bytes: trailer, to: fd, at: headerBytes + h.payloadBytes, path: tmp)
                try write(bytes: h.encoded(), to: fd, at: 0, path: tmp)
                guard fsync(fd) == 0 else { throw Files.ioError("cannot fsync", tmp) }
                guard rename(tmp, file) == 0 else { throw Files.ioError("cannot rename \(tmp) to", file) }
                try Files.syncDirectory(folder)
            }
        } catch {
            if group.rank == 0 { unlink(tmp) }
            throw error
        }
    }

    /// A rank's ids of one split, appended to a file of its own in `width`-byte ids.
    final class PartWriter {
        let fd: Int32, width: Int, path: String
        var buffer: [Int32] = []
        private(set) var count = 0

        init(path: String, width: Int) throws {
            fd = openFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            guard fd >= 0 else { throw Files.ioError("cannot create", path) }
            self.width = width
            self.path = path
            buffer.reserveCapacity(1 << 20)
        }
        deinit { close(fd) }

        func append(_ ids: [Int32]) throws {
            buffer += ids
            if buffer.count >= 1 << 20 { try flush() }
        }

        func finish() throws { try flush() }

        private func flush() throws {
            let at = count * width
            if width == 4 {
                try buffer.withUnsafeBytes { try TokenFile.write(raw: $0, to: fd, at: at, path: path) }
            } else {
                try buffer.map { UInt16(truncatingIfNeeded: $0) }.withUnsafeBytes { try TokenFile.write(raw: $0, to: fd, at: at, path: path) }
            }
            count += buffer.count
            buffer.removeAll(keepingCapacity: true)
        }
    }

    /// All of file `part` into `fd` at `offset`, 8 MiB at a time.
    static func copy(_ part: String, to fd: Int32, at offset: Int, path: String) throws {
        let input = openFile(part, O_RDONLY)
        guard input >= 0 else { throw Files.ioError("cannot open", part) }
        defer { close(input) }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 << 20, alignment: 16)
        defer { chunk.deallocate() }
        var done = 0
        while true {
            let n = read(input, chunk.baseAddress!, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Files.ioError("cannot read", part) }
            if n == 0 { return }
            try write(raw: UnsafeRawBufferPointer(rebasing: chunk[0..<n]), to: fd, at: offset + done, path: path)
            done += n
        }
    }

    static func write(bytes: [UInt8], to fd: Int32, at offset: Int, path: String) throws {
        try bytes.withUnsafeBytes { try write(raw: $0, to: fd, at: offset, path: path) }
    }

    /// All of `raw` at `offset`, through short writes and EINTR.
    static func write(raw: UnsafeRawBufferPointer, to fd: Int32, at offset: Int, path: String) throws {
        var done = 0
        while done < raw.count {
            let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Files.ioError("cannot write", path) }
            done += n
        }
    }
}

/// open(2), out of TokenFile's scope (its `open` would shadow it).
private func openFile(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 { open(path, flags, mode) }

/// What `corpusNotes` reports of a corpus read.
public protocol CorpusCounts {
    var replacedBytes: Int { get }
    var replacedSurrogates: Int { get }
    var skipped: [String] { get }
}

extension Corpus: CorpusCounts {}

/// The train and dev ids of a run, from token files: --data's, with --dev-percent of its blocks
/// held out, or --data's and --dev-data's whole. Collective over `group`.
public struct TrainingCorpus: CorpusCounts {
    public let train: TokenIDs
    public let dev: TokenIDs
    public let documents: Int
    public let bytes: Int
    public let replacedBytes: Int
    public let replacedSurrogates: Int
    public let skipped: [String]
    /// The token files read (one, or --data's and --dev-data's).
    public let files: [TokenFile]

    public init(data: String, devData: String?, devPercent: Int, tokenizer: Tokenizer, reading: CorpusReading,
                group: NodeGroup = LoneProcess(), folder: String = CacheFolders.tokens) throws {
        let t = try TokenFile.open(path: data, tokenizer: tokenizer, devPercent: devData == nil ? devPercent : 0,
                                   reading: reading, group: group, folder: folder)
        guard let devData else {
            (train, dev, files) = (t.train, t.dev, [t])
            (documents, bytes, replacedBytes, replacedSurrogates, skipped) = (t.documents, t.bytes, t.replacedBytes, t.replacedSurrogates, t.skipped)
            return
        }
        let d = try TokenFile.open(path: devData, tokenizer: tokenizer, devPercent: 0, reading: reading, group: group, folder: folder)
        (train, dev, files) = (t.train, d.train, [t, d])
        documents = t.documents
        bytes = t.bytes
        let same = data == devData  // as Corpus(train:dev:)
        replacedBytes = same ? d.replacedBytes : t.replacedBytes + d.replacedBytes
        replacedSurrogates = same ? d.replacedSurrogates : t.replacedSurrogates + d.replacedSurrogates
        skipped = same ? d.skipped : t.skipped + d.skipped
    }
}

extension TrainingCorpus {
    /// The first `n` ids of the training split (in file order, the same for every seed, so the sizes
    /// of `compare --data-sizes` nest: 5k ⊂ 50k ⊂ 500k); a size above the split's is refused naming it.
    public func firstTrainingTokens(_ n: Int, data: String) throws -> TokenIDs {
        guard n <= train.count else {
            throw LoraDistError("--train-tokens \(n) is more than the \(train.count) training tokens of \(data)")
        }
        return train.ids(0..<n)
    }
}
