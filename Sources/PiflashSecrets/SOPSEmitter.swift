// Serialising an (encrypted) SOPS tree in the three formats piflash writes, laid out as sops
// lays them out: YAML with 4-space indentation, JSON with tabs, dotenv with the metadata
// flattened into sorted `sops_…` keys (stores/flatten.go).
import PiflashCore

/// YAML, JSON and dotenv output of ``SOPSNode`` trees.
enum SOPSEmitter {
    /// The tree (a mapping) in `format`.
    /// - Throws: ``PiflashError`` (exit 2) when dotenv cannot hold the tree.
    static func emit(_ tree: SOPSNode, format: SOPSFormat) throws -> [UInt8] {
        switch format {
        case .yaml: return Array(yaml(tree).utf8)
        case .json: return Array((json(tree, indent: 0) + "\n").utf8)
        case .dotenv: return Array(try dotenv(tree).utf8)
        case .ini: throw PiflashError.usage("piflash does not write SOPS INI files")
        }
    }

    // MARK: YAML

    static func yaml(_ tree: SOPSNode) -> String {
        guard case .mapping(let items) = tree else { return yamlInline(tree) ?? "" }
        var out = ""
        yamlMapping(items, indent: 0, into: &out)
        return out
    }

    /// A mapping's `key: value` lines at `indent`; the first line is written without its
    /// indentation when `firstInline` (after a list's `- `).
    static func yamlMapping(_ items: [(key: String, value: SOPSNode)], indent: Int, firstInline: Bool = false, into out: inout String) {
        for (index, item) in items.enumerated() {
            if !(firstInline && index == 0) { out += String(repeating: " ", count: indent) }
            out += yamlString(item.key) + ":"
            yamlValue(item.value, indent: indent, into: &out)
        }
    }

    /// A value after `key:` (or after `- `), ending with a newline.
    static func yamlValue(_ value: SOPSNode, indent: Int, into out: inout String) {
        switch value {
        case .mapping(let items) where !items.isEmpty:
            out += "\n"
            yamlMapping(items, indent: indent + 4, into: &out)
        case .sequence(let items) where !items.isEmpty:
            out += "\n"
            for item in items {
                out += String(repeating: " ", count: indent + 4) + "-"
                switch item {
                case .mapping(let inner) where !inner.isEmpty:
                    out += " "
                    yamlMapping(inner, indent: indent + 6, firstInline: true, into: &out)
                default:
                    yamlValue(item, indent: indent + 4, into: &out)
                }
            }
        case .scalar(let text, _, true) where isLiteralBlock(text):
            out += " |\n"
            let body = text.dropLast()  // the one final newline `|` keeps
            for line in body.split(separator: "\n", omittingEmptySubsequences: false) {
                out += (line.isEmpty ? "" : String(repeating: " ", count: indent + 4) + line) + "\n"
            }
        default:
            out += " " + (yamlInline(value) ?? "null") + "\n"
        }
    }

    static func yamlInline(_ value: SOPSNode) -> String? {
        switch value {
        case .null: return "null"
        case .mapping: return "{}"
        case .sequence: return "[]"
        case .scalar(let text, _, let isString): return isString ? yamlString(text) : text
        }
    }

    /// A multi-line string `|` reproduces exactly: one final newline, printable lines without
    /// trailing spaces, a first line that does not start with a space.
    static func isLiteralBlock(_ text: String) -> Bool {
        guard text.hasSuffix("\n"), !text.hasSuffix("\n\n"), text.count > 1, !text.hasPrefix(" ") else { return false }
        let lines = text.dropLast().split(separator: "\n", omittingEmptySubsequences: false)
        return lines.allSatisfy { line in
            !line.hasSuffix(" ") && line.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F }
        }
    }

    /// A string scalar: plain when YAML reads it back as the same string, else double-quoted (a
    /// JSON string with DEL escaped is a valid YAML double-quoted scalar).
    static func yamlString(_ text: String) -> String {
        if isPlainSafe(text) { return text }
        return JSONValue.quoted(text, escapingDelete: true)
    }

    static func isPlainSafe(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first else { return false }
        let letters = first.properties.isAlphabetic && first.isASCII
        guard letters else { return false }
        let allowed: (Unicode.Scalar) -> Bool = { scalar in
            guard scalar.isASCII else { return false }
            return scalar.properties.isAlphabetic || (0x30...0x39).contains(scalar.value) || "_-./@+=,[]:".unicodeScalars.contains(scalar)
        }
        guard text.unicodeScalars.allSatisfy(allowed) else { return false }
        if text.hasSuffix(":") { return false }
        // Words YAML 1.1 or 1.2 read as something else than a string.
        let reserved: Set<String> = [
            "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE",
            "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
        ]
        return !reserved.contains(text)
    }

    // MARK: JSON

    static func json(_ value: SOPSNode, indent: Int) -> String {
        let tabs = String(repeating: "\t", count: indent + 1)
        let closing = String(repeating: "\t", count: indent)
        switch value {
        case .null: return "null"
        case .scalar(let text, _, let isString): return isString ? jsonString(text) : text
        case .mapping(let items):
            if items.isEmpty { return "{}" }
            return "{\n" + items.map { tabs + jsonString($0.key) + ": " + json($0.value, indent: indent + 1) }.joined(separator: ",\n")
                + "\n" + closing + "}"
        case .sequence(let items):
            if items.isEmpty { return "[]" }
            return "[\n" + items.map { tabs + json($0, indent: indent + 1) }.joined(separator: ",\n") + "\n" + closing + "]"
        }
    }

    static func jsonString(_ text: String) -> String {
        JSONValue.quoted(text)
    }

    // MARK: dotenv

    static func dotenv(_ tree: SOPSNode) throws -> String {
        guard case .mapping(let items) = tree else { throw PiflashError.usage("a dotenv SOPS file is a flat list of keys") }
        var out = ""
        for (key, value) in items {
            if key == "sops" {
                var flat: [(String, String)] = []
                flatten(value, prefix: "sops_", top: true, into: &flat)
                for (name, text) in flat.sorted(by: { $0.0 < $1.0 }) { out += name + "=" + escapeNewlines(text) + "\n" }
                continue
            }
            guard case .scalar(let text, _, _) = value, !key.contains("="), !key.isEmpty else {
                throw PiflashError.usage("a dotenv SOPS file holds only flat string values; `\(key)` is not one")
            }
            out += key + "=" + escapeNewlines(text) + "\n"
        }
        return out
    }

    /// sops' flattening: `__map_KEY` for mapping keys below the first, `__list_N` for list items.
    static func flatten(_ node: SOPSNode, prefix: String, top: Bool = false, into out: inout [(String, String)]) {
        switch node {
        case .mapping(let items):
            for (key, value) in items {
                flatten(value, prefix: top ? prefix + key : prefix + "__map_" + key, into: &out)
            }
        case .sequence(let items):
            for (index, item) in items.enumerated() { flatten(item, prefix: prefix + "__list_\(index)", into: &out) }
        case .scalar(let text, _, _):
            out.append((prefix, text))
        case .null:
            out.append((prefix, ""))
        }
    }

    static func escapeNewlines(_ text: String) -> String { text.replacingOccurrences("\n", with: "\\n") }
}
