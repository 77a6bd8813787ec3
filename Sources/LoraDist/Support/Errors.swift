/// Every user-facing failure carries one line that names the problem.
public struct LoraDistError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
