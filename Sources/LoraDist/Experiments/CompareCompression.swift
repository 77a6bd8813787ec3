import Foundation

/// compare's rows for full fine-tuning with compressed gradients (issue 19): the fair baseline
/// LoRA's savings are weighed against. Same base, data, budget, learning-rate grid and early
/// stopping as the plain full fine-tuning row; only `--grad-compression` differs.
extension Compare {
    static func compressedCandidates(_ o: CompareOptions) -> [Candidate] {
        var bf16 = CompressionOptions()
        bf16.method = .bf16
        var out = [Candidate(name: "full-bf16", label: "full fine-tuning, bf16 gradients", mode: .full, lora: nil,
                             lrs: o.fullLRs, compression: bf16)]
        for r in o.powerSGDRanks {
            var p = CompressionOptions()
            p.method = .powersgd
            p.powerSGDRank = r
            // PowerSGD starts when the learning-rate warmup ends (the steps before send fp32).
            p.powerSGDStartStep = max(1, o.steps / 20)
            out.append(Candidate(name: "full-powersgd-r\(r)", label: "full fine-tuning, PowerSGD r=\(r)", mode: .full, lora: nil,
                                 lrs: o.fullLRs, compression: p))
        }
        return out
    }
}
