import CProto
import Foundation

/// The run directory's TensorBoard event file, `events.out.tfevents.<time>.<host>`: the
/// scalars of metrics.jsonl, one Event per optimizer step, written by rank 0 beside
/// MetricsLog and flushed to the kernel as each step ends (`tensorboard --logdir runs`).
///
/// The file is a TFRecord stream: each record is its length (u64, little-endian), the
/// masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data. Each
/// record's data is a `tensorboard.Event` (proto/tensorboard.proto); the first holds the
/// file version, the others one step's scalars. docs/metrics.md lists the tags.
public final class EventFile {
    public let path: String
    let fd: Int32

    /// A scalar of metrics.jsonl and the TensorBoard tag it is written under. The tags
    /// group the charts: loss/, optimizer/, speed/, exchange/.
    public struct Scalar: Sendable {
        public let tag: String
        public let field: MetricsRecord.CodingKeys
        public let value: @Sendable (MetricsRecord) -> Double?
    }

    /// Every scalar an event file holds, in the order written; dev loss only on evaluation steps.
    public static let scalars: [Scalar] = [
        Scalar(tag: "loss/train", field: .loss) { $0.loss },
        Scalar(tag: "loss/dev", field: .devLoss) { $0.devLoss },
        Scalar(tag: "optimizer/lr", field: .lr) { $0.lr },
        Scalar(tag: "optimizer/grad_norm", field: .gradNorm) { $0.gradNorm },
        Scalar(tag: "speed/tokens_per_s", field: .tokensPerSecond) { $0.tokensPerSecond },
        Scalar(tag: "speed/step_s", field: .stepSeconds) { $0.stepSeconds },
        Scalar(tag: "speed/compute_s", field: .computeSeconds) { $0.computeSeconds },
        Scalar(tag: "exchange/comm_wait_s", field: .commWaitSeconds) { $0.commWaitSeconds },
        Scalar(tag: "exchange/bytes", field: .exchangeBytes) { Double($0.exchangeBytes) },
        Scalar(tag: "exchange/bytes_intra", field: .exchangeBytesIntra) { Double($0.exchangeBytesIntra) },
        Scalar(tag: "exchange/bytes_inter", field: .exchangeBytesInter) { Double($0.exchangeBytesInter) },
    ]

    /// Every event file's name starts with this (TensorBoard finds files by "tfevents").
    public static let namePrefix = "events.out.tfevents."
    /// The version TensorBoard reads from a file's first event (2: restarts are marked by SessionLog START).
    static let fileVersion = "brain.Event:2"

    /// A new file for a fresh run; the run directory's older event files (a previous run's
    /// curves) are removed, as metrics.jsonl is rewritten. When resuming (`keepingStepsUpTo`),
    /// the newest event file is continued instead, cut back to the steps up to the checkpoint
    /// like metrics.jsonl (and to its last whole record, should a crash have cut one), then
    /// marked with a SessionLog START at the first step redone, so that a TensorBoard that
    /// already read the abandoned steps drops them too.
    public init(runDir: String, keepingStepsUpTo last: Int? = nil) throws {
        let existing = Self.files(in: runDir)
        if let last, let newest = existing.last {
            path = newest
            let old = try Data(contentsOf: URL(fileURLWithPath: path))
            var kept = Data()
            for record in Self.records(old).records {
                guard let event = Self.decode(record), event.step <= last else { continue }
                kept.append(Self.frame(record))
            }
            try Files.writeAtomically(kept, to: path)
            fd = open(path, O_WRONLY | O_APPEND)
            guard fd >= 0 else { throw Files.ioError("cannot open", path) }
            try write(Self.event(step: last + 1) { e, arena in
                var log = Tensorboard__SessionLog()
                tensorboard__session_log__init(&log)
                log.status = TENSORBOARD__SESSION_LOG__SESSION_STATUS__START
                e.what_case = TENSORBOARD__EVENT__WHAT_SESSION_LOG
                e.session_log = arena.one(log)
            })
        } else {
            for old in existing { unlink(old) }
            path = runDir + "/" + Self.namePrefix + String(format: "%010d", Int(Date().timeIntervalSince1970)) + "." + Self.hostName
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o644)
            guard fd >= 0 else { throw Files.ioError("cannot create", path) }
            try write(Self.event(step: 0) { e, arena in
                e.what_case = TENSORBOARD__EVENT__WHAT_FILE_VERSION
                e.file_version = arena.string(Self.fileVersion)
            })
        }
    }

    deinit { close(fd) }

    /// One step's scalars, as one record.
    public func append(_ r: MetricsRecord) throws {
        let values = Self.scalars.compactMap { s in s.value(r).map { (s.tag, Float($0)) } }
        try write(Self.event(step: r.step) { e, arena in
            var items: [UnsafeMutablePointer<Tensorboard__Summary__Value>?] = []
            for (tag, x) in values {
                var v = Tensorboard__Summary__Value()
                tensorboard__summary__value__init(&v)
                v.tag = arena.string(tag)
                v.value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE
                v.simple_value = x
                items.append(arena.one(v))
            }
            var summary = Tensorboard__Summary()
            tensorboard__summary__init(&summary)
            summary.n_value = items.count
            summary.value = arena.array(items)
            e.what_case = TENSORBOARD__EVENT__WHAT_SUMMARY
            e.summary = arena.one(summary)
        })
    }

    /// A whole record in one write: a reader sees a step's record complete or (after a crash) cut.
    private func write(_ data: Data) throws {
        try Files.writeAll(fd, Self.frame(data), path: path)
    }

    /// An Event at `step`, now, with what `fill` sets (in C memory of `arena`), packed.
    static func event(step: Int, _ fill: (inout Tensorboard__Event, CArena) -> Void) -> Data {
        let arena = CArena()
        var e = Tensorboard__Event()
        tensorboard__event__init(&e)
        e.wall_time = Date().timeIntervalSince1970
        e.step = Int64(step)
        fill(&e, arena)
        return withExtendedLifetime(arena) { packMessage(&e) }
    }

    // MARK: - TFRecord framing

    /// TFRecord's checksum: CRC-32C rotated right by 15 bits plus a constant (a CRC of data
    /// that holds CRCs stays informative).
    public static func maskedCRC<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        let c = CRC32C.checksum(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }

    /// One record around `data`.
    public static func frame(_ data: Data) -> Data {
        var out = Data(capacity: data.count + 16)
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian) { Data($0) }
        out.append(length)
        withUnsafeBytes(of: maskedCRC(length).littleEndian) { out.append(contentsOf: $0) }
        out.append(data)
        withUnsafeBytes(of: maskedCRC(data).littleEndian) { out.append(contentsOf: $0) }
        return out
    }

    /// The records of a TFRecord stream, up to the first that is incomplete or fails a
    /// checksum; `validBytes` is where that one starts.
    public static func records(_ data: Data) -> (records: [Data], validBytes: Int) {
        let bytes = [UInt8](data)
        func u32(_ at: Int) -> UInt32 { bytes[at..<at + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        var out: [Data] = []
        var at = 0
        while at + 12 <= bytes.count {
            let length = bytes[at..<at + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let room = bytes.count - at - 16  // bytes left for the data
            guard maskedCRC(bytes[at..<at + 8]) == u32(at + 8), room >= 0, length <= UInt64(room) else { break }
            let start = at + 12, end = start + Int(length)
            guard maskedCRC(bytes[start..<end]) == u32(end) else { break }
            out.append(Data(bytes[start..<end]))
            at = end + 4
        }
        return (out, at)
    }

    // MARK: - Reading back

    /// An event as lora-dist writes them.
    public struct Event: Equatable {
        public var wallTime: Double
        public var step: Int
        public var fileVersion: String?
        public var sessionStart = false
        public var scalars: [String: Float] = [:]
    }

    /// One record's Event; nil when it does not parse.
    public static func decode(_ record: Data) -> Event? {
        guard let p = unpack(record, tensorboard__event__unpack) else { return nil }
        defer { tensorboard__event__free_unpacked(p, nil) }
        let e = p.pointee
        var out = Event(wallTime: e.wall_time, step: Int(e.step))
        switch e.what_case {
        case TENSORBOARD__EVENT__WHAT_FILE_VERSION: out.fileVersion = e.file_version.map { String(cString: $0) }
        case TENSORBOARD__EVENT__WHAT_SESSION_LOG: out.sessionStart = e.session_log?.pointee.status == TENSORBOARD__SESSION_LOG__SESSION_STATUS__START
        case TENSORBOARD__EVENT__WHAT_SUMMARY:
            if let s = e.summary?.pointee {
                for i in 0..<s.n_value {
                    guard let v = s.value[i]?.pointee, v.value_case == TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE else { continue }
                    out.scalars[String(cString: v.tag)] = v.simple_value
                }
            }
        default: break
        }
        return out
    }

    /// The events of a file, up to its first damaged record.
    public static func read(_ path: String) throws -> [Event] {
        guard let data = FileManager.default.contents(atPath: path) else { throw LoraDistError("cannot read \(path)") }
        return records(data).records.compactMap(decode)
    }

    /// The event files of a run directory, oldest first.
    public static func files(in runDir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: runDir)) ?? [])
            .filter { $0.hasPrefix(namePrefix) }.sorted().map { runDir + "/" + $0 }
    }

    static var hostName: String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count - 1) == 0 else { return "localhost" }
        let h = String(cString: buf)
        return h.isEmpty ? "localhost" : h
    }
}
