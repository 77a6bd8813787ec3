// A token file in the cache (Data/TokenFile.swift), as `train` reuses it: the header decoded,
// its sizes checked against the mapped file, the payload's checksums verified, the ids split
// into train and dev and read. Mutations almost always break the header's CRC-32C or a chunk's:
// each input is tried as it is and sealed (magic and corpus key set, the header's CRC and, when
// the header gives a small payload, the chunks' CRCs recomputed), so the fields behind the
// checksums are fuzzed too. Only a file that verifies is opened (one that does not would be
// rebuilt from the corpus, as in train: a slow path that finds nothing).
import Foundation
@testable import LoraDist

let corpus: String = {
    let path = scratch + "/corpus.txt"
    put(Data((0..<40).map { "Line \($0): the quick brown fox jumps over the lazy dog.\n" }.joined().utf8), path)
    return path
}()
let folder = scratch + "/tokens"

func openTokens() -> TokenFile? {
    try? TokenFile.open(path: corpus, tokenizer: ByteTokenizer(), devPercent: 10, reading: CorpusReading(), folder: folder)
}

/// The token file `open` builds for the corpus: where it lives and its bytes.
let (tokenPath, reference): (String, [UInt8]) = {
    let f = openTokens()!
    return (f.path, [UInt8](FileManager.default.contents(atPath: f.path)!))
}()

let referenceSources = reference.withUnsafeBytes { TokenFile.Header.decode($0)!.sources }
let headerFields = 9   // UInt64 each, then the header's CRC-32C

func sealed(_ data: Data) -> Data {
    var d = [UInt8](data)
    if d.count < TokenFile.headerBytes { d += [UInt8](repeating: 0, count: TokenFile.headerBytes - d.count) }
    d.replaceSubrange(0..<8, with: reference[0..<8])                          // magic
    d.replaceSubrange(64..<72, with: reference[64..<72])                      // the corpus's key
    var crc = CRC32C.checksum(Data(d[0..<(8 * headerFields)])).littleEndian
    withUnsafeBytes(of: &crc) { d.replaceSubrange(72..<76, with: $0) }
    guard let h = d.withUnsafeBytes({ TokenFile.Header.decode($0) }), h.fileBytes <= 1 << 20 else { return Data(d) }
    // The payload's length as the header says, and its chunks' CRCs behind it.
    if d.count < h.fileBytes { d += [UInt8](repeating: 0, count: h.fileBytes - d.count) } else { d.removeLast(d.count - h.fileBytes) }
    let trailer = TokenFile.headerBytes + h.payloadBytes
    for c in 0..<h.chunks {
        let lo = TokenFile.headerBytes + c * TokenFile.chunkBytes, hi = min(lo + TokenFile.chunkBytes, trailer)
        var crc = CRC32C.checksum(Data(d[lo..<hi])).littleEndian
        withUnsafeBytes(of: &crc) { d.replaceSubrange((trailer + 4 * c)..<(trailer + 4 * c + 4), with: $0) }
    }
    return Data(d)
}

func fuzzOne(_ data: Data) {
    for d in [data, sealed(data)] {
        put(d, tokenPath)
        guard TokenFile.verified(tokenPath, sources: referenceSources, width: 2, group: LoneProcess()) != nil,
              let f = openTokens() else { continue }
        var sum: Int64 = 0
        for id in f.train { sum &+= Int64(id) }
        for id in f.dev { sum &+= Int64(id) }
        if sum == 42 { print("") }   // keep the reads
    }
}

func fuzzSeeds() -> [Data] {
    [Data(reference), Data(reference[0..<TokenFile.headerBytes])]
}
