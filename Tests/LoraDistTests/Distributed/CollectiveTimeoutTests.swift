import Foundation
import Testing
@testable import LoraDist

/// The collective timeout's settings and its one line (the hang itself: CLI/HangCLITests).
@Suite struct CollectiveTimeoutTests {
    @Test func ranges() throws {
        for ok in [0, 1, 5, 300, 604_800.0] { try CollectiveTimeout.check(ok, name: "--collective-timeout") }
        for bad in [-1, 0.5, 604_801, .nan, .infinity, -.infinity] {
            #expect(throws: LoraDistError.self) { try CollectiveTimeout.check(bad, name: "--collective-timeout") }
        }
    }

    @Test func message() {
        let one = HangWatch.message(missing: [2], hosts: ["a", "a", "a", "a"], rank: 0, waited: 5.04, timeout: 5,
                                    what: "world allreduce", phase: "step 12")
        #expect(one == "rank 2 (host a) did not arrive within --collective-timeout 5 s: rank 0 waited 5.0 s for it in the world allreduce of step 12; the job ends (the last saved checkpoint resumes with --resume latest)")
        // a whole node of a job on several nodes is named as the node
        let node = HangWatch.message(missing: [2, 3, 5], hosts: ["a", "a", "b", "b", "c", "c"], rank: 0, waited: 300, timeout: 300,
                                     what: "node barrier", phase: "")
        #expect(node.hasPrefix("node b (ranks 2, 3), rank 5 (host c) did not arrive within --collective-timeout 300 s: rank 0 waited 300 s for them in the node barrier;"), "\(node)")
        let all = HangWatch.message(missing: [], hosts: ["a", "b"], rank: 1, waited: 9, timeout: 8, what: "cross-node allreduce",
                                    phase: "step 3")
        #expect(all.hasPrefix("every rank has waited more than --collective-timeout 8 s in a collective (rank 1: the cross-node allreduce of step 3)"))
        #expect(HangWatch.list([0, 1, 2, 3, 7, 9, 10]) == "0-3, 7, 9, 10")
    }
}
