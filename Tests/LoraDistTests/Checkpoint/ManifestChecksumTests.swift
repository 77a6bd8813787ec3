import Foundation
import Testing
@testable import LoraDist

/// The manifest carries its own CRC-32C (format 2): a flipped byte anywhere is a clear error,
/// never a config read differently.
@Suite struct ManifestChecksumTests {
    static func manifest() -> Manifest {
        var m = Manifest()
        m.step = 7
        m.mode = "lora"
        m.modelConfigJSON = String(decoding: try! JSONCoding.object(ModelConfig.builtIn["tiny"]!.huggingFaceJSON()), as: UTF8.self)
        m.slices = [SliceRef(name: "a", kind: "param", shape: [2], start: 0, count: 2, file: "shard-00000.pb", offset: 0,
                             length: 10, crc32c: 1)]
        return m
    }

    @Test("every single flipped byte of a manifest is detected")
    func flippedBytes() throws {
        let data = Self.manifest().encoded()
        #expect(try Manifest(decoding: data) == Self.manifest())
        var detected = 0
        for i in 0..<data.count {
            var bad = data
            bad[i] ^= 0x20
            do { _ = try Manifest(decoding: bad, source: "m.pb"); } catch let e as LoraDistError {
                #expect(e.message.hasPrefix("m.pb: "))
                detected += 1
            }
        }
        #expect(detected == data.count)
        // a truncated manifest too
        #expect(throws: LoraDistError.self) { try Manifest(decoding: data.prefix(data.count - 3)) }
    }

    @Test("format 1 manifests (no checksum) are still read")
    func version1() throws {
        var m = Self.manifest()
        m.formatVersion = 1
        let back = try Manifest(decoding: m.encoded())
        #expect(back.formatVersion == 1 && back.step == 7 && back.modelConfigJSON == m.modelConfigJSON)
    }
}
