import ArgumentParser
import Foundation
import LoraDist

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a checkpoint's manifest and verify every slice's checksum (exit 1 on any mismatch).")

    @Argument(help: "A checkpoint: a step directory (…/checkpoints/step-NNNNNNN), a checkpoints folder or a run directory (its latest), or a latest/best pointer file.")
    var path: String
    @Flag(name: .customLong("no-verify"), help: "Only print the manifest; do not read the shards.") var noVerify = false

    func run() throws {
        let dir = try CheckpointInspector.locate(path)
        let (report, problems) = try CheckpointInspector.inspect(dir, verify: !noVerify)
        print(report)
        if let first = problems.first {
            // A few lines say what is wrong; the rest is counted.
            for p in problems.prefix(8) { FileHandle.standardError.write(Data("  \(p)\n".utf8)) }
            if problems.count > 8 { FileHandle.standardError.write(Data("  ... and \(problems.count - 8) more\n".utf8)) }
            throw LoraDistError("checkpoint \(dir) failed verification: \(first)")
        }
    }
}
