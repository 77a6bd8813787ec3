import Foundation

/// `plan --compressed`: full fine-tuning with compressed gradients (--grad-compression), beside
/// the LoRA and full rows. The same alpha-beta model as Planner.exchangeSeconds, on what each
/// method sends:
/// - bf16 / fp16: half the bytes wherever the exchange is on the wire: flat, the whole world
///   exchange; hierarchical, the cross-node allreduce (the node's reduce-scatter stays fp32).
///   The 16-bit exchange's encode and sum are not counted (a few element-wise passes).
/// - powersgd: per tensor rows·cols floats uncompressed, or (rows + cols)·r' compressed
///   (PowerSGD.floats: torch's rule), in three allreduces (flat: the world's; hierarchical:
///   reduce-scatter and allgather in the node, allreduce across nodes), after the backward
///   (no overlap, as in `train`), plus its three products per compressed matrix, 6·rows·cols·r'
///   FLOPs on every rank (not divided among ranks).
extension Planner {
    public func estimate(full compression: CompressionOptions) throws -> Estimate {
        var e = try estimate(lora: false)
        let nodesNow = nodes
        let specs = try LlamaModel.specs(config: config, lora: nil).filter(\.trainable)
        let cal = calibration.compute["full"] ?? calibration.compute.values.first
        let perRankRate = (cal?.gflopsPerCore ?? 1) * 1e9 * Double(coresPerNode) / Double(ranksPerNode)
        let full = 4 * Double(e.trainable), L = Double(ranksPerNode)
        var extraCompute = 0.0
        func bytes(_ elements: Double, _ N: Int) -> (intra: Double, inter: Double) {
            GradientExchange.bytesPerStep(strategy: exchange, elements: Int(elements.rounded()), worldSize: N * ranksPerNode,
                                          localSize: ranksPerNode, nodes: N)
        }
        var seconds: (Int) -> Double
        switch compression.method {
        case .none:
            return e
        case .bf16, .fp16:
            e.mode = "full+" + compression.method.rawValue
            switch exchange {
            case .flat:
                let b = bytes(Double(e.trainable) / 2, nodesNow)
                e.exchangeBytes = b.intra + b.inter
                seconds = { exchangeSeconds(bytes: full / 2, nodes: $0) }
            case .hierarchical:
                e.exchangeBytes = bytes(Double(e.trainable), nodesNow).intra + bytes(Double(e.trainable) / 2, nodesNow).inter
                // the node's part at fp32, the cross-node part at 16 bits
                seconds = { exchangeSeconds(bytes: full, nodes: 1) + exchangeSeconds(bytes: full / 2, nodes: $0)
                    - exchangeSeconds(bytes: full / 2, nodes: 1) }
            }
        case .powersgd:
            e.mode = "full+psgd\(compression.powerSGDRank)"
            let f = PowerSGD.floats(shapes: specs.map(\.shape), rank: compression.powerSGDRank)
            extraCompute = f.flops / perRankRate
            let n = 4 * Double(f.floats)
            switch exchange {
            case .flat:
                let b = bytes(Double(f.floats), nodesNow)
                e.exchangeBytes = b.intra + b.inter
                seconds = { 3 * exchangeSeconds(bytes: n / 3, nodes: $0) }
            case .hierarchical:
                let b = bytes(Double(f.floats), nodesNow)
                e.exchangeBytes = 2 * b.intra + b.inter  // reduce-scatter and allgather in the node
                let gather = ranksPerNode > 1 ? (L - 1) / L * n / ((calibration.intraBandwidthGBs ?? 2) * 1e9) : 0
                seconds = { 3 * exchangeSeconds(bytes: n / 3, nodes: $0) + gather }
            }
        }
        // compute of N nodes: the batch splits over every rank; PowerSGD's products do not
        let baseCompute = e.computeSeconds
        let computeAt = { (N: Int) in baseCompute * Double(nodesNow) / Double(N) + extraCompute }
        e.computeSeconds = baseCompute + extraCompute
        e.exchangeSeconds = seconds(nodesNow)
        e.exchangeBoundAt = (1...4096).first { seconds($0) >= computeAt($0) }
        // the exchange's buffers, on every rank (MemoryNeed's count for train)
        e.memoryPerNode += Double(ranksPerNode) * 4 * compression.method.extraFloatsPerTrainable * Double(e.trainable)
        return e
    }
}
