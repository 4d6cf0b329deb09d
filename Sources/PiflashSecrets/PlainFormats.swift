// The plain (not SOPS) formats an age-encrypted secrets file may hold, and INI for SOPS:
// dotenv (`KEY=value`), YAML (flattened like SOPS keys) and INI sections.
import PiflashCore

extension SOPSNode {
    /// Every scalar by flattened key path: nested keys `a.b.c`, list items `a.0`; nulls skipped.
    func flattened() -> [String: [UInt8]] {
        var values: [String: [UInt8]] = [:]
        func walk(_ node: SOPSNode, _ key: String) {
            switch node {
            case .null: return
            case .scalar(let text, _, _): values[key] = Array(text.utf8)
            case .mapping(let items):
                for (name, value) in items { walk(value, key.isEmpty ? name : key + "." + name) }
            case .sequence(let items):
                for (index, value) in items.enumerated() { walk(value, key.isEmpty ? String(index) : key + "." + String(index)) }
            }
        }
        walk(self, "")
        return values
    }
}

/// `KEY=value` files as shells and systemd `EnvironmentFile=` read them.
enum Dotenv {
    /// The values of a dotenv file: `#` comments and blank lines skipped, an optional
    /// `export ` prefix, values optionally in single quotes (literal) or double quotes (with
    /// `\n`, `\t`, `\"`, `\\` escapes); unquoted values are trimmed and may use `\n` escapes.
    /// - Throws: ``PiflashError`` (exit 2) naming the line number (never the content).
    static func parse(_ content: [UInt8], path: String) throws -> [String: [UInt8]] {
        var values: [String: [UInt8]] = [:]
        var lineNumber = 0
        for rawLine in content.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = String(decoding: rawLine, as: UTF8.self).trimmingASCIIWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingASCIIWhitespace() }
            guard let equals = line.firstIndex(of: "=") else {
                throw PiflashError.usage("line \(lineNumber) of the dotenv file is not KEY=value", path: path)
            }
            let key = String(line[..<equals]).trimmingASCIIWhitespace()
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" }) else {
                throw PiflashError.usage("line \(lineNumber) of the dotenv file has an invalid key", path: path)
            }
            let raw = String(line[line.index(after: equals)...]).trimmingASCIIWhitespace()
            values[key] = try unquote(raw, lineNumber: lineNumber, path: path)
        }
        return values
    }

    private static func unquote(_ raw: String, lineNumber: Int, path: String) throws -> [UInt8] {
        let bytes = Array(raw.utf8)
        guard let quote = bytes.first, quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") else {
            // Unquoted: an inline comment starts at " #".
            var value = raw
            if let comment = value.firstRange(of: " #") { value = String(value[..<comment.lowerBound]).trimmingASCIIWhitespace() }
            return Array(value.replacingEscapedNewlines().utf8)
        }
        var output: [UInt8] = []
        var index = 1
        while index < bytes.count {
            let byte = bytes[index]
            if byte == quote {
                let rest = String(decoding: bytes[(index + 1)...], as: UTF8.self).trimmingASCIIWhitespace()
                guard rest.isEmpty || rest.hasPrefix("#") else {
                    throw PiflashError.usage("line \(lineNumber) of the dotenv file has text after the closing quote", path: path)
                }
                return output
            }
            if quote == UInt8(ascii: "\""), byte == UInt8(ascii: "\\"), index + 1 < bytes.count {
                let next = bytes[index + 1]
                switch next {
                case UInt8(ascii: "n"): output.append(0x0A)
                case UInt8(ascii: "t"): output.append(0x09)
                case UInt8(ascii: "r"): output.append(0x0D)
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "$"): output.append(next)
                default: output += [byte, next]
                }
                index += 2
                continue
            }
            output.append(byte)
            index += 1
        }
        throw PiflashError.usage("line \(lineNumber) of the dotenv file has an unterminated quote", path: path)
    }
}

/// INI files as sops reads them (go-ini): sections in order, a `DEFAULT` section first.
enum INIFile {
    struct Section {
        var name: String
        var entries: [(key: String, value: String)]
    }

    static func parse(_ content: [UInt8], path: String) throws -> [Section] {
        var sections = [Section(name: "DEFAULT", entries: [])]
        var lineNumber = 0
        for rawLine in content.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = String(decoding: rawLine, as: UTF8.self).trimmingASCIIWhitespace()
            if line.isEmpty || line.hasPrefix(";") || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]") else { throw PiflashError.usage("line \(lineNumber) of the INI file has an unclosed section", path: path) }
                let name = String(line.dropFirst().dropLast()).trimmingASCIIWhitespace()
                if let index = sections.firstIndex(where: { $0.name == name }) {
                    // A repeated section continues the first one.
                    let existing = sections.remove(at: index)
                    sections.append(existing)
                } else {
                    sections.append(Section(name: name, entries: []))
                }
                continue
            }
            guard let separator = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                throw PiflashError.usage("line \(lineNumber) of the INI file is not key = value", path: path)
            }
            let key = String(line[..<separator]).trimmingASCIIWhitespace()
            var value = String(line[line.index(after: separator)...]).trimmingASCIIWhitespace()
            if value.count >= 2, let first = value.first, first == "\"" || first == "`", value.last == first {
                value = String(value.dropFirst().dropLast())
            } else if let comment = value.firstIndex(where: { $0 == "#" || $0 == ";" }) {
                value = String(value[..<comment]).trimmingASCIIWhitespace()
            }
            var section = sections.removeLast()
            section.entries.removeAll { $0.key == key }
            section.entries.append((key, value))
            sections.append(section)
        }
        return sections
    }
}
