import Foundation

/// What the CPU offers (/proc/cpuinfo's flags) and what this build of lora-dist needs of it.
///
/// The LoraDist library is compiled for x86-64 Haswell (AVX2, FMA; Package.swift), so its
/// element-wise loops vectorise 8 floats wide instead of SSE2's 4. This module is compiled for
/// the baseline, so the executable can check the CPU with it before any library code runs and
/// refuse an older CPU by name instead of dying on an illegal instruction.
public enum CPUFeatures {
    /// The CPU the library was compiled for (Package.swift's LORA_DIST_TARGET_CPU).
    public static var libraryTarget: String {
        #if LORA_DIST_TARGET_HASWELL
        return "haswell"
        #else
        return "baseline"
        #endif
    }

    /// The /proc/cpuinfo flags a Haswell build's instructions come from (LLVM's haswell:
    /// AVX2, FMA, BMI1/2, F16C, MOVBE, and the SSE4.2 and POPCNT below them).
    static let haswell = ["avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "sse4_2", "popcnt"]

    /// The flags this build needs; empty for a baseline build.
    public static var required: [String] { libraryTarget == "haswell" ? haswell : [] }

    /// The flags of the first CPU in a /proc/cpuinfo text (what the kernel lets programs use).
    public static func flags(cpuinfo: String) -> Set<Substring> {
        guard let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " "))
    }

    /// This machine's flags; empty where there is no /proc/cpuinfo.
    public static func current() -> Set<Substring> { machineFlags }

    /// Read once per process (the refusal and BLASCore both ask, on every rank's start-up), and only
    /// the file's first 16 KiB: the kernel writes /proc/cpuinfo CPU by CPU as it is read, the first
    /// CPU's block holds the flags line, and the whole file of a many-core node is hundreds of KiB.
    private static let machineFlags: Set<Substring> = {
        guard let file = FileHandle(forReadingAtPath: "/proc/cpuinfo") else { return [] }
        defer { try? file.close() }
        guard let head = try? file.read(upToCount: 16 << 10) else { return [] }
        return flags(cpuinfo: String(decoding: head, as: UTF8.self))
    }()

    /// The required flags a CPU lacks, in the order `required` lists them. A CPU whose flags
    /// cannot be read (no /proc/cpuinfo) lacks nothing: there is nothing to go by.
    public static func missing(_ required: [String], from flags: Set<Substring>) -> [String] {
        guard !flags.isEmpty else { return [] }
        return required.filter { !flags.contains(Substring($0)) }
    }

    /// One line for a CPU this build cannot run on; nil when it can.
    public static func refusal(flags: Set<Substring>) -> String? {
        let lacks = missing(required, from: flags)
        guard !lacks.isEmpty else { return nil }
        return "this build of lora-dist needs an x86-64 CPU with AVX2 and FMA (Haswell or newer); this one lacks "
            + lacks.joined(separator: ", ") + ": rebuild with LORA_DIST_TARGET_CPU=x86-64 swift build -c release"
    }

    /// Exits with that line when the CPU cannot run this build. First thing in main: before it,
    /// no code of the library may run.
    public static func refuseUnsupportedCPU() {
        guard let message = refusal(flags: current()) else { return }
        FileHandle.standardError.write(Data("lora-dist: error: \(message)\n".utf8))
        exit(1)
    }
}
