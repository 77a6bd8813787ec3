import Foundation
import Testing
@testable import LoraDist

/// `lora-dist bench attention`: the JSON line's keys, its FLOP counts against the shape's
/// (worked out here from the blocks of 64 queries, not taken from the library), and the
/// refusal of bad shapes in one line.
@Suite("bench attention against the binary", .serialized, .tags(.cli))
struct BenchAttentionCLITests {
    static let keys = ["side", "batch", "seq", "heads", "kv_heads", "head_dim", "window", "threads", "lanes", "blas_threads",
                       "layers", "steps", "forward_ms", "backward_ms", "total_ms", "forward_ms_all", "backward_ms_all",
                       "flops_as_run_forward", "flops_as_run_backward", "flops_as_run", "flops_useful_forward",
                       "flops_useful_backward", "flops_useful", "gflops_as_run", "gflops_useful", "attention_own_ms",
                       "sgemm_ms", "scratch_bytes", "buffer_bytes", "start_rss_bytes", "peak_rss_bytes", "blas_core",
                       "library_target"]

    @Test("the JSON line holds every key and the FLOPs of the shape", arguments: [nil, 30] as [Int?])
    func flopsOfTheShape(window: Int?) throws {
        let (B, T, H, KV, D, layers, steps) = (1, 100, 4, 2, 16, 2, 2)
        var args = ["bench", "attention", "--batch", "\(B)", "--seq", "\(T)", "--heads", "\(H)", "--kv-heads", "\(KV)",
                    "--head-dim", "\(D)", "--threads", "2", "--layers", "\(layers)", "--steps", "\(steps)", "--json"]
        if let window { args += ["--window", "\(window)"] }
        let (status, out, err) = try runProcess(TestPaths.binary, args, env: cleanEnvironment())
        try #require(status == 0, "\(err)")
        let json = try #require(out.split(separator: "\n").last.flatMap {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }, "\(out)")
        #expect(Set(json.keys) == Set(Self.keys), "\(json.keys.sorted())")
        func number(_ key: String) -> Double { (json[key] as? NSNumber)?.doubleValue ?? .nan }

        // As run: per query head, each block of 64 queries (rows) against the keys from the
        // first its first query sees (0 without a window) to its end; 2 FLOPs per
        // multiply-add, D per (row, key); 2 products forward, 5 backward.
        var blockPairs = 0.0
        for i0 in stride(from: 0, to: T, by: 64) {
            let i1 = min(i0 + 64, T), k0 = window.map { max(0, i0 - $0 + 1) } ?? 0
            blockPairs += Double((i1 - i0) * (i1 - k0))
        }
        let perProductRun = 2 * Double(D) * blockPairs * Double(B * H * layers)
        #expect(number("flops_as_run_forward") == 2 * perProductRun)
        #expect(number("flops_as_run_backward") == 5 * perProductRun)
        #expect(number("flops_as_run") == 7 * perProductRun)
        // Useful: per query head, each query against the keys it sees; 2 products forward, 4 backward.
        let seen = (0..<T).reduce(0.0) { $0 + Double(min($1 + 1, window ?? Int.max)) }
        let perProductUseful = 2 * Double(D) * seen * Double(B * H * layers)
        #expect(number("flops_useful_forward") == 2 * perProductUseful)
        #expect(number("flops_useful_backward") == 4 * perProductUseful)
        #expect(number("flops_useful") == 6 * perProductUseful)

        #expect(number("lanes") == 2 && number("blas_threads") == 2 && number("layers") == Double(layers))
        #expect((json["forward_ms_all"] as? [Double])?.count == steps && (json["backward_ms_all"] as? [Double])?.count == steps)
        #expect(number("forward_ms") > 0 && number("backward_ms") > 0 && number("total_ms") >= number("forward_ms"))
        #expect(number("gflops_useful") > 0 && number("gflops_as_run") > number("gflops_useful"))
        let shape = Attention.Shape(batch: B, seqLen: T, heads: H, kvHeads: KV, headDim: D, window: window, lanes: 2)
        #expect(number("scratch_bytes") == 4 * shape.scratchFloats)
        #expect(number("peak_rss_bytes") >= number("start_rss_bytes") && number("start_rss_bytes") > 0)
        if let window { #expect(number("window") == Double(window)) } else { #expect(json["window"] is NSNull) }
    }

    @Test("a bad shape is refused in one line naming it", arguments: [
        (["--heads", "9", "--kv-heads", "2"], "--heads 9 must be a multiple of --kv-heads 2"),
        (["--window=0"], "--window must be in 1..."),
        (["--seq", "0"], "--seq must be in 1..."),
    ])
    func refusesBadShapes(args: [String], says: String) throws {
        let (status, out, err) = try runProcess(TestPaths.binary, ["bench", "attention", "--json"] + args, env: cleanEnvironment())
        #expect(status != 0)
        #expect(out.isEmpty, "\(out)")
        let lines = err.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains(says), "\(args): \(err)")
    }
}
