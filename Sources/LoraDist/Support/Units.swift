import Foundation

/// Numbers as people read them (reports, tables, the progress line) and as the JSON files
/// hold them: one place for Train/, Checkpoint/, Bench/ and Experiments/.
public enum Units {
    /// 512 B, 1.5 KiB, 3.2 GiB.
    public static func bytes(_ b: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = b, i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(Int(v)) B" : String(format: "%.1f %@", v, units[i])
    }

    /// 42s, 3m05s, 1h07m; "?" when unknown.
    public static func duration(_ s: Double) -> String {
        guard s.isFinite, s >= 0 else { return "?" }
        let t = Int(s.rounded())
        if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", t % 3600 / 60))m" }
        if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
        return "\(t)s"
    }
}

/// Rounds for JSON so reports stay readable (doubles print 17 digits otherwise).
func rounded(_ x: Double, _ digits: Int = 6) -> Double {
    guard x.isFinite else { return x }
    let p = Foundation.pow(10.0, Double(digits))
    return (x * p).rounded() / p
}

extension Float {
    /// The Double that prints as this Float does (0.9, not 0.8999999761581421), for JSON.
    var shortest: Double { Double("\(self)") ?? Double(self) }
}
