import ArgumentParser
import Foundation
import LoraDist
import Yams

// Recipes: `lora-dist train --config recipe.yaml` (and `compare --config`). A recipe is a YAML
// mapping whose keys are the command's own long flag names without the dashes. It is turned
// into arguments ("--lr=0.001", "--rslora", "--no-quiet") placed before the command line's,
// and the whole list goes through the command's parser, so types and ranges are checked in
// one place and a flag given on the command line overrides the recipe (the parser keeps an
// option's last value). A parser error about a value that came from the recipe is reported at
// the recipe's file, line and key. `--print-config` writes the effective configuration, every
// option with its default included, as a recipe.

/// A command whose options a recipe can set and which can print its configuration.
protocol Configurable: ParsableCommand {
    /// Options that describe one invocation rather than the run (left out of RUN/config.yaml).
    static var perInvocationKeys: Set<String> { get }
}

/// One option or flag of a command, as argument-parser describes it (`_dumpHelp`).
struct ConfigKey {
    enum Kind { case option, flag, invertedFlag }
    let name: String             // the long name, without dashes
    let kind: Kind
    let repeating: Bool          // an array option: the key takes a list
    let defaultValue: String?    // as argument-parser prints it; nil: none (an optional option, or false)
    let help: String?
}

/// A command's options and flags, in declaration order.
struct ConfigSchema {
    let command: String          // "train", "compare"
    let keys: [ConfigKey]
    /// Arguments a recipe cannot set and --print-config does not print.
    static let notConfig: Set<String> = ["config", "print-config", "help", "version"]

    init(_ type: ParsableCommand.Type) {
        struct Dump: Decodable {
            struct Name: Decodable { let kind: String; let name: String }
            struct Argument: Decodable {
                let kind: String
                let names: [Name]?
                let isRepeating: Bool
                let defaultValue: String?
                let abstract: String?
            }
            struct Command: Decodable { let commandName: String; let arguments: [Argument]? }
            let command: Command
        }
        guard let dump = try? JSONDecoder().decode(Dump.self, from: Data(type._dumpHelp().utf8)) else {
            fatalError("argument-parser's description of \(type) did not decode")
        }
        command = dump.command.commandName
        let arguments = dump.command.arguments ?? []
        let long = arguments.map { $0.names?.first { $0.kind == "long" }?.name }
        let flags = Set(zip(arguments, long).compactMap { $0.0.kind == "flag" ? $0.1 : nil })
        var keys: [ConfigKey] = []
        for (a, name) in zip(arguments, long) {
            guard let name, a.kind != "positional" else { continue }
            if a.kind == "flag" {
                // An inverted flag is two arguments, --x and --no-x; the key is x.
                if name.hasPrefix("no-"), flags.contains(String(name.dropFirst(3))) { continue }
                let inverted = flags.contains("no-" + name)
                keys.append(ConfigKey(name: name, kind: inverted ? .invertedFlag : .flag, repeating: false,
                                      defaultValue: inverted ? String(a.defaultValue == "--\(name)") : "false", help: a.abstract))
            } else {
                keys.append(ConfigKey(name: name, kind: .option, repeating: a.isRepeating, defaultValue: a.defaultValue, help: a.abstract))
            }
        }
        self.keys = keys
    }

    func key(_ name: String) -> ConfigKey? { keys.first { $0.name == name } }

    /// The key a command-line flag sets: --x, or --no-x of an inverted flag.
    func key(forFlag name: String) -> (key: ConfigKey, on: Bool)? {
        if let k = key(name) { return (k, true) }
        if name.hasPrefix("no-"), let k = key(String(name.dropFirst(3))), k.kind == .invertedFlag { return (k, false) }
        return nil
    }

    /// The keys a recipe may set, in declaration order.
    var configKeys: [ConfigKey] { keys.filter { !Self.notConfig.contains($0.name) } }

    /// A close key for a misspelt one: underscores for dashes, or one or two letters off.
    func suggestion(for name: String) -> String? {
        let dashed = name.replacingOccurrences(of: "_", with: "-").lowercased()
        if key(dashed) != nil, !Self.notConfig.contains(dashed) { return dashed }
        func distance(_ a: String, _ b: String) -> Int {
            let a = Array(a), b = Array(b)
            var row = Array(0...b.count)
            for i in 1...max(a.count, 1) where !a.isEmpty {
                var prev = row[0]
                row[0] = i
                for j in stride(from: 1, through: b.count, by: 1) {
                    let cur = row[j]
                    row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
                    prev = cur
                }
            }
            return row[b.count]
        }
        return configKeys.map { ($0.name, distance(dashed, $0.name)) }.filter { $0.1 <= 2 }.min { $0.1 < $1.1 }?.0
    }
}

/// A value a recipe or the command line gives a key.
enum ConfigValue: Equatable {
    case text(String)
    case list([String])
    case flag(Bool)
}

/// A recipe file: its keys, each with its line, checked against the command's schema.
struct Recipe {
    struct Entry {
        let key: ConfigKey
        let line: Int
        let value: ConfigValue
    }
    let path: String
    let entries: [Entry]

    init(path: String, schema: ConfigSchema) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoraDistError("cannot read the recipe \(path)" + (FileManager.default.fileExists(atPath: path) ? "" : ": no such file"))
        }
        guard let text = String(data: data, encoding: .utf8) else { throw LoraDistError("\(path): not UTF-8 text") }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw LoraDistError(Self.describe(error, path: path)) }
        let what = "a recipe is a mapping of `lora-dist \(schema.command)` option names to values (e.g. lr: 0.001)"
        guard let root else { entries = []; return }  // an empty file sets nothing
        if root.tag == Yams.Tag(.null) { entries = []; return }
        guard let mapping = root.mapping else { throw LoraDistError("\(path):\(Self.line(root)): \(what)") }
        var entries: [Entry] = []
        var seen: [String: Int] = [:]
        for (k, v) in mapping {
            let line = Self.line(k)
            func fail(_ message: String) -> LoraDistError { LoraDistError("\(path):\(line): \(message)") }
            guard let name = k.scalar?.string, k.scalar != nil else { throw fail(what) }
            if let first = seen[name] { throw fail("\(name) is set twice (first on line \(first))") }
            seen[name] = line
            guard let key = schema.key(name), !ConfigSchema.notConfig.contains(name) else {
                if ConfigSchema.notConfig.contains(name) { throw fail("\(name) cannot be set in a recipe") }
                let hint = schema.suggestion(for: name).map { "; did you mean \($0)?" } ?? ""
                throw fail("unknown key '\(name)': not an option of `lora-dist \(schema.command)`\(hint) (`lora-dist \(schema.command) --help` lists them)")
            }
            let keyed = "\(name): "
            if v.tag == Yams.Tag(.null) { continue }  // null: not set, the flag's default applies
            switch (key.kind, v) {
            case (.flag, .scalar), (.invertedFlag, .scalar):
                guard let b = Bool.construct(from: v.scalar!) else {
                    throw fail(keyed + "expected true or false, got '\(v.scalar!.string)'")
                }
                entries.append(Entry(key: key, line: line, value: .flag(b)))
            case (.option, .scalar(let s)):
                entries.append(Entry(key: key, line: line, value: key.repeating ? .list([s.string]) : .text(s.string)))
            case (.option, .sequence(let items)) where key.repeating:
                var list: [String] = []
                for item in items {
                    guard let s = item.scalar, item.tag != Yams.Tag(.null) else {
                        throw LoraDistError("\(path):\(Self.line(item)): \(keyed)each item must be a single value")
                    }
                    list.append(s.string)
                }
                entries.append(Entry(key: key, line: line, value: .list(list)))
            case (_, .sequence):
                let hint = key.kind == .option ? " (several values, where an option takes them, are one comma-separated value, as on the command line)" : ""
                throw fail(keyed + "expected a single value, got a list\(hint)")
            case (_, .mapping):
                throw fail(keyed + "expected a single value, got a mapping")
            default:
                throw fail(keyed + "expected a single value")
            }
        }
        self.entries = entries
    }

    /// The arguments the recipe stands for, one token per value ("--lr=-1" cannot be misread as a flag).
    func arguments(except onCommandLine: Set<String>) -> [String] {
        entries.flatMap { e -> [String] in
            switch e.value {
            case .text(let s): return ["--\(e.key.name)=\(s)"]
            // The command line's values of a list option replace the recipe's (the parser would append them).
            case .list(let items): return onCommandLine.contains(e.key.name) ? [] : items.map { "--\(e.key.name)=\($0)" }
            case .flag(let on):
                if on { return ["--\(e.key.name)"] }
                return e.key.kind == .invertedFlag ? ["--no-\(e.key.name)"] : []
            }
        }
    }

    func entry(_ key: String) -> Entry? { entries.first { $0.key.name == key } }

    static func line(_ node: Node) -> Int { node.mark?.line ?? 0 }

    /// A YAML syntax error in one line: file:line:column, then libyaml's problem.
    static func describe(_ error: Error, path: String) -> String {
        switch error as? YamlError {
        case let .scanner(context, problem, mark, _)?, let .parser(context, problem, mark, _)?, let .composer(context, problem, mark, _)?:
            return "\(path):\(mark.line):\(mark.column): not valid YAML: \(context.map { "\($0.text) (line \($0.mark.line)): " } ?? "")\(problem)"
        default:
            let text = "\(error)"
            return "\(path): not valid YAML: " + (text.split(separator: "\n").first.map(String.init) ?? text)
        }
    }
}

/// The arguments this process parses, with the recipe they came from: built before parsing
/// (`lora-dist [train|compare] ... --config FILE ...`), used to report errors at the recipe's
/// lines and to print the effective configuration.
struct Invocation {
    /// What the parser gets.
    let arguments: [String]
    /// The command a recipe and --print-config apply to; nil for other subcommands.
    let schema: ConfigSchema?
    let recipe: Recipe?
    /// The command line's own arguments after the subcommand.
    let commandLine: [String]

    /// This process's invocation (main.swift sets it before parsing).
    nonisolated(unsafe) static var current = Invocation(arguments: [], schema: nil, recipe: nil, commandLine: [])

    /// Under mpirun every rank parses the same arguments: only rank 0 prints.
    static var speaks: Bool {
        let env = ProcessInfo.processInfo.environment
        return (env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? "0") == "0"
    }

    init(arguments: [String], schema: ConfigSchema?, recipe: Recipe?, commandLine: [String]) {
        self.arguments = arguments; self.schema = schema; self.recipe = recipe; self.commandLine = commandLine
    }

    /// `args` as typed (without the program name).
    init(_ args: [String]) throws {
        let commands: [String: Configurable.Type] = ["train": Train.self, "compare": CompareCommand.self]
        var rest = args, name = "train"
        if let first = args.first, !first.hasPrefix("-") {
            guard commands[first] != nil else {  // another subcommand (or help): no recipes
                self.init(arguments: args, schema: nil, recipe: nil, commandLine: args)
                return
            }
            name = first
            rest = Array(args.dropFirst())
        }
        let schema = ConfigSchema(commands[name]!)
        let paths = Self.values(of: "config", in: rest)
        guard !paths.isEmpty else {
            self.init(arguments: args, schema: schema, recipe: nil, commandLine: rest)
            return
        }
        guard paths.count == 1 else { throw LoraDistError("--config is given \(paths.count) times; one recipe at a time") }
        let recipe = try Recipe(path: paths[0], schema: schema)
        let given = Set(Self.flags(in: rest, schema: schema).map(\.key.name))
        self.init(arguments: [name] + recipe.arguments(except: given) + rest, schema: schema, recipe: recipe, commandLine: rest)
    }

    /// The values of option `name` on a command line (--name V or --name=V).
    static func values(of name: String, in args: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { break }
            if a == "--\(name)" { if i + 1 < args.count { out.append(args[i + 1]) }; i += 2; continue }
            if a.hasPrefix("--\(name)=") { out.append(String(a.dropFirst(name.count + 3))) }
            i += 1
        }
        return out
    }

    /// The keys a command line sets, in order, with their values. Only long names are read:
    /// the commands with recipes have no short options but -h.
    static func flags(in args: [String], schema: ConfigSchema) -> [(key: ConfigKey, value: ConfigValue)] {
        var out: [(ConfigKey, ConfigValue)] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            i += 1
            if a == "--" { break }
            guard a.hasPrefix("--") else { continue }
            let body = a.dropFirst(2)
            let name = String(body.prefix { $0 != "=" })
            let inline = body.contains("=") ? String(body.drop { $0 != "=" }.dropFirst()) : nil
            guard let (key, on) = schema.key(forFlag: name) else { continue }
            switch key.kind {
            case .option:
                var v = inline
                if v == nil, i < args.count { v = args[i]; i += 1 }
                if let v { out.append((key, key.repeating ? .list([v]) : .text(v))) }
            case .flag, .invertedFlag:
                out.append((key, .flag(on)))
            }
        }
        return out
    }

    /// An error message about an argument that came from the recipe, at the recipe's line and key.
    func attribute(_ message: String) -> String {
        guard let schema, let recipe else { return message }
        let onCommandLine = Set(Self.flags(in: commandLine, schema: schema).map(\.key.name))
        let pattern = try! NSRegularExpression(pattern: "--([A-Za-z0-9][A-Za-z0-9-]*)")
        let ns = message as NSString
        for m in pattern.matches(in: message, range: NSRange(location: 0, length: ns.length)) {
            let flag = ns.substring(with: m.range(at: 1))
            guard let (key, _) = schema.key(forFlag: flag) else { continue }
            guard !onCommandLine.contains(key.name), let e = recipe.entry(key.name) else { return message }
            // "--lr must be ..." and "--rank: LoRA rank ..." read "lr: must be ...", "rank: LoRA rank ...".
            var text = message
            for prefix in ["--\(flag): ", "--\(flag) "] where text.hasPrefix(prefix) { text = String(text.dropFirst(prefix.count)) }
            return "\(recipe.path):\(e.line): \(key.name): \(text)"
        }
        return message
    }

    /// Every key's effective value: its default, then the recipe's, then the command line's.
    func effective() -> [(key: ConfigKey, value: ConfigValue?)] {
        guard let schema else { return [] }
        var values: [String: ConfigValue] = [:]
        for k in schema.configKeys {
            switch k.kind {
            case .option: if let d = k.defaultValue { values[k.name] = k.repeating ? .list(Self.splitDefault(d)) : .text(d) }
            case .flag, .invertedFlag: values[k.name] = .flag(k.defaultValue == "true")
            }
        }
        for e in recipe?.entries ?? [] { values[e.key.name] = e.value }
        var listed: Set<String> = []
        for (k, v) in Self.flags(in: commandLine, schema: schema) {
            if case .list(let items) = v {  // a list option's command-line values replace the recipe's
                if case .list(let old)? = values[k.name], listed.contains(k.name) { values[k.name] = .list(old + items) }
                else { values[k.name] = .list(items) }
                listed.insert(k.name)
            } else {
                values[k.name] = v
            }
        }
        return schema.configKeys.map { ($0, values[$0.name]) }
    }

    /// argument-parser prints an array default as its items separated by spaces.
    static func splitDefault(_ d: String) -> [String] { d.isEmpty ? [] : d.split(separator: " ").map(String.init) }

    /// The effective configuration as a recipe: a comment with each key's help, then the key.
    func yaml(header: [String], omitting omitted: Set<String> = []) -> String {
        var out = header.map { "# " + $0 }.joined(separator: "\n") + "\n"
        for (key, value) in effective() where !omitted.contains(key.name) {
            out += "\n"
            if let help = key.help, !help.isEmpty { out += Self.comment(help) }
            out += Self.yamlLine(key.name, value)
        }
        return out
    }

    /// `# help`, wrapped at about 100 columns.
    static func comment(_ text: String) -> String {
        var lines: [String] = [], line = "#"
        for word in text.split(separator: " ") {
            if line.count + word.count + 1 > 100, line != "#" { lines.append(line); line = "#" }
            line += " " + word
        }
        lines.append(line)
        return lines.joined(separator: "\n") + "\n"
    }

    /// `key: value` as YAML; a value a YAML reader would take for null (or for another type
    /// than the text it is) is quoted.
    static func yamlLine(_ key: String, _ value: ConfigValue?) -> String {
        func scalar(_ s: String) -> Node {
            let plain = Node(s)
            return plain.tag == Yams.Tag(.null) ? Node(s, Yams.Tag(.str), .singleQuoted) : plain
        }
        let node: Node
        switch value {
        case nil: node = Node("null")
        case .text(let s): node = scalar(s)
        case .flag(let b): node = Node(b ? "true" : "false")
        case .list(let items): node = Node(items.map(scalar), Yams.Tag(.seq), .flow)
        }
        let text = (try? Yams.serialize(node: Node([(Node(key), node)]))) ?? "\(key): null\n"
        return text.hasSuffix("\n") ? text : text + "\n"
    }
}
