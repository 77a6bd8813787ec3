import Foundation

/// What a compare has finished, kept in its --out so that `compare --resume` continues it:
///   OUT/compare-progress.json  the options that decide the runs (flag and value, in flag order)
///                              and whether the compare finished (its report written);
///   OUT/finished/KEY.json      each finished run's results (what the report is built from),
///                              written atomically by rank 0 as soon as the run ends; KEY is the
///                              run's directory under OUT/runs.
/// A resumed compare reuses every finished run; the run that was interrupted resumes from its
/// latest checkpoint with the trainer's own resume (`train --resume latest`), or starts again
/// from step 0 when it saved none. Rank 0 reads the files and broadcasts them, so every rank
/// makes the same decisions (and the same collectives).
public final class CompareLedger {
    public static let progressFile = "compare-progress.json", folder = "finished"

    /// One option that decides the runs, under its flag's name.
    public struct Option: Codable, Equatable {
        public var name: String
        public var value: String
    }

    struct Progress: Codable {
        var options: [Option]
        var finished: Bool
    }

    /// A run of a plain or --data-sizes compare: its row, its seed, and the base's scores on that
    /// seed's test sets before training (the reference for forgetting and the report's base figures).
    private struct RunRecord: Codable {
        var row: CompareResults.Row
        var seed: UInt64
        var baseline: [String: Score]
    }

    /// LoadedModel.Evaluation as JSON (NaN and infinities as strings, JSONCoding's way).
    struct Score: Codable {
        var loss: Double, accuracy: Double
        init(_ e: LoadedModel.Evaluation) { loss = e.loss; accuracy = e.accuracy }
        var evaluation: LoadedModel.Evaluation { .init(loss: loss, accuracy: accuracy) }
    }

    /// Thrown on every rank alike when a preempting signal stopped the compare: the CLI exits
    /// with Preemption.exitCode and this message.
    public struct Stopped: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    let out: String
    let cluster: Cluster
    let resuming: Bool
    /// The options that decide this compare's runs, as OUT/compare-progress.json holds them.
    let options: [Option]
    /// The finished runs' files as rank 0 read them when the compare started, by key.
    private let records: [String: Data]

    var progressPath: String { out + "/" + Self.progressFile }

    /// Opens --out for compare `o`. Without --resume: refuses an --out holding an unfinished
    /// compare, else starts afresh (a finished compare's records are removed: its runs are run
    /// again, as before). With --resume: refuses an --out with nothing to resume, or whose
    /// options differ (naming the first that does), else reads every finished run. Writes
    /// nothing under a refusal. Collective.
    init(_ o: CompareOptions, cluster: Cluster, log: (String) -> Void) throws {
        out = o.out
        self.cluster = cluster
        resuming = o.resume
        let options = o.determining(worldSize: cluster.size, nodes: cluster.nodes)
        self.options = options
        var bytes: [UInt8] = []
        try cluster.agree {
            guard cluster.isRoot else { return }
            bytes = Array(try JSONCoding.encode(try Self.open(o, options: options), pretty: false))
        }
        cluster.world.broadcast(&bytes)
        records = try JSONCoding.decode([String: Data].self, from: Data(bytes), source: "the finished runs rank 0 read")
        if resuming {
            log("resuming the compare in \(out): \(records.count) finished run(s) to reuse")
        }
    }

    /// Rank 0: the checks and the records (see init).
    private static func open(_ o: CompareOptions, options: [Option]) throws -> [String: Data] {
        let fm = FileManager.default
        let path = o.out + "/" + progressFile, folder = o.out + "/" + Self.folder
        let saved = try fm.contents(atPath: path).map { try JSONCoding.decode(Progress.self, from: $0, source: path) }
        guard o.resume else {
            if let saved, !saved.finished {
                throw LoraDistError("--out \(o.out) holds an unfinished compare: add --resume to continue it, or choose another --out")
            }
            if fm.fileExists(atPath: folder) { try fm.removeItem(atPath: folder) }
            try Files.createDirectory(o.out)
            try Files.writeAtomically(try JSONCoding.encode(Progress(options: options, finished: false)), to: path)
            return [:]
        }
        guard let saved else {
            throw LoraDistError("--resume: \(o.out) holds no compare to resume (no \(progressFile)); run without --resume to start one")
        }
        if let (was, now) = zip(saved.options, options).first(where: { $0.0 != $0.1 }) {
            throw LoraDistError("--resume: \(o.out) belongs to another compare: it was started with \(was.name) \(was.value), this command has \(now.name) \(now.value) (repeat its options, or choose another --out)")
        }
        guard saved.options.count == options.count else {
            throw LoraDistError("--resume: \(o.out) was started by another version of compare (its options differ in number); choose another --out")
        }
        guard !saved.finished else {
            throw LoraDistError("--resume: the compare in \(o.out) has finished (report.md); nothing to resume")
        }
        var records: [String: Data] = [:]
        if let walker = fm.enumerator(atPath: folder) {
            for case let file as String in walker where file.hasSuffix(".json") {
                records[String(file.dropLast(5))] = fm.contents(atPath: folder + "/" + file)
            }
        }
        return records
    }

    /// Run `key`'s saved results when it finished before (logged as reused); nil otherwise.
    func reuse<T: Decodable>(_ type: T.Type, key: String, label: String, log: (String) -> Void) throws -> T? {
        guard let data = records[key] else { return nil }
        let r = try JSONCoding.decode(type, from: data, source: out + "/" + Self.folder + "/" + key + ".json")
        log("\(label): finished before, reused (\(Self.folder)/\(key).json)")
        return r
    }

    /// Saves run `key`'s results, atomically. Collective (rank 0 writes).
    func save<T: Encodable>(_ value: T, key: String) throws {
        try cluster.agree {
            guard cluster.isRoot else { return }
            let path = out + "/" + Self.folder + "/" + key + ".json"
            try Files.createDirectory((path as NSString).deletingLastPathComponent)
            try Files.writeAtomically(try JSONCoding.encode(value), to: path)
        }
    }

    /// A plain or --data-sizes run that finished before: its row, with its seed's base scores put
    /// into `baselines` when they are not there yet (logged as reused); nil when it has to run.
    func reuseRun(key: String, label: String, seed: UInt64, baselines: inout [UInt64: [String: LoadedModel.Evaluation]],
                  log: (String) -> Void) throws -> CompareResults.Row? {
        guard let r = try reuse(RunRecord.self, key: key, label: label, log: log) else { return nil }
        if baselines[seed] == nil { baselines[seed] = r.baseline.mapValues(\.evaluation) }
        return r.row
    }

    /// Saves a finished plain or --data-sizes run: its row, seed and the base's scores on that seed.
    /// Collective.
    func saveRun(_ row: CompareResults.Row, seed: UInt64, baseline: [String: LoadedModel.Evaluation], key: String) throws {
        try save(RunRecord(row: row, seed: seed, baseline: baseline.mapValues(Score.init)), key: key)
    }

    /// How the run of `t` starts. Resuming, from its latest checkpoint when it saved one (the
    /// run this compare was stopped in), as `train --resume latest` would; otherwise from step 0,
    /// any checkpoints of an earlier attempt removed first (a fresh run never meets a `latest`
    /// it must not overwrite). Stops first if a preempting signal has arrived. Collective.
    func start(_ t: inout TrainOptions, label: String, log: (String) -> Void) throws {
        try stopIfSignalled(before: label)
        let root = t.runDir + "/checkpoints"
        // Rank 0's finding, broadcast: "" (never started), "scratch" (started, no checkpoint), or the step.
        var found: [UInt8] = []
        try cluster.agree {
            guard cluster.isRoot else { return }
            let fm = FileManager.default
            if resuming, let name = CheckpointFiles.latest(root), fm.fileExists(atPath: root + "/" + name + "/" + CheckpointFiles.manifestName) {
                found = Array((try CheckpointFiles.readManifest(root + "/" + name).step.description).utf8)
                return
            }
            if resuming && fm.fileExists(atPath: t.runDir) { found = Array("scratch".utf8) }
            if fm.fileExists(atPath: root) { try fm.removeItem(atPath: root) }
        }
        cluster.world.broadcast(&found)
        switch String(decoding: found, as: UTF8.self) {
        case "": return
        case "scratch": log("\(label): started before but saved no checkpoint: starting again from step 0")
        case let step:
            t.resume = "latest"
            log("\(label): resuming from its checkpoint of step \(step) (as train --resume latest)")
        }
    }

    /// Throws Stopped on every rank when any rank has been asked to stop. Collective.
    func stopIfSignalled(before label: String) throws {
        guard cluster.sum([Preemption.isRequested ? 1 : 0])[0] > 0 else { return }
        throw Stopped(message: "stopped by a signal before \(label); \(stoppedAdvice)")
    }

    /// After a run returned: throws Stopped when it was preempted (its checkpoint saved).
    func check(_ outcome: Trainer.Outcome, label: String) throws {
        guard outcome.preempted else { return }
        throw Stopped(message: "stopped by a signal at step \(outcome.summary.stepsDone) of \(label), its checkpoint saved; \(stoppedAdvice)")
    }

    var stoppedAdvice: String {
        "the finished runs are kept in \(out)/\(Self.folder): rerun the same command with --resume to continue"
    }

    /// Rank 0 writes the report (`write`), then marks the compare finished: a later compare in
    /// this --out starts afresh. Collective.
    func finish(report write: () throws -> Void) throws {
        try cluster.agree {
            guard cluster.isRoot else { return }
            try write()
            try Files.writeAtomically(try JSONCoding.encode(Progress(options: options, finished: true)), to: progressPath)
        }
    }
}

extension CompareOptions {
    /// The options that decide which runs a compare makes and what they compute, under their
    /// flags' names, in flag order (the world size and nodes too: the exchange's bytes and the
    /// order of its sums depend on them). --out, --resume and --render-only do not decide them.
    /// A new option must be added here: CompareLedgerOptionsTests fails until it is (or until it
    /// is named there as not deciding the runs).
    public func determining(worldSize: Int, nodes: Int) -> [CompareLedger.Option] {
        func list<T>(_ v: [T], _ f: (T) -> String = { "\($0)" }) -> String { v.map(f).joined(separator: ",") }
        let pairs: [(String, String)] = [
            ("--base", base), ("--domain", domain), ("--corpora", corpora), ("--ranks", list(ranks)),
            ("--targets", targetSets.joined(separator: ";")), ("--full", "\(full)"), ("--qlora", "\(qlora)"),
            ("--compressed", "\(compressed)"), ("--powersgd-ranks", list(powerSGDRanks)),
            ("--steps", "\(steps)"), ("--batch", "\(batch)"), ("--seq", "\(seqLen)"),
            ("--lr-lora", list(loraLRs) { "\($0.shortest)" }), ("--lr-full", list(fullLRs) { "\($0.shortest)" }),
            ("--eval-every", "\(evalEvery)"), ("--patience", patience.map { "\($0)" } ?? "none (--no-early-stopping)"),
            ("--eval-seqs", "\(evalSequences)"), ("--test-seqs", "\(testSequences)"), ("--seeds", "\(seeds)"),
            ("--exchange", exchange.rawValue), ("--text-field", reading.textField),
            ("--replace-invalid-utf8", "\(reading.replaceInvalidUTF8)"), ("--quick", "\(quick)"),
            ("--continual", continual.joined(separator: ",")), ("--data-sizes", list(dataSizes)),
            ("seed", "\(seed)"), ("world size (ranks)", "\(worldSize)"), ("nodes", "\(nodes)"),
        ]
        return pairs.map { CompareLedger.Option(name: $0.0, value: $0.1) }
    }
}
