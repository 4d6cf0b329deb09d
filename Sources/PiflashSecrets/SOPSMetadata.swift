// The `sops` metadata of a SOPS file (getsops/sops stores/stores.go), read from the tree of
// any format: YAML and JSON hold it as a mapping, dotenv and INI as flattened keys.
import PiflashCore

/// What a SOPS file says about how it was encrypted.
struct SOPSMetadata {
    /// One age recipient: its `age1…` public key and the data key encrypted to it (armored age).
    struct AgeRecipient {
        var recipient: String
        var encryptedDataKey: String
    }

    /// The age recipients of the (single) key group.
    var ageRecipients: [AgeRecipient] = []
    /// The other master keys, described for error messages (`pgp 7FB8…`, `kms arn:…`).
    var otherKeys: [String] = []
    /// How many key groups there are (more than one means Shamir secret sharing).
    var keyGroupCount = 1
    var lastModified: String
    var mac: String
    var unencryptedSuffix: String?
    var encryptedSuffix: String?
    var unencryptedRegex: String?
    var encryptedRegex: String?
    /// Whether comment-based rules decide what is encrypted (not visible to this parser).
    var usesCommentRules = false
    var macOnlyEncrypted = false

    /// The rules deciding which values are encrypted (one place: ``SOPSEncryptionRules``).
    var rules: SOPSEncryptionRules {
        SOPSEncryptionRules(
            unencryptedSuffix: unencryptedSuffix, encryptedSuffix: encryptedSuffix, unencryptedRegex: unencryptedRegex,
            encryptedRegex: encryptedRegex, macOnlyEncrypted: macOnlyEncrypted)
    }

    /// From the `sops` mapping.
    /// - Throws: ``PiflashError`` (exit 2) when required fields are missing or rules conflict.
    init(_ node: SOPSNode, path: String) throws {
        guard case .mapping = node else { throw PiflashError.usage("the sops metadata is not a mapping", path: path) }
        lastModified = node["lastmodified"]?.text ?? ""
        mac = node["mac"]?.text ?? ""
        func rule(_ name: String) -> String? {
            guard let text = node[name]?.text, !text.isEmpty else { return nil }
            return text
        }
        unencryptedSuffix = rule("unencrypted_suffix")
        encryptedSuffix = rule("encrypted_suffix")
        unencryptedRegex = rule("unencrypted_regex")
        encryptedRegex = rule("encrypted_regex")
        usesCommentRules = rule("unencrypted_comment_regex") != nil || rule("encrypted_comment_regex") != nil
        macOnlyEncrypted = ["true", "True"].contains(node["mac_only_encrypted"]?.text ?? "")
        let rules = [unencryptedSuffix, encryptedSuffix, unencryptedRegex, encryptedRegex].compactMap { $0 }
        if rules.count > 1 {
            throw PiflashError.usage(
                "the sops metadata uses more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex",
                path: path)
        }
        if rules.isEmpty && !usesCommentRules { unencryptedSuffix = "_unencrypted" }

        let groups = node["key_groups"]?.items ?? []
        var masterKeys: [SOPSNode] = [node]
        if !groups.isEmpty && Self.hasKeys(node) == false {
            keyGroupCount = groups.count
            masterKeys = groups
        }
        for group in masterKeys {
            for entry in group["age"]?.items ?? [] {
                if let recipient = entry["recipient"]?.text, let enc = entry["enc"]?.text {
                    ageRecipients.append(AgeRecipient(recipient: recipient, encryptedDataKey: enc))
                }
            }
            for entry in group["pgp"]?.items ?? [] { otherKeys.append("pgp " + (entry["fp"]?.text ?? "?")) }
            for entry in group["kms"]?.items ?? [] { otherKeys.append("kms " + (entry["arn"]?.text ?? "?")) }
            for entry in group["gcp_kms"]?.items ?? [] { otherKeys.append("gcp_kms " + (entry["resource_id"]?.text ?? "?")) }
            for entry in group["azure_kv"]?.items ?? [] {
                otherKeys.append("azure_kv " + (entry["vault_url"]?.text ?? "?") + "/" + (entry["name"]?.text ?? "?"))
            }
            for entry in group["hc_vault"]?.items ?? [] {
                otherKeys.append("hc_vault " + (entry["vault_address"]?.text ?? "?") + "/" + (entry["key_name"]?.text ?? "?"))
            }
        }
    }

    /// Whether the top-level metadata lists master keys itself (rather than in key_groups).
    private static func hasKeys(_ node: SOPSNode) -> Bool {
        ["age", "pgp", "kms", "gcp_kms", "azure_kv", "hc_vault"].contains { !(node[$0]?.items.isEmpty ?? true) }
    }

    /// `lastmodified` as Go's `time.RFC3339` formats it after parsing: the MAC's additional data.
    var lastModifiedForMAC: String {
        var text = lastModified
        // Fractional seconds are dropped by RFC3339 formatting.
        if let dot = text.firstIndex(of: "."), text.distance(from: text.startIndex, to: dot) == 19 {
            var end = text.index(after: dot)
            while end < text.endIndex, text[end].isNumber { end = text.index(after: end) }
            text.removeSubrange(dot..<end)
        }
        // A zero offset is written as Z.
        if text.hasSuffix("+00:00") || text.hasSuffix("-00:00") { text = String(text.dropLast(6)) + "Z" }
        return text
    }
}

/// Rebuilds the tree of flattened metadata keys (`age__list_0__map_enc`), as sops writes them
/// in dotenv and INI files (stores/flatten.go).
enum SOPSFlatMetadata {
    private final class Branch {
        var value: String?
        var keys: [String] = []
        var children: [String: Branch] = [:]
        var items: [Int: Branch] = [:]

        func child(_ key: String) -> Branch {
            if let existing = children[key] { return existing }
            let branch = Branch()
            children[key] = branch
            keys.append(key)
            return branch
        }

        func item(_ index: Int) -> Branch {
            if let existing = items[index] { return existing }
            let branch = Branch()
            items[index] = branch
            return branch
        }

        var node: SOPSNode {
            if !items.isEmpty { return .sequence(items.keys.sorted().map { items[$0]!.node }) }
            if !keys.isEmpty { return .mapping(keys.map { ($0, children[$0]!.node) }) }
            return .string(value ?? "")
        }
    }

    /// The metadata mapping from flattened `(key, value)` pairs (prefix already removed);
    /// `\n` escapes in values are decoded.
    static func unflatten(_ pairs: [(key: String, value: String)]) -> SOPSNode {
        let root = Branch()
        for (key, value) in pairs {
            var branch = root
            var rest = Substring(key)
            // The first token is a plain key; then __map_KEY and __list_N tokens follow.
            var token = rest
            if let range = firstSeparator(in: rest) {
                token = rest[..<range.lowerBound]
                rest = rest[range.lowerBound...]
            } else {
                rest = ""
            }
            branch = branch.child(String(token))
            while !rest.isEmpty {
                let isList = rest.hasPrefix("__list_")
                rest = rest.dropFirst(isList ? 7 : 6)
                var name = rest
                if let range = firstSeparator(in: rest) {
                    name = rest[..<range.lowerBound]
                    rest = rest[range.lowerBound...]
                } else {
                    rest = ""
                }
                branch = isList ? branch.item(Int(name) ?? 0) : branch.child(String(name))
            }
            branch.value = value.replacingEscapedNewlines()
        }
        return root.node
    }

    private static func firstSeparator(in text: Substring) -> Range<Substring.Index>? {
        var index = text.startIndex
        while index < text.endIndex {
            let rest = text[index...]
            if rest.hasPrefix("__map_") || rest.hasPrefix("__list_") { return index..<index }
            index = text.index(after: index)
        }
        return nil
    }
}

extension String {
    /// The string with every two-character `\n` escape replaced by a newline.
    func replacingEscapedNewlines() -> String {
        var output: [UInt8] = []
        let bytes = Array(utf8)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "n") {
                output.append(UInt8(ascii: "\n"))
                index += 2
            } else {
                output.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: output, as: UTF8.self)
    }
}
