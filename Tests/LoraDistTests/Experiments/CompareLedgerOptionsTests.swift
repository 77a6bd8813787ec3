import Foundation
import Testing
@testable import LoraDist

/// `compare --resume` refuses options that differ from the interrupted compare's, by comparing
/// `CompareOptions.determining`. That list is written by hand, so a new compare option left out
/// of it would be resumed under the old runs without a word. These tests make that omission fail.
@Suite struct CompareLedgerOptionsTests {
    /// Each option that decides the runs, with a change to it.
    static let changes: [(property: String, change: (inout CompareOptions) -> Void)] = [
        ("base", { $0.base = "tiny" }),
        ("domain", { $0.domain = "legal" }),
        ("corpora", { $0.corpora = "/elsewhere" }),
        ("ranks", { $0.ranks = [4] }),
        ("targetSets", { $0.targetSets = ["q_proj"] }),
        ("full", { $0.full.toggle() }),
        ("qlora", { $0.qlora.toggle() }),
        ("compressed", { $0.compressed.toggle() }),
        ("powerSGDRanks", { $0.powerSGDRanks = [2] }),
        ("steps", { $0.steps += 1 }),
        ("batch", { $0.batch += 1 }),
        ("seqLen", { $0.seqLen += 1 }),
        ("loraLRs", { $0.loraLRs = [5e-4] }),
        ("fullLRs", { $0.fullLRs = [5e-4] }),
        ("evalEvery", { $0.evalEvery += 1 }),
        ("patience", { $0.patience = nil }),
        ("evalSequences", { $0.evalSequences += 1 }),
        ("testSequences", { $0.testSequences += 1 }),
        ("exchange", { $0.exchange = $0.exchange == .flat ? .hierarchical : .flat }),
        ("reading", { $0.reading.textField = "body" }),
        ("reading", { $0.reading.replaceInvalidUTF8.toggle() }),
        ("seed", { $0.seed += 1 }),
        ("quick", { $0.quick.toggle() }),
        ("seeds", { $0.seeds += 1 }),
        ("continual", { $0.continual = ["legal", "medical"] }),
        ("dataSizes", { $0.dataSizes = [1000] }),
    ]

    /// What does not decide the runs: where they go, whether to resume, and how configs are printed.
    static let notDeciding: Set<String> = ["out", "resume", "configYAML", "runConfig"]

    @Test("every stored property of CompareOptions either decides the runs or is named as not deciding them")
    func everyPropertyIsClassified() {
        let properties = Set(Mirror(reflecting: CompareOptions()).children.compactMap(\.label))
        let classified = Set(Self.changes.map(\.property)).union(Self.notDeciding)
        #expect(properties.subtracting(classified).isEmpty,
                "new CompareOptions properties: add them to CompareOptions.determining (or to notDeciding here)")
        #expect(classified.subtracting(properties).isEmpty, "properties named here that CompareOptions no longer has")
    }

    @Test("changing any deciding option changes what --resume compares")
    func everyDecidingOptionIsCompared() {
        let before = CompareOptions().determining(worldSize: 2, nodes: 1)
        for (property, change) in Self.changes {
            var o = CompareOptions()
            change(&o)
            #expect(o.determining(worldSize: 2, nodes: 1) != before, "\(property) is not in CompareOptions.determining")
        }
        #expect(CompareOptions().determining(worldSize: 4, nodes: 1) != before)
        #expect(CompareOptions().determining(worldSize: 2, nodes: 2) != before)
    }

    @Test("where the results go and whether to resume do not decide the runs")
    func notDecidingOptions() {
        let before = CompareOptions().determining(worldSize: 2, nodes: 1)
        var o = CompareOptions()
        o.out = "/elsewhere"; o.resume = true; o.configYAML = "steps: 1\n"; o.runConfig = { _ in nil }
        #expect(o.determining(worldSize: 2, nodes: 1) == before)
    }
}
