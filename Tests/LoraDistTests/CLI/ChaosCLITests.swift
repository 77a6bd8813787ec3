import Foundation
import Testing

/// tools/chaos.sh, one short iteration (the full N=20 run is not part of the suite: docs/reliability.md):
/// a rank SIGKILLed at a random moment of a 4-rank run, a resume on a random world size, the
/// same losses and weights as an uninterrupted run (bitwise on 4 ranks, else within 1e-5).
@Suite(.serialized, .tags(.cli)) struct ChaosCLITests {
    @Test("tools/chaos.sh 1: kill a random rank mid-run, resume on a random world size, compare")
    func oneIteration() throws {
        var env = cleanEnvironment()
        env["LORA_DIST"] = TestPaths.binary
        env["CHAOS_STEPS"] = "20"
        env["CHAOS_SEED"] = "\(Int.random(in: 1...32767))"
        let (status, out, err) = try runProcess("/bin/bash", [TestPaths.repo + "/tools/chaos.sh", "1"], env: env)
        #expect(status == 0, "CHAOS_SEED=\(env["CHAOS_SEED"]!): \(out)\(err)")
        #expect(out.contains("chaos: 1/1 passed"), "\(out)")
    }
}
