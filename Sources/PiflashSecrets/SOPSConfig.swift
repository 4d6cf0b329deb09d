// `.sops.yaml`: found upward from a folder and its creation rules matched against a new file,
// as sops does it (getsops/sops config/config.go: LookupConfigFile, parseCreationRuleForFile);
// and the one edit piflash makes to it, adding an age recipient to a rule while keeping every
// comment, every other byte and the order.
import Foundation
import PiflashCore
import Yams

/// A sops configuration file and its creation rules.
public struct SOPSConfig: Sendable {
    /// One `creation_rules` entry.
    public struct Rule: Sendable, Equatable {
        /// Its position in `creation_rules` (0-based).
        public var index: Int
        /// `path_regex`; nil or empty matches every file.
        public var pathRegex: String?
        /// The age recipients, as written (`age1…`, or `ssh-ed25519 …`).
        public var ageRecipients: [String]
        /// Master keys piflash cannot encrypt to (`pgp …`, `kms …`).
        public var otherKeys: [String]
        /// How many key groups (more than one: Shamir secret sharing).
        public var keyGroupCount: Int
        public var encryption: SOPSEncryptionRules
    }

    /// The file, absolute.
    public let path: String
    public let text: String
    public let rules: [Rule]

    /// The folder of the file: `path_regex` is matched against paths relative to it.
    public var folder: String { (path as NSString).deletingLastPathComponent }

    /// Parses a `.sops.yaml`.
    /// - Throws: ``PiflashError`` (exit 2) for malformed YAML or rules.
    public init(path: String, text: String) throws {
        self.path = path
        self.text = text
        rules = try Self.parseRules(text, path: path)
    }

    /// The nearest `.sops.yaml` in `folder` or above it (up to 100 levels, as sops looks), nil
    /// when there is none.
    /// - Throws: ``PiflashError`` (exit 2) when the file found cannot be read or parsed.
    public static func find(from folder: String) throws -> SOPSConfig? {
        var current = URL(fileURLWithPath: folder).standardizedFileURL.path
        for _ in 0..<100 {
            let candidate = (current as NSString).appendingPathComponent(".sops.yaml")
            if FileManager.default.fileExists(atPath: candidate) {
                let bytes = try FileSystem.readFile(candidate, what: "sops configuration")
                return try SOPSConfig(path: candidate, text: String(decoding: bytes, as: UTF8.self))
            }
            if current == "/" { break }
            current = (current as NSString).deletingLastPathComponent
            if current.isEmpty { current = "/" }
        }
        return nil
    }

    /// The first rule whose `path_regex` matches `file` (absolute), relative to ``folder``, as
    /// sops matches it; nil when none does.
    /// - Throws: ``PiflashError`` (exit 2) for a `path_regex` that does not compile.
    public func rule(for file: String) throws -> Rule? {
        var relative = file
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        if relative.hasPrefix(prefix) { relative.removeFirst(prefix.count) }
        for rule in rules {
            guard let pattern = rule.pathRegex, !pattern.isEmpty else { return rule }
            let regex: Regex<AnyRegexOutput>
            do {
                regex = try Regex(pattern)
            } catch {
                throw PiflashError.usage("creation rule \(rule.index + 1) has a path_regex piflash cannot compile: \(pattern)", path: path)
            }
            if relative.contains(regex) { return rule }
        }
        return nil
    }

    // MARK: Parsing

    static func parseRules(_ text: String, path: String) throws -> [Rule] {
        let root: Yams.Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw PiflashError.usage("malformed YAML: \(error)", path: path)
        }
        guard let root, case .mapping(let top) = root else { return [] }
        guard let rulesNode = entry(top, "creation_rules") else { return [] }
        guard case .sequence(let entries) = rulesNode else {
            throw PiflashError.usage("creation_rules must be a list", path: path)
        }
        return try entries.enumerated().map { index, entry in
            guard case .mapping(let rule) = entry else {
                throw PiflashError.usage("creation rule \(index + 1) is not a mapping", path: path)
            }
            func string(_ key: String) -> String? {
                guard let node = Self.entry(rule, key), case .scalar(let scalar) = node, !scalar.string.isEmpty else { return nil }
                return scalar.string
            }
            var age: [String] = []
            var other: [String] = []
            var groups = 1
            if let keyGroups = Self.entry(rule, "key_groups"), case .sequence(let list) = keyGroups, !list.isEmpty {
                groups = list.count
                for group in list {
                    guard case .mapping(let groupMap) = group else { continue }
                    age += try keyList(Self.entry(groupMap, "age"), name: "age", rule: index, path: path)
                    for (key, value) in groupMap where key.string != "age" && key.string != "merge" {
                        if case .sequence(let items) = value, !items.isEmpty { other.append("\(key.string ?? "?") (\(items.count))") }
                    }
                }
            } else {
                age = try keyList(Self.entry(rule, "age"), name: "age", rule: index, path: path)
                for name in ["pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri", "hckms"] {
                    for key in try keyList(Self.entry(rule, name), name: name, rule: index, path: path) { other.append("\(name) \(key)") }
                }
                if case .sequence(let plugins)? = Self.entry(rule, "plugins"), !plugins.isEmpty { other.append("plugins (\(plugins.count))") }
            }
            let macOnly = string("mac_only_encrypted").map { ["true", "True", "TRUE"].contains($0) } ?? false
            let encryption = SOPSEncryptionRules(
                unencryptedSuffix: string("unencrypted_suffix"), encryptedSuffix: string("encrypted_suffix"),
                unencryptedRegex: string("unencrypted_regex"), encryptedRegex: string("encrypted_regex"),
                macOnlyEncrypted: macOnly)
            let ruleCount = ["unencrypted_suffix", "encrypted_suffix", "unencrypted_regex", "encrypted_regex",
                "unencrypted_comment_regex", "encrypted_comment_regex"].filter { string($0) != nil }.count
            if ruleCount > 1 {
                throw PiflashError.usage(
                    "creation rule \(index + 1) uses more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex and the comment regexes",
                    path: path)
            }
            if string("unencrypted_comment_regex") != nil || string("encrypted_comment_regex") != nil {
                other.append("comment-based encryption rules")
            }
            return Rule(
                index: index, pathRegex: string("path_regex"), ageRecipients: age, otherKeys: other, keyGroupCount: groups,
                encryption: encryption)
        }
    }

    /// The value of `key` in a YAML mapping.
    static func entry(_ mapping: Yams.Node.Mapping, _ key: String) -> Yams.Node? {
        mapping.first { $0.key.string == key }?.value
    }

    /// A key field: a comma-separated string, or a list of strings (sops' parseKeyField).
    static func keyList(_ node: Yams.Node?, name: String, rule: Int, path: String) throws -> [String] {
        switch node {
        case nil: return []
        case .scalar(let scalar)?:
            if ["~", "null", "Null", "NULL"].contains(scalar.string) { return [] }
            return scalar.string.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
        case .sequence(let items)?:
            return try items.map { item in
                guard case .scalar(let scalar) = item else {
                    throw PiflashError.usage("creation rule \(rule + 1): `\(name)` must list strings", path: path)
                }
                return scalar.string.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        default:
            throw PiflashError.usage("creation rule \(rule + 1): `\(name)` must be a string or a list of strings", path: path)
        }
    }
}

// MARK: Adding a recipient

extension SOPSConfig {
    /// The file's text with `recipient` appended to the age recipients of rule `index` (its
    /// `age` key, or the first key group's), every other byte unchanged: a comma-separated
    /// string gains `,RECIPIENT` (a block scalar a new line), a list a new `- RECIPIENT` item.
    ///
    /// The result is parsed again and must hold exactly the same rules with one more recipient.
    /// - Returns: nil when the rule already lists the recipient.
    /// - Throws: ``PiflashError`` (exit 2) when the layout is one piflash does not edit (the
    ///   message says what to add by hand).
    public func addingRecipient(_ recipient: String, toRule index: Int) throws -> String? {
        guard rules.indices.contains(index) else { throw PiflashError.usage("no creation rule \(index + 1)", path: path) }
        if rules[index].ageRecipients.contains(recipient) { return nil }
        let byHand = "add `\(recipient)` to the age recipients of creation rule \(index + 1) by hand"
        func refuse(_ why: String) -> PiflashError {
            PiflashError.usage("cannot edit \(path) safely: \(why)", path: path, hint: byHand)
        }
        guard let root = try? Yams.compose(yaml: text), case .mapping(let top) = root,
            case .sequence(let entries)? = Self.entry(top, "creation_rules"), entries.count > index,
            case .mapping(var holder) = entries[index]
        else { throw refuse("its creation_rules are not a list of mappings") }
        if case .sequence(let groups)? = Self.entry(holder, "key_groups"), let first = groups.first {
            guard case .mapping(let group) = first else { throw refuse("its first key group is not a mapping") }
            holder = group
        }
        guard let pair = holder.first(where: { $0.key.string == "age" }) else {
            throw refuse("the rule has no `age` key to extend")
        }
        guard let keyMark = pair.key.mark, let valueMark = pair.value.mark else { throw refuse("no position information") }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let keyColumn = keyMark.column - 1
        let valueLine = valueMark.line - 1
        let valueColumn = valueMark.column - 1

        func indentation(_ line: String) -> Int { line.prefix { $0 == " " }.count }
        func isBlankOrComment(_ line: String) -> Bool {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            return trimmed.isEmpty || trimmed.hasPrefix("#")
        }
        /// The last line of a value starting on `start`: following lines indented deeper than
        /// `column` (blank lines and comments inside included only when more content follows).
        func lastLine(from start: Int, deeperThan column: Int) -> Int {
            var last = start
            var line = start + 1
            while line < lines.count {
                if isBlankOrComment(lines[line]) { line += 1; continue }
                if indentation(lines[line]) <= column { break }
                last = line
                line += 1
            }
            return last
        }
        /// The end of a plain scalar's text on a line: before a ` #` comment, trailing spaces dropped.
        func plainEnd(_ line: String, from column: Int) -> String.Index {
            let start = line.index(line.startIndex, offsetBy: min(column, line.count))
            var end = line.endIndex
            if let comment = line[start...].range(of: " #") { end = comment.lowerBound }
            while end > start, line[line.index(before: end)] == " " { end = line.index(before: end) }
            return end
        }
        func closingQuote(_ line: String, quote: Character, from column: Int) -> String.Index? {
            var index = line.index(line.startIndex, offsetBy: min(column, line.count))
            var result: String.Index?
            while index < line.endIndex {
                let character = line[index]
                if quote == "\"" && character == "\\" {
                    index = line.index(after: index)
                    if index < line.endIndex { index = line.index(after: index) }
                    continue
                }
                if character == quote {
                    let next = line.index(after: index)
                    if quote == "'" && next < line.endIndex && line[next] == "'" {
                        index = line.index(after: next)
                        continue
                    }
                    result = index
                }
                index = line.index(after: index)
            }
            return result
        }
        let existing = rules[index].ageRecipients

        switch pair.value {
        case .sequence(let sequence):
            let valueText = lines[valueLine]
            let isFlow = valueColumn < valueText.count
                && valueText[valueText.index(valueText.startIndex, offsetBy: valueColumn)] == "["
            if isFlow || sequence.style == Yams.Node.Sequence.Style.flow {
                guard lastLine(from: valueLine, deeperThan: keyColumn) == valueLine,
                    let close = lines[valueLine].lastIndex(of: "]")
                else { throw refuse("its age list is a flow list over several lines") }
                lines[valueLine].insert(contentsOf: (existing.isEmpty ? "" : ", ") + recipient, at: close)
            } else {
                guard let lastItem = sequence.last, let itemMark = lastItem.mark else { throw refuse("an empty age list") }
                let itemLine = itemMark.line - 1
                let line = lines[itemLine]
                guard let dash = line.firstIndex(of: "-") else { throw refuse("an age list item without its dash") }
                let dashColumn = line.distance(from: line.startIndex, to: dash)
                let contentColumn = itemMark.column - 1
                let end = lastLine(from: itemLine, deeperThan: dashColumn)
                let newLine = String(line.prefix(dashColumn)) + "-" + String(repeating: " ", count: max(1, contentColumn - dashColumn - 1))
                    + recipient
                lines.insert(newLine, at: end + 1)
            }
        case .scalar(let scalar):
            let end = lastLine(from: valueLine, deeperThan: keyColumn)
            let addition = (existing.isEmpty ? "" : ",") + recipient
            switch scalar.style {
            case .literal, .folded:
                guard end > valueLine else { throw refuse("an empty block scalar") }
                var last = lines[end]
                let trimmedEnd = plainEnd(last, from: 0)
                if !existing.isEmpty && !last[..<trimmedEnd].hasSuffix(",") { last.insert(",", at: trimmedEnd) }
                lines[end] = last
                lines.insert(String(repeating: " ", count: indentation(last)) + recipient, at: end + 1)
            case .doubleQuoted, .singleQuoted:
                let quote: Character = scalar.style == Yams.Node.Scalar.Style.doubleQuoted ? "\"" : "'"
                let from = end == valueLine ? valueColumn + 1 : 0
                guard let close = closingQuote(lines[end], quote: quote, from: from) else { throw refuse("no closing quote found") }
                let before = lines[end][..<close]
                lines[end].insert(contentsOf: before.hasSuffix(",") ? recipient : addition, at: close)
            default:
                if scalar.string.isEmpty { throw refuse("its `age` key has no value") }
                let from = end == valueLine ? valueColumn : 0
                let close = plainEnd(lines[end], from: from)
                let before = lines[end][..<close]
                lines[end].insert(contentsOf: before.hasSuffix(",") ? recipient : addition, at: close)
            }
        default:
            throw refuse("its `age` value is neither a string nor a list")
        }

        let edited = lines.joined(separator: "\n")
        let check: SOPSConfig
        do {
            check = try SOPSConfig(path: path, text: edited)
        } catch {
            throw refuse("the edited file does not parse")
        }
        var expected = rules
        expected[index].ageRecipients.append(recipient)
        guard check.rules == expected else { throw refuse("the edit would change more than the recipients of rule \(index + 1)") }
        return edited
    }
}
