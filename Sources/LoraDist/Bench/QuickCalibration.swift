import Foundation

/// What `lora-dist plan` does on a machine with no calibration: the trainer's real step,
/// timed as `lora-dist bench step --model small --threads 1 --batch 2 --seq 64 --steps 3`
/// does it, once with full fine-tuning and once with LoRA (about half a second each in a release
/// build). It is the calibration docs/clusters.md validated the planner with; `bench step`
/// on the model being planned, with its batch and sequence length, gives a closer rate.
public enum QuickCalibration {
    public static let command = "bench step --model small --threads 1 --batch 2 --seq 64 --steps 3"

    /// Measures full and LoRA (with `lora`'s rank and targets) into `calibration.compute`.
    public static func run(into calibration: Calibration, lora: LoRAConfig, cluster: Cluster) throws -> Calibration {
        var cal = calibration
        for mode in [TrainMode.full, .lora] {
            var o = StepBenchmark.Options()
            o.model = "small"; o.mode = mode; o.lora = mode == .lora ? lora : nil
            o.batch = 2; o.seqLen = 64; o.steps = 3; o.threads = 1; o.replicas = 1; o.yardstick = false
            let r = try StepBenchmark.run(o, cluster: cluster)
            cal.compute[mode.rawValue] = Calibration.Compute(
                gflopsPerCore: r.gflops / Double(max(r.threads * r.ranks, 1)), model: "small", threads: r.threads,
                measured: ISO8601DateFormatter().string(from: Date()), source: "plan's quick calibration")
        }
        return cal
    }
}
