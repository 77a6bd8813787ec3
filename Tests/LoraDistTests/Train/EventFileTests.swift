import Foundation
import Testing
@testable import LoraDist

/// The TensorBoard event file: TFRecord framing against bytes tensorboard's own RecordWriter
/// wrote, scalars read back, and a resume that continues the file cut back to the checkpoint.
/// (CLI/TensorBoardCLITests reads real runs' files with tensorboard's EventAccumulator.)
struct EventFileTests {
    @Test("a TFRecord frame is the bytes tensorboard's RecordWriter writes")
    func framing() {
        // python: RecordWriter(io.BytesIO()).write(b"hello"); masked_crc32c of b"" is the mask itself.
        let expected = "0500000000000000eab2043e68656c6c6fbb1f1c19"
        #expect(EventFile.frame(Data("hello".utf8)).map { String(format: "%02x", $0) }.joined() == expected)
        #expect(EventFile.maskedCRC([UInt8]()) == 0xA282_EAD8)
        let two = EventFile.frame(Data("hello".utf8)) + EventFile.frame(Data())
        #expect(EventFile.records(two).records == [Data("hello".utf8), Data()])
        // A record cut short or with a flipped byte ends the stream there.
        #expect(EventFile.records(two.dropLast(1)).records == [Data("hello".utf8)])
        var flipped = two
        flipped[14] ^= 1
        #expect(EventFile.records(flipped).records.isEmpty && EventFile.records(flipped).validBytes == 0)
    }

    static func record(_ step: Int, dev: Double? = nil) -> MetricsRecord {
        MetricsRecord(step: step, loss: 5 - 0.1 * Double(step), lr: 1e-3, tokens: 64 * step, tokensPerSecond: 1000,
                      stepSeconds: 0.064, gradNorm: 0.5, trainableParams: 100, mode: "lora", exchangeBytes: 0,
                      exchangeBytesIntra: 0, exchangeBytesInter: 0, exchangedParams: 100, commWaitSeconds: 0.001,
                      computeSeconds: 0.063, worldSize: 1, exchange: "hierarchical", devLoss: dev)
    }

    @Test("every scalar of a step is read back under its tag, zeros included; resuming cuts the file back to the checkpoint")
    func writeResume() throws {
        let dir = TestPaths.tempDir("events")
        do {
            let f = try EventFile(runDir: dir)
            for s in 1...5 { try f.append(Self.record(s, dev: s % 2 == 0 ? 4.5 : nil)) }
        }
        var files = EventFile.files(in: dir)
        try #require(files.count == 1)
        #expect((files[0] as NSString).lastPathComponent.hasPrefix("events.out.tfevents."))
        var events = try EventFile.read(files[0])
        #expect(events.first?.fileVersion == "brain.Event:2")
        let steps = events.dropFirst()
        #expect(steps.map(\.step) == [1, 2, 3, 4, 5])
        for e in steps {
            let r = Self.record(e.step, dev: e.step % 2 == 0 ? 4.5 : nil)
            for s in EventFile.scalars {
                #expect(e.scalars[s.tag] == s.value(r).map { Float($0) }, "step \(e.step) \(s.tag)")
            }
        }
        #expect(steps.first?.scalars["exchange/bytes"] == 0)  // a zero is written, not dropped

        // A crash after step 5 left half a record; the run resumes from a checkpoint at step 3.
        let handle = try #require(FileHandle(forWritingAtPath: files[0]))
        handle.seekToEndOfFile()
        handle.write(EventFile.frame(Data(repeating: 7, count: 40)).prefix(20))
        try handle.close()
        do {
            let f = try EventFile(runDir: dir, keepingStepsUpTo: 3)
            for s in 4...6 { try f.append(Self.record(s)) }
        }
        files = EventFile.files(in: dir)
        #expect(files.count == 1)
        events = try EventFile.read(files[0])
        #expect(events.map(\.step) == [0, 1, 2, 3, 4, 4, 5, 6])
        #expect(events.filter(\.sessionStart).map(\.step) == [4])
        let data = try Data(contentsOf: URL(fileURLWithPath: files[0]))
        #expect(EventFile.records(data).validBytes == data.count)

        // A fresh run in the same directory starts a new file and removes the old one.
        _ = try EventFile(runDir: dir)
        files = EventFile.files(in: dir)
        #expect(files.count == 1)
        #expect(try EventFile.read(files[0]).map(\.step) == [0])
    }
}
