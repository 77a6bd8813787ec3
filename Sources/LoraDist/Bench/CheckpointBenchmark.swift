import Foundation

/// `lora-dist bench checkpoint`: save and load throughput of a checkpoint next
/// to a plain sequential write (with fsync) and read of the same number of
/// bytes in the same folder. Collective: runs on every rank of `cluster`.
public enum CheckpointBenchmark {
    public struct Result {
        public var bytes = 0.0
        public var saveSeconds = 0.0, loadSeconds = 0.0, plainWriteSeconds = 0.0, plainReadSeconds = 0.0
        public func mbps(_ s: Double) -> Double { bytes / s / 1e6 }
    }

    public static func run(model: String, mode: TrainMode, dir: String, cluster: Cluster, repeats: Int = 3) throws -> Result {
        var o = TrainOptions()
        o.model = model
        o.mode = mode
        o.runDir = dir + "/run"
        o.steps = 1
        o.batch = 1
        o.seqLen = 16
        o.quiet = true
        o.keepLast = 1
        // A synthetic corpus: the benchmark measures I/O, not learning.
        o.data = dir + "/corpus.txt"
        if cluster.isRoot {
            try Files.createDirectory(dir)
            let text = String(repeating: "checkpoint throughput benchmark text\n", count: 200)
            try text.write(toFile: o.data, atomically: true, encoding: .utf8)
        }
        cluster.barrier()
        let trainer = try Trainer(options: o, cluster: cluster)
        var r = Result()
        // Bytes of slice payload this job writes: values and two Adam moments of every trainable element.
        r.bytes = Double(trainer.model.trainableParams) * 3 * 4
        func timed(_ body: () throws -> Void) rethrows -> Double {
            cluster.barrier()
            let t0 = DispatchTime.now().uptimeNanoseconds
            try body()
            cluster.barrier()
            return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        }
        var save = [Double](), load = [Double](), write = [Double](), read = [Double]()
        for i in 1...repeats {
            save.append(try timed { try trainer.saveCheckpoint(step: i, tokens: 0, runState: nil) })
            load.append(try timed { _ = try trainer.resume("latest") })
            // The plain baseline: every writer rank writes and reads its share of the bytes.
            let share = cluster.writesCheckpoints ? Int(r.bytes) / cluster.node.size : 0
            let path = dir + "/plain-\(cluster.rank).bin"
            let payload = Data(count: share)
            write.append(try timed { try Files.writeAtomically(payload, to: path) })
            read.append(timed { _ = FileManager.default.contents(atPath: path) })
            unlink(path)
        }
        let median = StepBenchmark.median
        r.saveSeconds = median(save); r.loadSeconds = median(load)
        r.plainWriteSeconds = median(write); r.plainReadSeconds = median(read)
        if cluster.isRoot { try? FileManager.default.removeItem(atPath: dir) }
        return r
    }
}
