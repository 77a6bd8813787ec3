import ArgumentParser
import CPUFeatures
import Foundation
import LoraDist

/// Errors print one line and exit non-zero; --help prints the full help.
/// Under mpirun every rank parses the same arguments, so only rank 0 speaks.
/// A recipe (--config FILE) becomes arguments before the command line's (Config.swift); an
/// error about one of its values names the recipe's line and key.
func runCommand() -> Never {
    let speaks = Invocation.speaks
    func fail(_ message: String, code: Int32 = 1) -> Never {
        if speaks { FileHandle.standardError.write(Data("lora-dist: error: \(message)\n".utf8)) }
        exit(code)
    }
    let invocation: Invocation
    do {
        invocation = try Invocation(Array(CommandLine.arguments.dropFirst()))
    } catch {
        fail("\(error)")
    }
    Invocation.current = invocation
    do {
        var command = try LoraDistCommand.parseAsRoot(invocation.arguments)
        try command.run()
        exit(0)
    } catch is ClusterFailure {
        exit(1)  // reported by the rank that failed
    } catch let e as LoraDistError {
        fail(invocation.attribute(e.message))
    } catch {
        let code = LoraDistCommand.exitCode(for: error)
        if code == .success {
            if speaks { print(LoraDistCommand.fullMessage(for: error)) }
            exit(0)
        }
        let msg = LoraDistCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
        fail(invocation.attribute(msg), code: code.rawValue == 0 ? 1 : code.rawValue)
    }
}

// Before any code of the library runs: it is compiled for AVX2 and FMA (CPUFeatures).
CPUFeatures.refuseUnsupportedCPU()
// Before anything else (MPI included): OpenBLAS may have picked kernels below the CPU's.
BLASCore.reexecWithBetterKernels()
runCommand()
