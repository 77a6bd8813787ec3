import ArgumentParser
import Foundation
import LoraDist

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed.", subcommands: [BenchStep.self])
}

struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "step",
        abstract: "Time forward, backward and optimizer of one training step; compare achieved FLOP/s with sgemm's.")

    @Option(help: "Model config.") var model: String = "bench"
    @Option(help: "lora or full.") var mode: TrainMode = .full
    @Option(help: "LoRA targets (lora mode).") var targets: String = "q_proj,k_proj,v_proj,o_proj"
    @Option(help: "LoRA rank.") var rank: Int = 8
    @Option(help: "Sequences per step.") var batch: Int = 8
    @Option(name: .customLong("seq"), help: "Tokens per sequence.") var seqLen: Int = 256
    @Option(help: "Timed steps (after one warm-up step).") var steps: Int = 3
    @Option(help: "OpenBLAS threads (default: what OpenBLAS chose).") var threads: Int?

    func run() throws {
        if let threads { BLAS.setThreads(threads) }
        let lora = mode == .lora ? try LoRAConfig(rank: rank, alpha: Float(2 * rank), targets: [targets]) : nil
        let r = try StepBenchmark.run(model: model, lora: lora, batch: batch, seqLen: seqLen, steps: steps)
        print(r.report)
    }
}
