import Foundation
import Testing
@testable import LoraDist

/// compare's quality-against-bytes chart and table (issue 22's rank sweep): built from the rows, by bytes.
@Suite struct CompareQualityVsBytesTests {
    /// A report row with only what the chart and table read; the rest at neutral values.
    func row(_ label: String, bytes: Int, inDomain: Double?, forgetting: Double?) throws -> CompareResults.Row {
        var o: [String: Any] = [
            "run": label, "label": label, "mode": label == "full" ? "full" : "lora", "lr": 0.001,
            "trainable_params": 1, "total_params": 1, "exchange_bytes_per_step": bytes, "full_ft_exchange_bytes_per_step": 0,
            "node_memory_bytes": 0, "seconds_per_step": 0.0, "tokens_per_s": 0.0, "steps_done": 1, "early_stopped": false,
            "out_of_domain_perplexity": [String: Double](), "run_dir": "/nonexistent",
        ]
        if let inDomain { o["in_domain_perplexity"] = inDomain }
        if let forgetting { o["forgetting"] = forgetting }
        return try JSONDecoder().decode(CompareResults.Row.self, from: JSONSerialization.data(withJSONObject: o))
    }

    /// The rows out of bytes order, one without an in-domain figure.
    func rows() throws -> [CompareResults.Row] {
        [try row("full", bytes: 12_000_000, inDomain: 5.54, forgetting: 4.0),
         try row("LoRA r=32", bytes: 400_000, inDomain: 5.95, forgetting: 3.77),
         try row("LoRA r=4", bytes: 50_000, inDomain: 6.41, forgetting: 2.9),
         try row("LoRA r=8", bytes: 100_000, inDomain: nil, forgetting: 3.1)]
    }

    /// (text, x, y) of every `<text x=.. y=..>` and (x, y, fill) of every circle in an SVG.
    func texts(_ svg: String) -> [(String, Double, Double)] {
        let re = try! NSRegularExpression(pattern: #"<text x="([-0-9.]+)" y="([-0-9.]+)"[^>]*>([^<]*)</text>"#)
        return re.matches(in: svg, range: NSRange(svg.startIndex..., in: svg)).map { m in
            func g(_ i: Int) -> String { String(svg[Range(m.range(at: i), in: svg)!]) }
            return (g(3), Double(g(1))!, Double(g(2))!)
        }
    }

    @Test("the table lists the rows by bytes, fewest first, with each row's bytes, in-domain ppl and forgetting")
    func table() throws {
        let lines = CompareReport.qualityVsBytesTable(try rows()).split(separator: "\n").dropFirst(2).map(String.init)
        #expect(lines == ["| LoRA r=4 | 48.8 KiB | 6.41 | +2.90 |", "| LoRA r=8 | 97.7 KiB | n/a | +3.10 |",
                          "| LoRA r=32 | 390.6 KiB | 5.95 | +3.77 |", "| full | 11.4 MiB | 5.54 | +4.00 |"])
    }

    @Test("the chart labels each point with its row, left to right by bytes, higher perplexity higher up; no point for a missing figure")
    func chart() throws {
        let svg = CompareReport.qualityVsBytesChart(try rows())
        let labels = texts(svg).filter { ["LoRA r=4", "LoRA r=8", "LoRA r=32", "full"].contains($0.0) }
        // In-domain series first (r=8 has none), then forgetting (all four).
        #expect(labels.map(\.0) == ["LoRA r=4", "LoRA r=32", "full", "LoRA r=4", "LoRA r=8", "LoRA r=32", "full"])
        let inDomain = Array(labels.prefix(3)), forgetting = Array(labels.suffix(4))
        for series in [inDomain, forgetting] {
            #expect(zip(series, series.dropFirst()).allSatisfy { $0.1 < $1.1 }, "x grows with bytes")
        }
        // SVG y grows downwards: ppl 6.41 (r=4) above 5.95 above 5.54 (full); forgetting 2.9 lowest of its series.
        #expect(inDomain[0].2 < inDomain[1].2 && inDomain[1].2 < inDomain[2].2)
        #expect(forgetting.map(\.2).max() == forgetting[0].2)
        // Same bytes, same x: a row's two points line up.
        #expect(inDomain[1].1 == forgetting[2].1)
        #expect(svg.components(separatedBy: "<circle").count - 1 == 3 + 4 + 2, "7 points and 2 legend markers")
        #expect(svg.contains("(log scale)"), "12 MB against 50 kB spans more than 10×")
        #expect(!CompareReport.qualityVsBytesChart(Array(try rows().dropFirst())).contains("(log scale)"), "the LoRA rows alone span 8×")
    }
}
