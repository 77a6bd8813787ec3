import CBLAS
import CPUFeatures
import Foundation

/// Which kernels OpenBLAS runs, and a remedy when it picked kernels below what the CPU can do.
///
/// OpenBLAS (built with DYNAMIC_ARCH, as Debian's is) picks its kernel set from the CPU's
/// family and model when the library loads. OpenBLAS 0.3.21 (Debian 12) does not know newer
/// CPUs, for example the Intel Xeon of family 6, model 207, and falls back to its Prescott
/// (SSE3) kernels: sgemm 4.6× slower than its SkylakeX kernels on that AVX-512 CPU
/// (docs/performance.md). The choice is made at load time, before any code of ours runs, so
/// the only remedy is a new process image: `reexecWithBetterKernels` sets OPENBLAS_CORETYPE
/// to the kernel set the CPU's flags support and executes the same command again. An
/// OPENBLAS_CORETYPE the user set is never touched, and `LORA_DIST_BLAS_CORE=detected` keeps
/// OpenBLAS's own choice.
public enum BLASCore {
    /// The kernel set OpenBLAS runs ("SkylakeX", "Haswell", "Prescott", ...).
    public static var name: String { String(cString: openblas_get_corename()) }

    /// Set in the environment of the new process: what OpenBLAS had detected before.
    static let replacedVariable = "LORA_DIST_BLAS_CORE_REPLACED"
    public static let choiceVariable = "LORA_DIST_BLAS_CORE"

    /// The kernels in use, with the reason when lora-dist chose them: for logs and reports.
    public static var description: String {
        guard let replaced = ProcessInfo.processInfo.environment[replacedVariable] else { return name }
        return "\(name) (set by lora-dist: OpenBLAS \(String(cString: openblas_get_config()).split(separator: " ").dropFirst().first ?? "") detected \(replaced) on this CPU)"
    }

    /// How much of x86-64 a kernel set uses: 1 SSE only, 2 AVX, 3 AVX2 + FMA, 4 AVX-512.
    /// Names OpenBLAS 0.3.21 reports for x86-64 (driver/others/dynamic.c); others are unknown (nil).
    static func level(_ core: String) -> Int? {
        switch core {
        case "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Opteron", "Opteron(SSE3)", "Barcelona",
             "Nano", "Bobcat", "Katmai", "Coppermine", "Northwood", "Banias", "Athlon", "Unknown": return 1
        case "Sandybridge", "Bulldozer", "Piledriver", "Steamroller", "Excavator": return 2
        case "Haswell", "Zen": return 3
        case "SkylakeX", "Cooperlake", "SapphireRapids": return 4
        default: return nil
        }
    }

    /// The best kernel set for a CPU with these /proc/cpuinfo flags, and its level; nil below AVX2.
    static func best(flags: Set<Substring>) -> (core: String, level: Int)? {
        if flags.isSuperset(of: ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]) { return ("SkylakeX", 4) }
        if flags.isSuperset(of: ["avx2", "fma"]) { return ("Haswell", 3) }
        return nil
    }

    /// The kernel set to switch to when OpenBLAS fell back below AVX2 on a CPU that has it; nil
    /// otherwise: a choice of AVX2 kernels or better is OpenBLAS's to make (its Zen kernels on an
    /// AMD with AVX-512 were measured fast; SkylakeX's there were not), a name unknown to this
    /// table is left alone, and so is the user's decision (OPENBLAS_CORETYPE, LORA_DIST_BLAS_CORE=detected).
    /// `cpuFlags` is read only when OpenBLAS did fall back: start-up does not parse /proc/cpuinfo otherwise.
    static func better(detected: String, cpuFlags: @autoclosure () -> Set<Substring>, environment: [String: String]) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, environment[replacedVariable] == nil,
              environment[choiceVariable] != "detected",
              let have = level(detected), have < 3, let best = best(flags: cpuFlags()) else { return nil }
        return best.core
    }

    /// LORA_DIST_BLAS_CORE takes one value; anything else is refused by name, not ignored.
    static func choiceError(_ environment: [String: String]) -> String? {
        guard let v = environment[choiceVariable], v != "detected" else { return nil }
        return "\(choiceVariable)=\(v) is not implemented: it takes 'detected' (OpenBLAS's own kernels); OPENBLAS_CORETYPE chooses kernels"
    }

    /// Runs this command again with OPENBLAS_CORETYPE set when OpenBLAS picked kernels below the
    /// CPU's (before MPI_Init: the process keeps its pid, its arguments and the rest of its
    /// environment). Returns when there is nothing to do or the exec failed.
    public static func reexecWithBetterKernels() {
        if let message = choiceError(ProcessInfo.processInfo.environment) {
            FileHandle.standardError.write(Data("lora-dist: error: \(message)\n".utf8))
            exit(1)
        }
        let detected = name
        guard let core = better(detected: detected, cpuFlags: CPUFeatures.current(), environment: ProcessInfo.processInfo.environment) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv(replacedVariable, detected, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Still here: exec failed; carry on with OpenBLAS's own choice.
        unsetenv("OPENBLAS_CORETYPE")
        unsetenv(replacedVariable)
    }
}
