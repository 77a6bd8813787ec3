/// Turns text into token ids and back.
public protocol Tokenizer {
    var vocabSize: Int { get }
    var bos: Int32 { get }
    var eos: Int32 { get }
    func encode(_ text: String) -> [Int32]
    func decode(_ ids: [Int32]) -> String
    /// What the ids depend on, as text (a token file is reused only under the same identity).
    var identity: String { get }
}

/// Bytes as tokens: ids 0-255 are UTF-8 bytes, 256 is BOS, 257 is EOS.
public struct ByteTokenizer: Tokenizer {
    public init() {}
    public var vocabSize: Int { 258 }
    public var bos: Int32 { 256 }
    public var eos: Int32 { 257 }
    public func encode(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }
    public var identity: String { "bytes" }
    public func decode(_ ids: [Int32]) -> String {
        String(decoding: ids.filter { $0 < 256 }.map { UInt8($0) }, as: UTF8.self)
    }
}
