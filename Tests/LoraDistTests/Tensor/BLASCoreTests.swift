import Foundation
import Testing
@testable import LoraDist

/// BLASCore: when lora-dist replaces OpenBLAS's kernel choice, and when it leaves it alone.
@Suite struct BLASCoreTests {
    static let avx512: Set<Substring> = ["sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]
    static let avx2: Set<Substring> = ["sse3", "avx", "avx2", "fma"]

    @Test("a fallback below AVX2 is replaced by the CPU's best kernels; AVX2-or-better choices, unknown names and the user's setting are kept")
    func choice() {
        #expect(BLASCore.better(detected: "Prescott", cpuFlags: Self.avx512, environment: [:]) == "SkylakeX")
        #expect(BLASCore.better(detected: "Nehalem", cpuFlags: Self.avx2, environment: [:]) == "Haswell")
        #expect(BLASCore.better(detected: "Sandybridge", cpuFlags: Self.avx2, environment: [:]) == "Haswell")
        // No AVX2 (or no FMA): nothing better to pick.
        #expect(BLASCore.better(detected: "Prescott", cpuFlags: ["sse3", "avx"], environment: [:]) == nil)
        #expect(BLASCore.better(detected: "Prescott", cpuFlags: ["avx2"], environment: [:]) == nil)
        // AVX-512 without all five of SkylakeX's subsets: AVX2 kernels.
        #expect(BLASCore.better(detected: "Prescott", cpuFlags: Self.avx2.union(["avx512f"]), environment: [:]) == "Haswell")
        // OpenBLAS's own AVX2-or-better choices stand, also on a CPU with AVX-512.
        for core in ["Zen", "Haswell", "SkylakeX", "Cooperlake"] {
            #expect(BLASCore.better(detected: core, cpuFlags: Self.avx512, environment: [:]) == nil, "\(core)")
        }
        #expect(BLASCore.better(detected: "SomeFutureCore", cpuFlags: Self.avx512, environment: [:]) == nil)
        // The user's say, and no second exec after the first.
        #expect(BLASCore.better(detected: "Prescott", cpuFlags: Self.avx512, environment: ["OPENBLAS_CORETYPE": "Prescott"]) == nil)
        #expect(BLASCore.better(detected: "Prescott", cpuFlags: Self.avx512, environment: ["LORA_DIST_BLAS_CORE": "detected"]) == nil)
        #expect(BLASCore.better(detected: "Prescott", cpuFlags: Self.avx512, environment: [BLASCore.replacedVariable: "Prescott"]) == nil)
    }

    @Test("LORA_DIST_BLAS_CORE takes 'detected' only; another value is refused by name")
    func choiceValues() {
        #expect(BLASCore.choiceError([:]) == nil)
        #expect(BLASCore.choiceError(["LORA_DIST_BLAS_CORE": "detected"]) == nil)
        #expect(BLASCore.choiceError(["LORA_DIST_BLAS_CORE": "SkylakeX"])?.contains("LORA_DIST_BLAS_CORE=SkylakeX is not implemented") == true)
    }
}
