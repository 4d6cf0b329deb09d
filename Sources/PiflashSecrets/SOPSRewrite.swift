// Replacing one value of an existing SOPS file natively: decrypt it (MAC checked), swap the
// value, and encrypt the whole document again with a fresh data key for the same age
// recipients and the same rules — every other value kept byte for byte, with its type.
import Crypto
import PiflashCore

/// Rewriting a SOPS file with one value replaced.
public enum SOPSRewrite {
    /// The new file and the value that was replaced.
    public struct Outcome {
        /// The new file's bytes (no plaintext).
        public var content: [UInt8]
        /// The old value (secret: wipe it when done), nil when the key was new.
        public var oldValue: [UInt8]?
        /// The age recipients the new data key is encrypted to.
        public var recipients: [AgeRecipient]
    }

    /// `path` with the top-level string `key` set to `value` (added at the end when missing).
    ///
    /// - Throws: ``PiflashError``: exit 1 when no identity opens the file or its MAC is wrong;
    ///   exit 2 for files piflash cannot rewrite without losing something (PGP/KMS recipients,
    ///   key groups, SSH recipients, encrypted comments, several YAML documents, INI).
    public static func replacing(_ key: String, with value: [UInt8], inFile path: String, identities: [AgeIdentity]) throws -> Outcome {
        let content = try FileSystem.readFile(path, what: "SOPS file")
        let format = SOPSFormat.detect(path: path, content: content)
        let document = try SOPSDocument(content: content, format: format, path: path)
        let metadata = document.metadata
        if format == SOPSFormat.ini { throw Self.cannotRewrite(path: path, key: key, "it is an INI file") }
        if document.documentCount != 1 { throw Self.cannotRewrite(path: path, key: key, "it holds \(document.documentCount) YAML documents") }
        if metadata.keyGroupCount > 1 { throw Self.cannotRewrite(path: path, key: key, "it uses \(metadata.keyGroupCount) key groups (Shamir)") }
        if !metadata.otherKeys.isEmpty { throw Self.cannotRewrite(path: path, key: key, "its data key is also encrypted to \(metadata.otherKeys.joined(separator: ", "))") }
        if metadata.usesCommentRules { throw Self.cannotRewrite(path: path, key: key, "it uses comment-based encryption rules") }
        if format == SOPSFormat.yaml, Self.containsEncryptedComment(content) { throw Self.cannotRewrite(path: path, key: key, "it has encrypted comments") }
        var recipients: [AgeRecipient] = []
        for entry in metadata.ageRecipients {
            do {
                recipients.append(try AgeRecipient(entry.recipient))
            } catch {
                throw Self.cannotRewrite(path: path, key: key, "its recipient \(entry.recipient.prefix(24))… is not an X25519 age recipient")
            }
        }
        guard !recipients.isEmpty else { throw Self.cannotRewrite(path: path, key: key, "it has no age recipients") }
        guard var dataKey = try SecretLoader.dataKey(metadata, identities: identities, path: path) else {
            let mine = identities.map(\.recipient).joined(separator: ", ")
            throw PiflashError.failure(
                "none of your age identities (\(mine.isEmpty ? "none" : mine)) opens the SOPS file; its recipients: "
                    + recipients.map(\.description).joined(separator: ", "),
                path: path, hint: "give the identity with --age-identity FILE")
        }
        defer { dataKey.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        // Checks every value and the MAC before anything is rewritten.
        _ = try document.decrypt(dataKey: dataKey)

        let symmetricKey = SymmetricKey(data: dataKey)
        var oldValue: [UInt8]?
        var items: [(key: String, value: SOPSPlainNode)] = []
        var replaced = false
        for (name, node) in document.firstDocument {
            if name == key {
                if case .scalar(let text, _, let isString) = node, isString, SOPSValueCipher.isEncrypted(text) || text.isEmpty {
                    oldValue = try SOPSValueCipher.decrypt(
                        text, key: symmetricKey, additionalData: SOPSValueCipher.additionalData([name]), keyPath: name, path: path
                    ).bytes
                } else {
                    throw Self.cannotRewrite(path: path, key: key, "`\(key)` is not an encrypted string")
                }
                items.append((name, SOPSPlainNode.secret(value, type: "str")))
                replaced = true
            } else {
                items.append((name, try plain(node, keyPath: [name], flatKey: name, document: document, key: symmetricKey)))
            }
        }
        if !replaced { items.append((key, SOPSPlainNode.secret(value, type: "str"))) }
        let output = try SOPSWriter.encrypt(
            .mapping(items), recipients: recipients, rules: metadata.rules, format: format.rawValue)
        return Outcome(content: output, oldValue: oldValue, recipients: recipients)
    }

    static func cannotRewrite(path: String, key: String, _ why: String) -> PiflashError {
        PiflashError.usage(
            "piflash cannot rewrite this SOPS file without losing something: \(why)", path: path,
            hint: "rotate it with sops instead: sops set \(path) '[\"\(key)\"]' …")
    }

    /// Whether YAML text holds sops' encrypted comments (`#ENC[…]`).
    static func containsEncryptedComment(_ content: [UInt8]) -> Bool {
        let marker = Array("#ENC[".utf8)
        guard content.count >= marker.count else { return false }
        for start in 0...(content.count - marker.count) where content[start] == marker[0] {
            if Array(content[start..<(start + marker.count)]) == marker { return true }
        }
        return false
    }

    /// The plaintext tree of one value: encrypted values decrypted (with their type), the others
    /// kept as written.
    private static func plain(_ node: SOPSNode, keyPath: [String], flatKey: String, document: SOPSDocument, key: SymmetricKey) throws -> SOPSPlainNode {
        switch node {
        case .null:
            return .null
        case .mapping(let items):
            var result: [(key: String, value: SOPSPlainNode)] = []
            for item in items {
                let flat = flatKey.isEmpty ? item.key : flatKey + "." + item.key
                result.append((item.key, try plain(item.value, keyPath: keyPath + [item.key], flatKey: flat, document: document, key: key)))
            }
            return .mapping(result)
        case .sequence(let items):
            var result: [SOPSPlainNode] = []
            for (index, item) in items.enumerated() {
                result.append(try plain(item, keyPath: keyPath, flatKey: flatKey + ".\(index)", document: document, key: key))
            }
            return .sequence(result)
        case .scalar(let text, let macText, let isString):
            guard try document.shouldBeEncrypted(keyPath, value: isString ? text : nil) else {
                return .clear(text: text, macText: macText, isString: isString)
            }
            let plaintext = try SOPSValueCipher.decrypt(
                text, key: key, additionalData: SOPSValueCipher.additionalData(keyPath), keyPath: flatKey, path: document.path)
            if plaintext.type == "comment" {
                throw PiflashError.usage("piflash cannot rewrite this SOPS file without losing its encrypted comments", path: document.path)
            }
            return .secret(plaintext.bytes, type: plaintext.type)
        }
    }
}
