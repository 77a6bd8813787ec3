import Foundation

/// The JSON files lora-dist writes (summary.json, metrics.jsonl, report.json, the checkpoint's
/// run state) are Codable structs with explicit CodingKeys, written and read through here:
/// keys sorted, so a file's layout does not depend on the order fields were declared in.
public enum JSONCoding {
    /// One object: pretty-printed (files people read) or on one line (JSON Lines, manifest fields).
    public static func encode<T: Encodable>(_ value: T, pretty: Bool = true) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys]
        // JSON has no number for them: a diverged run's perplexity (exp of a large loss) is
        // written as the string "Infinity" rather than failing the whole summary.
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return try e.encode(value)
    }

    /// A JSON object without a schema of its own here (a Hugging Face config.json): pretty, keys sorted.
    public static func object(_ obj: Any) throws -> Data {
        try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
    }

    /// `T` from `data`; `source` names the file in the error.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, source: String) throws -> T {
        do {
            let d = JSONDecoder()
            d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
            return try d.decode(type, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw LoraDistError("\(source): no \"\(key.stringValue)\"")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw LoraDistError("\(source): \"\(path)\" has the wrong type")
        } catch {
            throw LoraDistError("\(source): not the JSON expected")
        }
    }
}

/// An optional field written as `null` when nil (synthesized Codable leaves nil fields out,
/// and the documented files show them as null), and read as nil when null or absent.
@propertyWrapper
public struct Nullable<Value: Codable>: Codable {
    public var wrappedValue: Value?

    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        wrappedValue = c.decodeNil() ? nil : try c.decode(Value.self)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        if let wrappedValue { try c.encode(wrappedValue) } else { try c.encodeNil() }
    }
}

extension Nullable: Equatable where Value: Equatable {}

extension KeyedDecodingContainer {
    /// A `@Nullable` field may also be absent.
    public func decode<V>(_ type: Nullable<V>.Type, forKey key: Key) throws -> Nullable<V> {
        try decodeIfPresent(type, forKey: key) ?? Nullable(wrappedValue: nil)
    }
}

extension Double {
    /// nil for NaN and ±infinity, which JSON cannot hold: reports write them as null.
    public var finite: Double? { isFinite ? self : nil }
}
