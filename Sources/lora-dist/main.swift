import ArgumentParser
import Foundation
import LoraDist

/// Errors print one line and exit non-zero; --help prints the full help.
func runCommand() -> Never {
    do {
        var command = try LoraDistCommand.parseAsRoot()
        try command.run()
        exit(0)
    } catch let e as LoraDistError {
        FileHandle.standardError.write(Data("lora-dist: error: \(e.message)\n".utf8))
        exit(1)
    } catch {
        let code = LoraDistCommand.exitCode(for: error)
        if code == .success {
            print(LoraDistCommand.fullMessage(for: error))
            exit(0)
        }
        let msg = LoraDistCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
        FileHandle.standardError.write(Data("lora-dist: error: \(msg)\n".utf8))
        exit(code.rawValue == 0 ? 1 : code.rawValue)
    }
}

runCommand()
