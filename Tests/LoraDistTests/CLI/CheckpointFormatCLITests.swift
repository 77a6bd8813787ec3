import Foundation
import Testing
@testable import LoraDist

/// The checkpoint files as another program sees them: decoded by
/// tools/decode_checkpoint.py (Python code generated from proto/checkpoint.proto)
/// and by `protoc --decode`, against what the Swift reader and the
/// `--export-merged` safetensors hold. Each checkpoint comes from a real run of
/// the built binary in a world of one.
@Suite(.serialized, .tags(.cli)) struct CheckpointFormatCLITests {
    static let steps = 3

    /// A finished run: its step directory and (full fine-tuning) the merged export.
    struct Made: Sendable {
        let checkpoints: String
        let step: String
        let merged: String
    }

    static func train(_ mode: String) throws -> Made {
        let dir = TestPaths.tempDir("ckfmt-\(mode)")
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        var text = ""
        for i in 0..<100 { text += "Line \(i): the rain in Spain stays mainly in the plain, \(i % 13) times.\n" }
        try text.write(toFile: dir + "/data/c.txt", atomically: true, encoding: .utf8)
        let args = ["train", "--model", "tiny", "--mode", mode, "--data", dir + "/data", "--steps", "\(steps)",
                    "--batch", "4", "--seq", "32", "--rank", "4", "--eval-seqs", "4", "--quiet",
                    "--run-dir", dir + "/run", "--export-merged", dir + "/merged"]
        let (status, _, err) = try runProcess(TestPaths.binary, args)
        guard status == 0 else { throw LoraDistError("lora-dist \(args.joined(separator: " ")) exited \(status): \(err)") }
        return Made(checkpoints: dir + "/run/checkpoints",
                    step: dir + "/run/checkpoints/" + CheckpointFiles.stepName(steps), merged: dir + "/merged")
    }

    // One run per mode for the whole suite.
    static let runs: [String: Result<Made, LoraDistError>] = Dictionary(uniqueKeysWithValues: ["full", "lora"].map { mode in
        (mode, Result { () throws(LoraDistError) -> Made in
            do { return try train(mode) } catch let e as LoraDistError { throw e } catch { throw LoraDistError("\(error)") }
        })
    })

    static func made(_ mode: String) throws -> Made { try runs[mode]!.get() }

    /// python3 tools/decode_checkpoint.py DIR → (exit status, parsed JSON, stderr).
    static func decode(_ dir: String) throws -> (Int32, [String: Any], String) {
        let (status, out, err) = try runProcess("/usr/bin/env", ["python3", TestPaths.repo + "/tools/decode_checkpoint.py", dir])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
                                "decode_checkpoint.py printed no JSON (status \(status)): \(err)")
        return (status, json, err)
    }

    /// protoc --decode MESSAGE -Iproto proto/checkpoint.proto < FILE → text format.
    static func protocDecode(_ message: String, _ file: String) throws -> String {
        func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let proto = TestPaths.repo + "/proto"
        let cmd = "protoc --decode loradist.\(message) -I\(quote(proto)) \(quote(proto + "/checkpoint.proto")) < \(quote(file))"
        let (status, out, err) = try runProcess("/bin/sh", ["-c", cmd])
        try #require(status == 0, "\(cmd) exited \(status): \(err)")
        return out
    }

    /// Every element of name#kind in element order, read through the Swift reader.
    static func gathered(_ refs: [SliceRef], reader: CheckpointFiles.Reader) throws -> [Float] {
        var out: [Float] = []
        for ref in refs.sorted(by: { $0.start < $1.start }) {
            #expect(ref.start == out.count, "'\(ref.name)' (\(ref.kind)): slice starts at \(ref.start), expected \(out.count)")
            out += try reader.read(ref).values
        }
        return out
    }

    @Test("the directory holds latest, one step directory, its manifest and one shard", arguments: ["full", "lora"])
    func layout(mode: String) throws {
        let run = try Self.made(mode)
        let fm = FileManager.default
        #expect(try String(contentsOfFile: run.checkpoints + "/latest", encoding: .utf8) == "step-0000003\n")
        #expect(try fm.contentsOfDirectory(atPath: run.checkpoints).sorted() == ["latest", "step-0000003"])
        #expect(try fm.contentsOfDirectory(atPath: run.step).sorted() == ["manifest.pb", "shard-00000.pb"])
        let m = try CheckpointFiles.readManifest(run.step)
        #expect(m.formatVersion == Manifest.formatVersion && m.step == Self.steps && m.mode == mode)
        #expect(m.worldSize == 1 && m.nodes == 1 && m.optimizerStep == Self.steps)
        #expect(m.tokensSeen == Self.steps * 4 * 32)
        #expect(m.slices.allSatisfy { $0.file == "shard-00000.pb" })
        // Slice messages follow each other from byte 0 to the end of the shard file.
        var at = 0
        for ref in m.slices.sorted(by: { $0.offset < $1.offset }) {
            #expect(ref.offset == at)
            at += ref.length
        }
        #expect(at == (try fm.attributesOfItem(atPath: run.step + "/shard-00000.pb")[.size] as? Int))
        // Three kinds for each trainable tensor, each covering the whole tensor.
        let index = CheckpointFiles.index(m)
        let names = Set(m.slices.map(\.name))
        #expect(index.count == 3 * names.count)
        for name in names {
            for kind in ["param", "adam_m", "adam_v"] {
                let refs = try #require(index[name + "#" + kind], "no \(kind) for \(name)")
                #expect(refs.reduce(0) { $0 + $1.count } == refs[0].shape.reduce(1, *))
            }
        }
        if mode == "lora" {
            #expect(names.allSatisfy { $0.contains(".lora_A.") || $0.contains(".lora_B.") })
            #expect(m.baseIdentity.hasPrefix("crc32c:"))
            #expect(!m.loraConfigJSON.isEmpty)
        } else {
            #expect(names.contains("model.embed_tokens.weight") && names.contains("lm_head.weight"))
            #expect(m.baseIdentity.isEmpty && m.loraConfigJSON.isEmpty)
        }
    }

    @Test("the Python decoder verifies every checksum and reads what the Swift reader reads", arguments: ["full", "lora"])
    func pythonDecoder(mode: String) throws {
        let run = try Self.made(mode)
        let (status, json, err) = try Self.decode(run.step)
        #expect(status == 0, "decode_checkpoint.py exited \(status): \(err)")
        #expect(json["crc_ok"] as? Bool == true)
        #expect((json["errors"] as? [Any])?.isEmpty == true, "\(json["errors"] ?? "")")
        let m = try CheckpointFiles.readManifest(run.step)
        #expect(json["step"] as? Int == m.step)
        #expect(json["mode"] as? String == mode)
        #expect(json["world_size"] as? Int == 1)
        #expect(json["format_version"] as? Int == Int(Manifest.formatVersion))
        #expect(json["slices"] as? Int == m.slices.count)

        let tensors = try #require(json["tensors"] as? [String: [String: Any]])
        let index = CheckpointFiles.index(m)
        #expect(Set(tensors.keys) == Set(index.keys))
        let reader = CheckpointFiles.Reader(dir: run.step)
        for (key, refs) in index {
            let t = try #require(tensors[key], "the decoder lacks \(key)")
            let values = try Self.gathered(refs, reader: reader)
            #expect(t["shape"] as? [Int] == refs[0].shape, "\(key)")
            #expect(t["elements"] as? Int == values.count, "\(key)")
            // Each value is an fp32 printed as a Python float. JSONSerialization (corelibs)
            // may miss the double by an ulp, which rounding back to Float removes.
            let first = try #require(t["first"] as? [Double], "\(key)")
            #expect(first.map { Float($0) } == Array(values.prefix(4)), "\(key)")
            let sum = try #require(t["sum"] as? Double, "\(key)")
            let mine = values.reduce(0.0) { $0 + Double($1) }, scale = values.reduce(0.0) { $0 + abs(Double($1)) }
            #expect(abs(sum - mine) <= 1e-10 * scale, "\(key): sum \(sum) vs \(mine)")
        }
    }

    @Test("full fine-tuning: the saved params are the exported weights, bit for bit")
    func paramsEqualExport() throws {
        let run = try Self.made("full")
        let st = try SafeTensors(path: run.merged + "/model.safetensors")
        #expect(st.metadata == ["format": "pt"])
        let m = try CheckpointFiles.readManifest(run.step)
        let index = CheckpointFiles.index(m)
        let reader = CheckpointFiles.Reader(dir: run.step)
        let (_, json, _) = try Self.decode(run.step)
        let tensors = try #require(json["tensors"] as? [String: [String: Any]])
        #expect(Set(st.names) == Set(m.slices.map(\.name)))
        for name in st.names {
            let exported = try st.floats(name)
            #expect(try st.entry(name).dtype == "F32")
            let saved = try Self.gathered(try #require(index[name + "#param"]), reader: reader)
            #expect(saved.map(\.bitPattern) == exported.map(\.bitPattern), "\(name)")
            let t = try #require(tensors[name + "#param"])
            #expect(t["shape"] as? [Int] == (try st.entry(name).shape))
            #expect((t["first"] as? [Double])?.map { Float($0) } == Array(exported.prefix(4)), "\(name)")
            let sum = exported.reduce(0.0) { $0 + Double($1) }, scale = exported.reduce(0.0) { $0 + abs(Double($1)) }
            #expect(abs((t["sum"] as? Double ?? .nan) - sum) <= 1e-10 * scale, "\(name)")
        }
    }

    @Test("protoc --decode reads the manifest and a whole shard file", arguments: ["full", "lora"])
    func protocDecode(mode: String) throws {
        let run = try Self.made(mode)
        let m = try CheckpointFiles.readManifest(run.step)
        func blocks(_ text: String) -> Int {
            text.split(separator: "\n").filter { $0.trimmingCharacters(in: .whitespaces) == "slices {" }.count
        }

        let manifest = try Self.protocDecode("Manifest", run.step + "/manifest.pb")
        #expect(manifest.contains("format_version: \(Manifest.formatVersion)\n"))
        #expect(manifest.contains("manifest_crc32c: "))
        #expect(manifest.contains("step: \(Self.steps)\n"))
        #expect(manifest.contains("mode: \"\(mode)\"\n"))
        #expect(manifest.contains("world_size: 1\n"))
        #expect(manifest.contains("name: \"\(m.slices[0].name)\"\n"))
        #expect(manifest.contains("kind: \"adam_m\"\n"))
        #expect(manifest.contains("file: \"shard-00000.pb\"\n"))
        #expect(manifest.contains("crc32c: \(m.slices[0].crc32c)\n"))
        #expect(blocks(manifest) == m.slices.count)
        #expect(manifest.contains("base_identity: ") == (mode == "lora"))
        #expect(manifest.contains("lora_config_json: ") == (mode == "lora"))

        let shard = try Self.protocDecode("ShardChunk", run.step + "/shard-00000.pb")
        #expect(blocks(shard) == m.slices.filter { $0.file == "shard-00000.pb" }.count)
        #expect(shard.contains("name: \"\(m.slices[0].name)\"\n"))
        for kind in ["param", "adam_m", "adam_v"] { #expect(shard.contains("kind: \"\(kind)\"\n")) }
        #expect(shard.contains("dtype: \"F32\"\n"))
        #expect(shard.contains("count: \(m.slices[0].count)\n"))
    }

    @Test("one flipped data bit fails both the Python decoder and the Swift reader")
    func corruption() throws {
        let run = try Self.made("full")
        let copy = TestPaths.tempDir("ckfmt-corrupt") + "/step"
        defer { try? FileManager.default.removeItem(atPath: (copy as NSString).deletingLastPathComponent) }
        try FileManager.default.copyItem(atPath: run.step, toPath: copy)
        let m = try CheckpointFiles.readManifest(copy)
        let ref = m.slices.sorted { $0.offset < $1.offset }[0]
        // A slice message ends with its kind (field 7: tag, length, bytes); data (field 6) comes just before.
        let at = ref.offset + ref.length - (2 + ref.kind.utf8.count) - 1
        let path = copy + "/" + ref.file
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[at] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))

        let (status, json, err) = try Self.decode(copy)
        #expect(status == 1)
        #expect(json["crc_ok"] as? Bool == false)
        #expect(err.contains("CRC-32C"), "\(err)")
        #expect(throws: LoraDistError.self) { _ = try CheckpointFiles.Reader(dir: copy).read(ref) }

        // Without manifest.pb the directory is an interrupted save: refused whole.
        try FileManager.default.removeItem(atPath: copy + "/manifest.pb")
        let (status2, _, err2) = try runProcess("/usr/bin/env", ["python3", TestPaths.repo + "/tools/decode_checkpoint.py", copy])
        #expect(status2 == 2 && err2.contains("manifest.pb is missing"), "\(err2)")
        #expect(throws: LoraDistError.self) { _ = try CheckpointFiles.readManifest(copy) }
    }
}
