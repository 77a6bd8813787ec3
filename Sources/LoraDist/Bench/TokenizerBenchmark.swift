import Foundation

/// `lora-dist bench tokenizer`: our BPE against Hugging Face `tokenizers` on the same text and
/// the same tokenizer.json, one thread each, rounds alternating in one run. The text is cut into
/// the blocks training tokenises (`Corpus.blockRanges`); each side encodes every block without
/// special tokens, a fresh tokenizer per round (no word cache carried over), and only the
/// encoding is timed, in CPU seconds of the encoding thread (on a shared, loaded machine wall
/// time mostly measures the wait for a core). The ids of both sides are compared.
public enum TokenizerBenchmark {
    public struct Result {
        public var bytes = 0, blocks = 0, tokens = 0
        public var ours: [Double] = [], hf: [Double] = []  // CPU seconds per round
        public var identical = false
        public var hfVersion = ""
        /// Our MB/s over theirs, best round of each.
        public var ratio: Double { hf.min()! / ours.min()! }

        public var report: String {
            let mb = Double(bytes) / 1e6
            return String(format: """
                %.1f MB in %ld blocks, %ld tokens, ids %@
                lora-dist BPE       %6.2f MB/s  (best of %ld; rounds %@ CPU s)
                tokenizers %@  %6.2f MB/s  (best of %ld; rounds %@ CPU s)
                ratio               %.2f× (lora-dist / tokenizers)
                """, mb, blocks, tokens, identical ? "identical" : "DIFFER",
                mb / ours.min()!, ours.count, ours.map { String(format: "%.2f", $0) }.joined(separator: " "),
                hfVersion.padding(toLength: 8, withPad: " ", startingAt: 0), mb / hf.min()!, hf.count,
                hf.map { String(format: "%.2f", $0) }.joined(separator: " "), ratio)
        }
    }

    /// The Python side: reads the text and the block offsets, times `encode` over the blocks,
    /// writes the ids (int32) to the file named last, prints {"seconds" (CPU time of the thread), "version"}.
    static let python = """
        import json, sys, time, array
        import tokenizers
        tok = tokenizers.Tokenizer.from_file(sys.argv[1])
        data = open(sys.argv[2], "rb").read()
        offs = json.load(open(sys.argv[3]))
        blocks = [data[offs[i]:offs[i + 1]].decode("utf-8") for i in range(len(offs) - 1)]
        t0 = time.thread_time()
        ids = [tok.encode(b, add_special_tokens=False).ids for b in blocks]
        t = time.thread_time() - t0
        out = array.array("i")
        for x in ids: out.extend(x)
        with open(sys.argv[4], "wb") as f: out.tofile(f)
        print(json.dumps({"seconds": t, "version": tokenizers.__version__}))
        """

    public static func run(tokenizerJSON: String, text path: String, megabytes: Double, rounds: Int,
                           python: String = "python3") throws -> Result {
        let json = try Data(contentsOf: URL(fileURLWithPath: tokenizerJSON))
        // The first `megabytes` of the text (its files in corpus order), cut at a line end.
        var text: [UInt8] = []
        let limit = Int(megabytes * 1e6)
        for f in try Corpus.listFiles(path) where text.count < limit {
            let m = try MappedFile(path: f)
            text += m.bytes.prefix(limit - text.count)
        }
        while let last = text.last, last != 0x0A, text.count > 1 { text.removeLast() }
        guard UTF8Check.firstInvalid(text.withUnsafeBufferPointer { $0 }) == nil else {
            throw LoraDistError("\(path): the benchmark text must be valid UTF-8")
        }
        let blocks = text.withUnsafeBufferPointer { Corpus.blockRanges($0) }
        let dir = NSTemporaryDirectory() + "lora-dist-bench-tokenizer-\(getpid())"
        try Files.createDirectory(dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(text).write(to: URL(fileURLWithPath: dir + "/text"))
        try JSONSerialization.data(withJSONObject: [0] + blocks.map(\.upperBound)).write(to: URL(fileURLWithPath: dir + "/offsets.json"))

        var r = Result()
        r.bytes = text.count
        r.blocks = blocks.count
        var ours: [Int32] = []
        for _ in 0..<rounds {
            let tok = try BPETokenizer(tokenizerJSON: json)
            let strings = text.withUnsafeBufferPointer { b in blocks.map { String(decoding: UnsafeBufferPointer(rebasing: b[$0]), as: UTF8.self) } }
            ours = []
            ours.reserveCapacity(text.count / 3)
            let t0 = threadCPUSeconds()
            for s in strings { ours += tok.encode(s) }
            r.ours.append(threadCPUSeconds() - t0)

            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [python, "-c", Self.python, tokenizerJSON, dir + "/text", dir + "/offsets.json", dir + "/ids"]
            var env = ProcessInfo.processInfo.environment
            env["TOKENIZERS_PARALLELISM"] = "false"
            env["RAYON_NUM_THREADS"] = "1"
            p.environment = env
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            let stdout = out.fileHandleForReading.readDataToEndOfFile()
            let stderr = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0,
                  let o = try? JSONSerialization.jsonObject(with: stdout) as? [String: Any], let s = o["seconds"] as? Double else {
                throw LoraDistError("\(python) with Hugging Face tokenizers failed: "
                    + String(decoding: stderr, as: UTF8.self).split(separator: "\n").suffix(1).joined())
            }
            r.hf.append(s)
            r.hfVersion = o["version"] as? String ?? "?"
        }
        let theirs = try Data(contentsOf: URL(fileURLWithPath: dir + "/ids"))
        r.tokens = ours.count
        r.identical = theirs.count == 4 * ours.count && theirs.withUnsafeBytes { t in
            ours.withUnsafeBytes { o in memcmp(t.baseAddress!, o.baseAddress!, o.count) == 0 }
        }
        return r
    }
}

/// CPU seconds this thread has run.
func threadCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}
