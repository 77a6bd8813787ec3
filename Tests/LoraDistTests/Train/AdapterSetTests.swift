import Foundation
import Testing
@testable import LoraDist

@Suite struct AdapterSetTests {
    /// Every adapter is trained by exactly one group, every rank is in one group, groups are
    /// contiguous blocks of nearly equal size, and a group trains adapters g, g + G, ...
    @Test("ranks split into groups that cover every adapter once", arguments: [(1, 2), (2, 2), (4, 2), (3, 2), (2, 3), (3, 4), (8, 3), (1, 1)])
    func groups(ranks: Int, adapters: Int) {
        let layout = AdapterSet.groups(ranks: ranks, adapters: adapters)
        #expect(layout.count == min(ranks, adapters))
        let groupOfRank = (0..<ranks).map(layout.of)
        #expect(groupOfRank == groupOfRank.sorted(), "groups are contiguous: \(groupOfRank)")
        let sizes = (0..<layout.count).map { g in groupOfRank.filter { $0 == g }.count }
        #expect(sizes.max()! - sizes.min()! <= 1, "sizes \(sizes)")
        let trained = (0..<layout.count).flatMap(layout.adapters)
        #expect(trained.sorted() == Array(0..<adapters))
    }

    @Test("NAME=DATA lists are parsed and checked")
    func parse() throws {
        let data = try writeCorpus("set-parse") { "line \($0)" }
        let specs = try AdapterSet.Spec.parse("legal=\(data),med_2-x=\(data)")
        #expect(specs.map(\.name) == ["legal", "med_2-x"])
        #expect(specs.allSatisfy { $0.data == data })
        for bad in ["legal", "=\(data)", "-x=\(data)", "a=", "a=\(data),a=\(data)", "a b=\(data)", "\(String(repeating: "a", count: 65))=\(data)",
                    "a=\(data)/missing.txt", "a=\(data),"] {
            #expect(throws: LoraDistError.self, "\(bad)") { try AdapterSet.Spec.parse(bad) }
        }
        #expect(AdapterSet.runDir("runs/x", adapter: "legal") == "runs/x/adapters/legal")
    }

    @Test("an adapter set's memory counts the base once and each adapter's weights")
    func memory() throws {
        let c = ModelConfig.builtIn["small"]!
        let lora = TrainOptions.defaultLoRA
        let one = try MemoryNeed(config: c, lora: lora, ranksPerNode: 2, maxBatch: 4, seqLen: 64, training: true)
        let frozen = 4 * Double(ParameterStore.frozenSlots(try LlamaModel.specs(config: c, lora: lora)))
        let set = one.adapterSet(adapters: 4, perRank: 2, frozenBytes: frozen)
        #expect(set.weights == frozen + 4 * (one.weights - frozen))
        #expect(set.sharded == 4 * one.sharded)
        #expect(set.perRank == 2 * one.perRank - MemoryNeed.runtimeBytesPerRank)
        #expect(set.perNode < 4 * one.perNode)
        #expect(one.adapterSet(adapters: 1, perRank: 1, frozenBytes: frozen).perNode == one.perNode)
    }
}
