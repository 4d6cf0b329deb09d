// A SOPS file: its data tree and metadata, decrypted natively for age recipients with the
// MAC checked the way sops checks it (getsops/sops sops.go, Tree.Decrypt).
import Crypto
import PiflashCore
import Yams

/// The formats sops stores secrets in.
enum SOPSFormat: String {
    case yaml, json, dotenv, ini

    /// By extension, else by content.
    static func detect(path: String, content: [UInt8]) -> SOPSFormat {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let lowered = name.lowercased()
        if lowered.hasSuffix(".yaml") || lowered.hasSuffix(".yml") { return .yaml }
        if lowered.hasSuffix(".json") { return .json }
        if lowered.hasSuffix(".env") || lowered == ".env" { return .dotenv }
        if lowered.hasSuffix(".ini") { return .ini }
        let text = String(decoding: content.prefix(1 << 20), as: UTF8.self)
        if text.drop(while: { $0.isWhitespace }).hasPrefix("{") { return .json }
        let lines = text.split(separator: "\n").map { $0.trimmingASCIIWhitespace() }
        if lines.contains(where: { $0.hasPrefix("sops_mac=") || $0.hasPrefix("sops_version=") }) { return .dotenv }
        if lines.contains("[sops]") { return .ini }
        return .yaml
    }
}

/// A parsed SOPS document.
struct SOPSDocument {
    /// The data of each document (YAML files may hold several), without the `sops` key.
    var branches: [[(key: String, value: SOPSNode)]]
    var metadata: SOPSMetadata
    var path: String

    /// How many documents the file holds (YAML may hold several).
    var documentCount: Int { branches.count }

    /// The keys and values of the first document, in file order.
    var firstDocument: [(key: String, value: SOPSNode)] { branches.first ?? [] }

    /// The first bytes of the MAC when `mac_only_encrypted` is set: SHA-256("sops").
    static let macOnlyEncryptedInitialization: [UInt8] = [
        0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
        0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
    ]

    /// Parses a SOPS file.
    /// - Throws: ``PiflashError`` (exit 2) for a malformed file or one without `sops` metadata.
    init(content: [UInt8], format: SOPSFormat, path: String) throws {
        self.path = path
        var metadataNode: SOPSNode?
        switch format {
        case .yaml:
            branches = []
            for document in try Self.yamlDocuments(content, path: path) {
                guard case .mapping(var items) = document else {
                    if case .null = document { continue }
                    throw PiflashError.usage("a SOPS YAML document must be a mapping", path: path)
                }
                if let index = items.firstIndex(where: { $0.key == "sops" }) {
                    metadataNode = metadataNode ?? items[index].value
                    items.remove(at: index)
                }
                branches.append(items)
            }
        case .json:
            let tree: SOPSNode
            do {
                tree = try OrderedJSON.parse(content)
            } catch {
                throw PiflashError.usage("malformed JSON at byte \(error.offset): \(error.reason)", path: path)
            }
            guard case .mapping(var items) = tree else {
                throw PiflashError.usage("a SOPS JSON file must hold an object", path: path)
            }
            if let index = items.firstIndex(where: { $0.key == "sops" }) {
                metadataNode = items[index].value
                items.remove(at: index)
            }
            branches = [items]
        case .dotenv:
            var items: [(key: String, value: SOPSNode)] = []
            var flat: [(key: String, value: String)] = []
            var lineNumber = 0
            for line in content.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                lineNumber += 1
                if line.isEmpty || line.first == UInt8(ascii: "#") { continue }
                guard let equals = line.firstIndex(of: UInt8(ascii: "=")) else {
                    throw PiflashError.usage("line \(lineNumber) of the SOPS dotenv file has no =", path: path)
                }
                let key = String(decoding: line[line.startIndex..<equals], as: UTF8.self)
                let value = String(decoding: line[(equals + 1)...], as: UTF8.self).replacingEscapedNewlines()
                if key.hasPrefix("sops_") {
                    flat.append((String(key.dropFirst(5)), value))
                } else {
                    items.append((key, .string(value)))
                }
            }
            if !flat.isEmpty { metadataNode = SOPSFlatMetadata.unflatten(flat) }
            branches = [items]
        case .ini:
            var sections: [(key: String, value: SOPSNode)] = []
            for section in try INIFile.parse(content, path: path) {
                if section.name == "sops" {
                    metadataNode = SOPSFlatMetadata.unflatten(section.entries)
                } else {
                    sections.append((section.name, .mapping(section.entries.map { ($0.key, .string($0.value)) })))
                }
            }
            branches = [sections]
        }
        guard let metadataNode else {
            throw PiflashError.usage("not a SOPS file: it has no sops metadata", path: path, hint: "encrypt it with sops, or use [secrets] age = … for a plain age file")
        }
        metadata = try SOPSMetadata(metadataNode, path: path)
    }

    /// Every YAML document of the file as a tree, keys in file order.
    /// - Parameter isPlaintext: true for decrypted content: parse errors then say where, but
    ///   never quote the text (YAML error messages include the offending line).
    static func yamlDocuments(_ content: [UInt8], path: String, isPlaintext: Bool = false) throws -> [SOPSNode] {
        let text = String(decoding: content, as: UTF8.self)
        var documents: [SOPSNode] = []
        do {
            var sequence = try Yams.compose_all(yaml: text)
            while let node = sequence.next() { documents.append(try yamlNode(node, path: path)) }
            if let error = sequence.error { throw error }
        } catch let error as PiflashError {
            throw error
        } catch {
            if isPlaintext {
                var location = ""
                if let error = error as? YamlError, case .scanner(_, _, let mark, _) = error { location = " at line \(mark.line)" }
                if let error = error as? YamlError, case .parser(_, _, let mark, _) = error { location = " at line \(mark.line)" }
                throw PiflashError.usage("the decrypted YAML is malformed\(location)", path: path)
            }
            throw PiflashError.usage("malformed YAML: \(error)", path: path)
        }
        return documents
    }

    /// Converts a Yams node. Plain scalars are typed the way Go's yaml.v3 types them when
    /// decoding into `interface{}`, because that decides the bytes sops hashes.
    static func yamlNode(_ node: Yams.Node, path: String) throws -> SOPSNode {
        switch node {
        case .scalar(let scalar):
            return yamlScalar(scalar)
        case .mapping(let mapping):
            return .mapping(try mapping.map { pair in
                guard case .scalar(let key) = pair.key else {
                    throw PiflashError.usage("a YAML key is not a scalar; SOPS supports only string keys", path: path)
                }
                return (key.string, try yamlNode(pair.value, path: path))
            })
        case .sequence(let sequence):
            return .sequence(try sequence.map { try yamlNode($0, path: path) })
        case .alias:
            throw PiflashError.usage("YAML aliases are not supported in SOPS files", path: path)
        }
    }

    static func yamlScalar(_ scalar: Yams.Node.Scalar) -> SOPSNode {
        let text = scalar.string
        guard scalar.style == .plain || scalar.style == .any else { return .string(text) }
        switch text {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .scalar(text: text, macText: "True", isString: false)
        case "false", "False", "FALSE": return .scalar(text: text, macText: "False", isString: false)
        default: break
        }
        if let integer = yamlInteger(text) { return .scalar(text: text, macText: String(integer), isString: false) }
        if let value = yamlFloat(text) { return .scalar(text: text, macText: goFormatFloat(value), isString: false) }
        return .string(text)
    }

    /// yaml.v3's integer forms: decimal (with sign and `_`), `0b`, `0o`, `0x` and legacy `0…` octal.
    static func yamlInteger(_ text: String) -> Int64? {
        var body = Substring(text.replacingOccurrences("_", with: ""))
        var negative = false
        if body.hasPrefix("-") || body.hasPrefix("+") {
            negative = body.hasPrefix("-")
            body = body.dropFirst()
        }
        guard !body.isEmpty else { return nil }
        var radix = 10
        if body.hasPrefix("0x") { radix = 16; body = body.dropFirst(2) }
        else if body.hasPrefix("0o") { radix = 8; body = body.dropFirst(2) }
        else if body.hasPrefix("0b") { radix = 2; body = body.dropFirst(2) }
        else if body.count > 1 && body.hasPrefix("0") { radix = 8; body = body.dropFirst() }
        guard !body.isEmpty, let magnitude = Int64(body, radix: radix) else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// yaml.v3's float forms: decimal with a point or exponent, `.inf`, `.nan`.
    static func yamlFloat(_ text: String) -> Double? {
        switch text {
        case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": return .infinity
        case "-.inf", "-.Inf", "-.INF": return -.infinity
        case ".nan", ".NaN", ".NAN": return .nan
        default: break
        }
        let allowed = Set("0123456789+-.eE_")
        guard text.allSatisfy({ allowed.contains($0) }), text.contains(where: \.isNumber) else { return nil }
        return Double(text.replacingOccurrences("_", with: ""))
    }

    /// Whether sops encrypts the value at `keyPath` (Tree.shouldBeEncrypted, without the
    /// comment rules, which this parser cannot see; those fall back to the value's form).
    func shouldBeEncrypted(_ keyPath: [String], value: String?) throws -> Bool {
        if metadata.usesCommentRules && metadata.unencryptedSuffix == nil && metadata.encryptedSuffix == nil
            && metadata.unencryptedRegex == nil && metadata.encryptedRegex == nil
        {
            return value.map(SOPSValueCipher.isEncrypted) ?? false
        }
        do {
            return try metadata.rules.encrypts(keyPath)
        } catch let error as PiflashError {
            throw PiflashError.usage(error.message.replacingOccurrences("SOPS rule", with: "sops metadata"), path: path)
        }
    }

    /// Decrypts every value with the data key and checks the MAC.
    ///
    /// - Returns: the values by flattened key path (`a.b.c`, list items `a.0`).
    /// - Throws: ``PiflashError`` (exit 1) when a value or the MAC does not authenticate or the
    ///   MAC does not match the values.
    func decrypt(dataKey: [UInt8]) throws -> SecretValues {
        guard dataKey.count == 32 else {
            throw PiflashError.failure("the SOPS data key is \(dataKey.count) bytes, not 32", path: path)
        }
        let key = SymmetricKey(data: dataKey)
        var hash = SHA512()
        if metadata.macOnlyEncrypted { hash.update(data: Self.macOnlyEncryptedInitialization) }
        var values: [String: [UInt8]] = [:]
        // On a failed MAC the values decrypted so far are zeroed too.
        defer { for name in Array(values.keys) { SecretPages.wipe(&values[name]!) } }

        func walk(_ node: SOPSNode, keyPath: [String], flatKey: String) throws {
            switch node {
            case .null:
                return
            case .mapping(let items):
                for (name, value) in items {
                    try walk(value, keyPath: keyPath + [name], flatKey: flatKey.isEmpty ? name : flatKey + "." + name)
                }
            case .sequence(let items):
                for (index, value) in items.enumerated() {
                    try walk(value, keyPath: keyPath, flatKey: flatKey + "." + String(index))
                }
            case .scalar(let text, let macText, let isString):
                let encrypted = try shouldBeEncrypted(keyPath, value: isString ? text : nil)
                let plaintext: SOPSValueCipher.Plaintext
                if encrypted {
                    guard isString else {
                        throw PiflashError.failure("the value of \(flatKey) should be encrypted but is a plain \(text.isEmpty ? "value" : "scalar")", path: path)
                    }
                    plaintext = try SOPSValueCipher.decrypt(
                        text, key: key, additionalData: SOPSValueCipher.additionalData(keyPath), keyPath: flatKey, path: path)
                } else {
                    plaintext = SOPSValueCipher.Plaintext(bytes: Array(text.utf8), macBytes: Array(macText.utf8))
                }
                if !metadata.macOnlyEncrypted || encrypted { hash.update(data: plaintext.macBytes) }
                values[flatKey] = plaintext.bytes
            }
        }

        for branch in branches { try walk(.mapping(branch), keyPath: [], flatKey: "") }

        let computed = hash.finalize().map { byte -> String in
            let digits = Array("0123456789ABCDEF")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
        }.joined()
        guard !metadata.mac.isEmpty else {
            throw PiflashError.failure("the SOPS file has no MAC; refusing to trust its values", path: path)
        }
        let stored: SOPSValueCipher.Plaintext
        do {
            stored = try SOPSValueCipher.decrypt(
                metadata.mac, key: key, additionalData: metadata.lastModifiedForMAC, keyPath: "sops.mac", path: path)
        } catch {
            throw PiflashError.failure(
                "the SOPS MAC does not authenticate: the file (or its lastmodified) was tampered with or corrupted", path: path)
        }
        guard stored.bytes.elementsEqual(Array(computed.utf8)) else {
            throw PiflashError.failure("SOPS MAC mismatch: the values were tampered with or corrupted", path: path)
        }
        return SecretValues(wiping: &values)
    }
}

extension String {
    /// The string with every occurrence of `target` replaced (no Foundation).
    func replacingOccurrences(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
