import ArgumentParser
import Foundation
import LoraDist

/// Errors print one line and exit non-zero; --help prints the full help.
/// Under mpirun every rank parses the same arguments, so only rank 0 speaks.
func runCommand() -> Never {
    let env = ProcessInfo.processInfo.environment
    let speaks = (env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? "0") == "0"
    func fail(_ message: String, code: Int32 = 1) -> Never {
        if speaks { FileHandle.standardError.write(Data("lora-dist: error: \(message)\n".utf8)) }
        exit(code)
    }
    do {
        var command = try LoraDistCommand.parseAsRoot()
        try command.run()
        exit(0)
    } catch is ClusterFailure {
        exit(1)  // reported by the rank that failed
    } catch let e as LoraDistError {
        fail(e.message)
    } catch {
        let code = LoraDistCommand.exitCode(for: error)
        if code == .success {
            if speaks { print(LoraDistCommand.fullMessage(for: error)) }
            exit(0)
        }
        let msg = LoraDistCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
        fail(msg, code: code.rawValue == 0 ? 1 : code.rawValue)
    }
}

runCommand()
