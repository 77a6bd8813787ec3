import Foundation

/// BPE on one pre-tokenized piece, as `tokenizers`' BPE::merge_word + Word::merge_all, and
/// the tables it runs on.
extension BPETokenizer {
    static let maxCachedWord = 256

    /// BPE on one piece, exactly as `tokenizers`' BPE::merge_word + Word::merge_all.
    func bpe(_ w: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32]) {
        if n == 0 { return }
        if let whole = wholeWords, let id = whole[Array(UnsafeBufferPointer(start: w, count: n))] {
            out.append(id)
            return
        }
        let cacheable = n <= Self.maxCachedWord
        var hash: UInt64 = 0
        if cacheable {
            hash = WordCache.hash(w, n)
            if cache.lookup(hash, w, n, into: &out) { return }
        }
        // Symbols: one per byte (the byte's alphabet character); a byte the vocabulary lacks
        // becomes the unk token (fused with a preceding one if fuse_unk) or is dropped.
        var sym = [Int32]()
        sym.reserveCapacity(n)
        var lastWasUnk = false
        for k in 0..<n {
            let id = byteIDs[Int(w[k])]
            if id >= 0 {
                sym.append(id)
                lastWasUnk = false
            } else if unkID >= 0 {
                if !(fuseUnk && lastWasUnk) { sym.append(unkID) }
                lastWasUnk = true
            }
        }
        let start = out.count
        if sym.count == 1 {
            out.append(sym[0])
        } else if sym.count > 1 {
            merge(&sym, into: &out)
        }
        if cacheable { cache.insert(hash, w, n, out[start...]) }
    }

    /// Word::merge_all: a min-heap of (rank, position); an entry whose pair has changed since it
    /// was pushed is skipped.
    func merge(_ sym: inout [Int32], into out: inout [Int32]) {
        let m = sym.count
        var prev = [Int32](repeating: -1, count: m)
        var next = [Int32](repeating: -1, count: m)
        var alive = [Bool](repeating: true, count: m)
        for k in 0..<m {
            prev[k] = Int32(k - 1)
            next[k] = k + 1 < m ? Int32(k + 1) : -1
        }
        var heap = MinHeap()
        for k in 0..<(m - 1) {
            let r = pairs.rank(sym[k], sym[k + 1])
            if r >= 0 { heap.push(UInt64(r) << 32 | UInt64(k)) }
        }
        while let top = heap.pop() {
            let rank = Int(top >> 32), pos = Int(top & 0xFFFF_FFFF)
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = Int(next[pos])
            let cur = pairs.rank(sym[pos], sym[right])
            guard cur >= 0, rankNewID[Int(cur)] == rankNewID[rank] else { continue }
            sym[pos] = rankNewID[rank]
            alive[right] = false
            next[pos] = next[right]
            if next[right] >= 0 { prev[Int(next[right])] = Int32(pos) }
            if prev[pos] >= 0 {
                let r = pairs.rank(sym[Int(prev[pos])], sym[pos])
                if r >= 0 { heap.push(UInt64(r) << 32 | UInt64(prev[pos])) }
            }
            if next[pos] >= 0 {
                let r = pairs.rank(sym[pos], sym[Int(next[pos])])
                if r >= 0 { heap.push(UInt64(r) << 32 | UInt64(pos)) }
            }
        }
        var k = 0
        while k >= 0 && k < m {
            out.append(sym[k])
            k = Int(next[k])
        }
    }
}

// MARK: - Tables

extension BPETokenizer {
    /// (left id, right id) → merge rank, open addressing.
    struct PairTable {
        private var keys: [UInt64]
        private var ranks: [Int32]
        private let mask: Int

        init(capacity: Int) {
            var size = 16
            while size < capacity * 2 { size <<= 1 }
            keys = [UInt64](repeating: .max, count: size)
            ranks = [Int32](repeating: -1, count: size)
            mask = size - 1
        }

        @inline(__always) private func slot(_ key: UInt64) -> Int {
            Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & mask
        }

        mutating func insert(_ a: Int32, _ b: Int32, rank: Int32, newID: Int32) {
            let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
            var i = slot(key)
            while keys[i] != .max && keys[i] != key { i = (i + 1) & mask }
            keys[i] = key
            ranks[i] = rank
        }

        /// The rank of merging a and b, or -1.
        @inline(__always) func rank(_ a: Int32, _ b: Int32) -> Int32 {
            let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
            var i = slot(key)
            while true {
                let k = keys[i]
                if k == key { return ranks[i] }
                if k == .max { return -1 }
                i = (i + 1) & mask
            }
        }
    }
}

extension BPETokenizer {
    struct MinHeap {
        private var a: [UInt64] = []

        mutating func push(_ v: UInt64) {
            a.append(v)
            var i = a.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                if a[parent] <= v { break }
                a[i] = a[parent]
                i = parent
            }
            a[i] = v
        }

        mutating func pop() -> UInt64? {
            guard let top = a.first else { return nil }
            let last = a.removeLast()
            if a.isEmpty { return top }
            var i = 0
            let n = a.count
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                var c = l
                if l + 1 < n && a[l + 1] < a[l] { c = l + 1 }
                if a[c] >= last { break }
                a[i] = a[c]
                i = c
            }
            a[i] = last
            return top
        }
    }
}

extension BPETokenizer {
    /// Piece bytes → ids, with no allocation on a hit. Cleared when full.
    struct WordCache {
        private struct Entry {
            var hash: UInt64
            var keyStart: Int32, keyLen: Int32, idStart: Int32, idLen: Int32
        }

        private static let maxEntries = 1 << 17
        private var slots = [Int32](repeating: -1, count: maxEntries * 2)
        private var entries: [Entry] = []
        private var keyBytes: [UInt8] = []
        private var ids: [Int32] = []

        @inline(__always) static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for k in 0..<n { h = (h ^ UInt64(p[k])) &* 0x100_0000_01b3 }
            return h
        }

        mutating func lookup(_ h: UInt64, _ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32]) -> Bool {
            let mask = slots.count - 1
            var i = Int(truncatingIfNeeded: h) & mask
            while true {
                let s = slots[i]
                if s < 0 { return false }
                let en = entries[Int(s)]
                if en.hash == h && Int(en.keyLen) == n {
                    let same = keyBytes.withUnsafeBufferPointer { memcmp($0.baseAddress! + Int(en.keyStart), p, n) == 0 }
                    if same {
                        out.append(contentsOf: ids[Int(en.idStart)..<Int(en.idStart + en.idLen)])
                        return true
                    }
                }
                i = (i + 1) & mask
            }
        }

        mutating func insert(_ h: UInt64, _ p: UnsafePointer<UInt8>, _ n: Int, _ value: ArraySlice<Int32>) {
            if entries.count >= Self.maxEntries {
                entries.removeAll(keepingCapacity: true)
                keyBytes.removeAll(keepingCapacity: true)
                ids.removeAll(keepingCapacity: true)
                for i in slots.indices { slots[i] = -1 }
            }
            let mask = slots.count - 1
            var i = Int(truncatingIfNeeded: h) & mask
            while slots[i] >= 0 { i = (i + 1) & mask }
            slots[i] = Int32(entries.count)
            entries.append(Entry(hash: h, keyStart: Int32(keyBytes.count), keyLen: Int32(n),
                                 idStart: Int32(ids.count), idLen: Int32(value.count)))
            keyBytes.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
            ids.append(contentsOf: value)
        }
    }
}
