import Foundation

/// Small self-contained SVG charts for the reports (no dependencies; any browser shows them).
public enum SVGChart {
    public struct Series {
        public var name: String
        public var points: [(Double, Double)]
        public var dashed = false
        public init(name: String, points: [(Double, Double)], dashed: Bool = false) {
            self.name = name; self.points = points; self.dashed = dashed
        }
    }

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }

    static func label(_ v: Double) -> String {
        if v == 0 { return "0" }
        let a = abs(v)
        if a >= 1e9 { return String(format: "%.1fG", v / 1e9) }
        if a >= 1e6 { return String(format: "%.1fM", v / 1e6) }
        if a >= 1e3 { return String(format: "%.1fk", v / 1e3) }
        if a >= 10 || v == v.rounded() { return String(format: "%.0f", v) }
        return String(format: "%.2f", v)
    }

    /// Lines over a shared x axis. Series with the same colour index share a colour
    /// (pass train and dev of one run as solid and dashed).
    public static func lines(title: String, xLabel: String, yLabel: String, series: [Series],
                             colorOf: (Int) -> Int = { $0 }, width: Double = 760, height: Double = 420) -> String {
        let all = series.flatMap(\.points).filter { $0.0.isFinite && $0.1.isFinite }
        let x0 = all.map(\.0).min() ?? 0, x1 = max(all.map(\.0).max() ?? 1, x0 + 1e-9)
        var y0 = all.map(\.1).min() ?? 0, y1 = all.map(\.1).max() ?? 1
        if y1 - y0 < 1e-9 { y0 -= 0.5; y1 += 0.5 }
        let pad = (y1 - y0) * 0.05
        y0 -= pad; y1 += pad
        let L = 70.0, R = 200.0, T = 40.0, B = 50.0
        let pw = width - L - R, ph = height - T - B
        func px(_ x: Double) -> Double { L + (x - x0) / (x1 - x0) * pw }
        func py(_ y: Double) -> Double { T + (1 - (y - y0) / (y1 - y0)) * ph }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(esc(title))</text>\n"
        for i in 0...5 {
            let yv = y0 + Double(i) / 5 * (y1 - y0), xv = x0 + Double(i) / 5 * (x1 - x0)
            s += "<line x1=\"\(L)\" y1=\"\(py(yv))\" x2=\"\(L + pw)\" y2=\"\(py(yv))\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(L - 6)\" y=\"\(py(yv) + 4)\" text-anchor=\"end\">\(label(yv))</text>\n"
            s += "<text x=\"\(px(xv))\" y=\"\(T + ph + 18)\" text-anchor=\"middle\">\(label(xv))</text>\n"
        }
        s += "<rect x=\"\(L)\" y=\"\(T)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#333\"/>\n"
        s += "<text x=\"\(L + pw / 2)\" y=\"\(height - 10)\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        s += "<text transform=\"translate(16,\(T + ph / 2)) rotate(-90)\" text-anchor=\"middle\">\(esc(yLabel))</text>\n"
        for (i, se) in series.enumerated() {
            let pts = se.points.filter { $0.0.isFinite && $0.1.isFinite }
            guard !pts.isEmpty else { continue }
            let c = colors[colorOf(i) % colors.count]
            let path = pts.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"1.6\"\(se.dashed ? " stroke-dasharray=\"5,3\"" : "") points=\"\(path)\"/>\n"
            let ly = T + 14 + Double(i) * 18
            s += "<line x1=\"\(L + pw + 12)\" y1=\"\(ly - 4)\" x2=\"\(L + pw + 34)\" y2=\"\(ly - 4)\" stroke=\"\(c)\" stroke-width=\"2\"\(se.dashed ? " stroke-dasharray=\"5,3\"" : "")/>\n"
            s += "<text x=\"\(L + pw + 40)\" y=\"\(ly)\">\(esc(se.name))</text>\n"
        }
        return s + "</svg>\n"
    }

    /// Horizontal bars, one per item, on a logarithmic scale when values span decades.
    public static func bars(title: String, unit: String, items: [(String, Double)], width: Double = 760) -> String {
        let rowH = 28.0, T = 40.0, L = 220.0, R = 120.0
        let height = T + Double(items.count) * rowH + 20
        let positive = items.map(\.1).filter { $0 > 0 }
        let lo = positive.min() ?? 1, hi = max(positive.max() ?? 1, lo * 1.0001)
        let logScale = hi / lo > 50
        func frac(_ v: Double) -> Double {
            guard v > 0 else { return 0 }
            return logScale ? (log10(v) - log10(lo) + 0.3) / (log10(hi) - log10(lo) + 0.3) : v / hi
        }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(esc(title))\(logScale ? " (log scale)" : "")</text>\n"
        for (i, item) in items.enumerated() {
            let y = T + Double(i) * rowH
            let w = frac(item.1) * (width - L - R)
            s += "<text x=\"\(L - 8)\" y=\"\(y + 17)\" text-anchor=\"end\">\(esc(item.0))</text>\n"
            s += "<rect x=\"\(L)\" y=\"\(y + 4)\" width=\"\(max(w, 1))\" height=\"\(rowH - 8)\" fill=\"\(colors[i % colors.count])\"/>\n"
            s += "<text x=\"\(L + w + 6)\" y=\"\(y + 17)\">\(esc(Units.bytes(item.1)))\(esc(unit))</text>\n"
        }
        return s + "</svg>\n"
    }

    /// A point with its own label, written beside its marker, and optionally an interval drawn as a
    /// vertical whisker from low to high (a 95 % interval over seeds).
    public struct LabeledPoint {
        public var label: String, x: Double, y: Double
        public var low: Double?, high: Double?
        public init(label: String, x: Double, y: Double, low: Double? = nil, high: Double? = nil) {
            self.label = label; self.x = x; self.y = y; self.low = low; self.high = high
        }
    }

    /// Labelled markers joined in order, one colour per series, on a logarithmic x axis when x spans more
    /// than 10× (LoRA ranks double the bytes: on a log axis they sit evenly instead of piling up at the left).
    public static func labeledPoints(title: String, xLabel: String, yLabel: String,
                                     series: [(name: String, points: [LabeledPoint])],
                                     width: Double = 900, height: Double = 460,
                                     xTick: (Double) -> String = { Units.bytes($0) }) -> String {
        let all = series.flatMap(\.points).filter { $0.x > 0 && $0.x.isFinite && $0.y.isFinite }
        let whiskers = all.flatMap { [$0.low, $0.high] }.compactMap { $0 }.filter(\.isFinite)
        let xs = all.map(\.x), lo = xs.min() ?? 1, hi = max(xs.max() ?? 1, lo * 1.0001)
        let logX = hi / lo > 10
        func tx(_ v: Double) -> Double { logX ? log10(v) : v }
        let x0 = tx(lo), x1 = tx(hi), xpad = (x1 - x0) * 0.06
        var y0 = (all.map(\.y) + whiskers).min() ?? 0, y1 = (all.map(\.y) + whiskers).max() ?? 1
        if y1 - y0 < 1e-9 { y0 -= 0.5; y1 += 0.5 }
        let ypad = (y1 - y0) * 0.08
        y0 -= ypad; y1 += ypad
        let L = 70.0, R = 200.0, T = 40.0, B = 50.0
        let pw = width - L - R, ph = height - T - B
        func px(_ x: Double) -> Double { L + (tx(x) - (x0 - xpad)) / (x1 - x0 + 2 * xpad) * pw }
        func py(_ y: Double) -> Double { T + (1 - (y - y0) / (y1 - y0)) * ph }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(esc(title))</text>\n"
        for i in 0...5 {
            let yv = y0 + Double(i) / 5 * (y1 - y0)
            s += "<line x1=\"\(L)\" y1=\"\(py(yv))\" x2=\"\(L + pw)\" y2=\"\(py(yv))\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(L - 6)\" y=\"\(py(yv) + 4)\" text-anchor=\"end\">\(label(yv))</text>\n"
        }
        // x ticks at the points' own values: the reader wants the bytes of each row, not round numbers.
        for x in Set(all.map(\.x)).sorted() {
            s += "<line x1=\"\(px(x))\" y1=\"\(T + ph)\" x2=\"\(px(x))\" y2=\"\(T + ph + 4)\" stroke=\"#333\"/>\n"
            s += "<text x=\"\(px(x))\" y=\"\(T + ph + 16)\" text-anchor=\"middle\" font-size=\"10\">\(esc(xTick(x)))</text>\n"
        }
        s += "<rect x=\"\(L)\" y=\"\(T)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#333\"/>\n"
        s += "<text x=\"\(L + pw / 2)\" y=\"\(height - 10)\" text-anchor=\"middle\">\(esc(xLabel))\(logX ? " (log scale)" : "")</text>\n"
        s += "<text transform=\"translate(16,\(T + ph / 2)) rotate(-90)\" text-anchor=\"middle\">\(esc(yLabel))</text>\n"
        for (i, se) in series.enumerated() {
            let pts = se.points.filter { $0.x > 0 && $0.x.isFinite && $0.y.isFinite }
            let c = colors[i % colors.count]
            if pts.count > 1 {
                let path = pts.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
                s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"1\" stroke-opacity=\"0.5\" points=\"\(path)\"/>\n"
            }
            for p in pts {
                if let lo = p.low, let hi = p.high, lo.isFinite, hi.isFinite {
                    s += "<line x1=\"\(px(p.x))\" y1=\"\(py(lo))\" x2=\"\(px(p.x))\" y2=\"\(py(hi))\" stroke=\"\(c)\" stroke-width=\"1.5\"/>\n"
                }
                s += "<circle cx=\"\(px(p.x))\" cy=\"\(py(p.y))\" r=\"4\" fill=\"\(c)\"/>\n"
                // Labels of the right half point left, so they stay inside the plot and off the legend.
                let left = px(p.x) > L + pw / 2
                s += "<text x=\"\(px(p.x) + (left ? -6 : 6))\" y=\"\(py(p.y) - 6)\"\(left ? " text-anchor=\"end\"" : "") font-size=\"10\" fill=\"\(c)\">\(esc(p.label))</text>\n"
            }
            let ly = T + 14 + Double(i) * 18
            s += "<circle cx=\"\(L + pw + 20)\" cy=\"\(ly - 4)\" r=\"4\" fill=\"\(c)\"/>\n"
            s += "<text x=\"\(L + pw + 30)\" y=\"\(ly)\">\(esc(se.name))</text>\n"
        }
        return s + "</svg>\n"
    }

    /// Charts one above the other in one SVG (each keeps its own axes), e.g. several figures against
    /// the same x. Each chart is a whole <svg> of `width` × `panelHeight` from this file.
    public static func stacked(_ charts: [String], width: Double = 900, panelHeight: Double = 460) -> String {
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(panelHeight * Double(charts.count)))\">\n"
        for (i, chart) in charts.enumerated() {
            s += chart.replacingOccurrences(of: "<svg ", with: "<svg y=\"\(Int(panelHeight * Double(i)))\" ", options: [.anchored])
        }
        return s + "</svg>\n"
    }
}
