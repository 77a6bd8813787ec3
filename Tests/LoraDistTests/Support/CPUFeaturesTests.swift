import CPUFeatures
import Foundation
import Testing

/// CPUFeatures: the library is compiled for Haswell; a CPU without its instructions is refused by name.
@Suite struct CPUFeaturesTests {
    static let cpuinfo = """
        processor\t: 0
        vendor_id\t: GenuineIntel
        flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt movbe avx f16c fma bmi1 avx2 bmi2 avx512f
        processor\t: 1
        flags\t\t: fpu sse sse2
        """

    @Test("the first CPU's flags are read from /proc/cpuinfo's text")
    func flags() {
        let f = CPUFeatures.flags(cpuinfo: Self.cpuinfo)
        #expect(f.contains("avx2") && f.contains("avx512f") && f.contains("fma"))
        #expect(!f.contains("flags") && !f.contains(":"))
        #expect(CPUFeatures.flags(cpuinfo: "processor : 0\n").isEmpty)
    }

    @Test("the flags a CPU lacks are named in the order required; unreadable flags lack nothing")
    func missing() {
        let haswell = ["avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "sse4_2", "popcnt"]
        #expect(CPUFeatures.missing(haswell, from: CPUFeatures.flags(cpuinfo: Self.cpuinfo)).isEmpty)
        let sandyBridge: Set<Substring> = ["sse2", "sse4_2", "popcnt", "avx"]
        #expect(CPUFeatures.missing(haswell, from: sandyBridge) == ["avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"])
        #expect(CPUFeatures.missing(haswell, from: []).isEmpty)
    }

    @Test("this build is the Haswell one, and a CPU without AVX2 gets one line naming what it lacks")
    func refusal() throws {
        // The default build (Package.swift without LORA_DIST_TARGET_CPU) compiles the library for Haswell.
        #expect(CPUFeatures.libraryTarget == "haswell")
        let line = try #require(CPUFeatures.refusal(flags: ["sse2", "avx"]))
        #expect(line.contains("lacks avx2, fma, bmi1, bmi2, f16c, movbe, sse4_2, popcnt"))
        #expect(line.contains("LORA_DIST_TARGET_CPU=x86-64") && !line.contains("\n"))
        // the machine running the tests runs the library, so it has what the build needs
        #expect(CPUFeatures.refusal(flags: CPUFeatures.current()) == nil)
        #expect(CPUFeatures.current().contains("sse2"), "this machine's /proc/cpuinfo flags")
    }
}
