// Writing SOPS files natively, as sops does it (getsops/sops sops.go Tree.Encrypt, stores/):
// a fresh 256-bit data key, every value AES-256-GCM with its key path as additional data
// (SOPSValueCipher), the MAC (SHA-512 of the values in walk order, encrypted with
// `lastmodified` as additional data), the data key age-encrypted to every recipient.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import PiflashCore

/// A value to store in a SOPS file, in plaintext (held in memory only).
public indirect enum SOPSPlainNode: Sendable {
    /// A value to encrypt: its bytes, and its SOPS type (`str` for text).
    case secret([UInt8], type: String)
    /// A value stored in the clear (a key the encryption rules exclude): its text as written,
    /// the text the MAC hashes, and whether it is a string.
    case clear(text: String, macText: String, isString: Bool)
    case mapping([(key: String, value: SOPSPlainNode)])
    case sequence([SOPSPlainNode])
    case null

    /// A string to encrypt.
    public static func secret(_ bytes: [UInt8]) -> SOPSPlainNode { .secret(bytes, type: "str") }
}

/// The encryption settings of a SOPS file: what `.sops.yaml`'s creation rule (or an existing
/// file's metadata) says.
public struct SOPSEncryptionRules: Sendable, Equatable {
    public var unencryptedSuffix: String?
    public var encryptedSuffix: String?
    public var unencryptedRegex: String?
    public var encryptedRegex: String?
    public var macOnlyEncrypted = false

    public init(
        unencryptedSuffix: String? = nil, encryptedSuffix: String? = nil, unencryptedRegex: String? = nil,
        encryptedRegex: String? = nil, macOnlyEncrypted: Bool = false
    ) {
        self.unencryptedSuffix = unencryptedSuffix
        self.encryptedSuffix = encryptedSuffix
        self.unencryptedRegex = unencryptedRegex
        self.encryptedRegex = encryptedRegex
        self.macOnlyEncrypted = macOnlyEncrypted
    }

    /// With no rule given, sops records `unencrypted_suffix: _unencrypted`.
    var effective: SOPSEncryptionRules {
        var rules = self
        if [unencryptedSuffix, encryptedSuffix, unencryptedRegex, encryptedRegex].allSatisfy({ $0 == nil }) {
            rules.unencryptedSuffix = "_unencrypted"
        }
        return rules
    }

    /// Whether sops encrypts the value at `keyPath` under these rules (Tree.shouldBeEncrypted).
    /// - Throws: ``PiflashError`` (exit 2) for a regular expression Swift cannot compile.
    public func encrypts(_ keyPath: [String]) throws -> Bool {
        let rules = effective
        if let suffix = rules.unencryptedSuffix, keyPath.contains(where: { $0.hasSuffix(suffix) }) { return false }
        if let suffix = rules.encryptedSuffix { return keyPath.contains { $0.hasSuffix(suffix) } }
        if let pattern = rules.unencryptedRegex {
            let regex = try Self.compile(pattern)
            if keyPath.contains(where: { $0.contains(regex) }) { return false }
        }
        if let pattern = rules.encryptedRegex {
            let regex = try Self.compile(pattern)
            return keyPath.contains { $0.contains(regex) }
        }
        return true
    }

    static func compile(_ pattern: String) throws -> Regex<AnyRegexOutput> {
        do {
            return try Regex(pattern)
        } catch {
            throw PiflashError.usage("the SOPS rule holds a regular expression piflash cannot use: \(pattern)")
        }
    }
}

/// Native SOPS encryption to age recipients.
public enum SOPSWriter {
    /// The sops version whose file format piflash writes (recorded as `version`).
    public static let formatVersion = "3.9.0"

    /// An encrypted SOPS file of `tree`.
    ///
    /// - Parameters:
    ///   - tree: the document: a mapping.
    ///   - recipients: the age recipients the data key is encrypted to (at least one).
    ///   - rules: which values sops would leave in the clear; a `.secret` value they exclude is
    ///     refused rather than written in the clear.
    ///   - format: YAML, JSON or dotenv.
    ///   - lastModified: the time stamp (RFC 3339, UTC); now by default.
    /// - Returns: the file's bytes (no plaintext in them).
    /// - Throws: ``PiflashError`` (exit 2) for a value the rules would leave unencrypted, a
    ///   tree the format cannot hold (dotenv: flat strings only), an unusable recipient.
    public static func encrypt(
        _ tree: SOPSPlainNode, recipients: [AgeRecipient], rules: SOPSEncryptionRules, format: String,
        lastModified: String = rfc3339Now()
    ) throws -> [UInt8] {
        guard let format = SOPSFormat(rawValue: format), format != .ini else {
            throw PiflashError.usage("piflash writes SOPS files as yaml, json or dotenv, not \(format)")
        }
        guard !recipients.isEmpty else { throw PiflashError.usage("a SOPS file needs at least one age recipient") }
        guard case .mapping = tree else { throw PiflashError.usage("a SOPS document is a mapping") }
        var dataKey = SecureRandom.bytes(32)
        defer { dataKey.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        let key = SymmetricKey(data: dataKey)

        var hash = SHA512()
        if rules.macOnlyEncrypted { hash.update(data: SOPSDocument.macOnlyEncryptedInitialization) }
        func walk(_ node: SOPSPlainNode, keyPath: [String]) throws -> SOPSNode {
            switch node {
            case .null:
                return .null
            case .mapping(let items):
                return .mapping(try items.map { ($0.key, try walk($0.value, keyPath: keyPath + [$0.key])) })
            case .sequence(let items):
                return .sequence(try items.map { try walk($0, keyPath: keyPath) })
            case .clear(let text, let macText, let isString):
                if !rules.macOnlyEncrypted { hash.update(data: Array(macText.utf8)) }
                return .scalar(text: text, macText: macText, isString: isString)
            case .secret(let bytes, let type):
                guard try rules.encrypts(keyPath) else {
                    throw PiflashError.usage(
                        "the SOPS rules (\(rules.description)) would leave `\(keyPath.joined(separator: "."))` unencrypted; refusing to write a secret in the clear",
                        hint: "change the rule in .sops.yaml so every value is encrypted")
                }
                hash.update(data: try macBytes(bytes, type: type))
                return .string(SOPSValueCipher.encrypt(bytes, type: type, key: key, additionalData: SOPSValueCipher.additionalData(keyPath)))
            }
        }
        let encrypted = try walk(tree, keyPath: [])
        let mac = hash.finalize().map { byte -> String in
            let digits = Array("0123456789ABCDEF")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
        }.joined()

        var metadata: [(key: String, value: SOPSNode)] = []
        var ageEntries: [SOPSNode] = []
        for recipient in recipients {
            let enc = try AgeFile.encryptArmored(dataKey, to: [recipient])
            ageEntries.append(.mapping([("recipient", .string(recipient.description)), ("enc", .string(enc))]))
        }
        metadata.append(("age", .sequence(ageEntries)))
        metadata.append(("lastmodified", .string(lastModified)))
        metadata.append(("mac", .string(SOPSValueCipher.encrypt(Array(mac.utf8), key: key, additionalData: lastModified))))
        if rules.macOnlyEncrypted { metadata.append(("mac_only_encrypted", .scalar(text: "true", macText: "True", isString: false))) }
        let effective = rules.effective
        if let value = effective.unencryptedSuffix { metadata.append(("unencrypted_suffix", .string(value))) }
        if let value = effective.encryptedSuffix { metadata.append(("encrypted_suffix", .string(value))) }
        if let value = effective.unencryptedRegex { metadata.append(("unencrypted_regex", .string(value))) }
        if let value = effective.encryptedRegex { metadata.append(("encrypted_regex", .string(value))) }
        metadata.append(("version", .string(formatVersion)))

        guard case .mapping(var items) = encrypted else { preconditionFailure("the tree is a mapping") }
        items.append(("sops", .mapping(metadata)))
        return try SOPSEmitter.emit(.mapping(items), format: format)
    }

    /// The bytes sops hashes for a value of `type` (as ``SOPSValueCipher`` does when decrypting).
    static func macBytes(_ bytes: [UInt8], type: String) throws -> [UInt8] {
        let text = String(decoding: bytes, as: UTF8.self)
        switch type {
        case "str", "bytes": return bytes
        case "comment": return []
        case "int", "int64":
            guard let value = Int64(text) else { throw PiflashError.usage("a value typed \(type) is not an integer") }
            return Array(String(value).utf8)
        case "float":
            guard let value = Double(text) else { throw PiflashError.usage("a value typed float is not a number") }
            return Array(goFormatFloat(value).utf8)
        case "bool":
            return Array((["1", "t", "T", "TRUE", "true", "True"].contains(text) ? "True" : "False").utf8)
        default:
            throw PiflashError.usage("unknown SOPS value type \(type)")
        }
    }

    /// The current time as sops records `lastmodified`: `YYYY-MM-DDTHH:MM:SSZ`.
    public static func rfc3339Now() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}

extension SOPSEncryptionRules: CustomStringConvertible {
    public var description: String {
        let rules = effective
        if let value = rules.unencryptedSuffix { return "unencrypted_suffix \(value)" }
        if let value = rules.encryptedSuffix { return "encrypted_suffix \(value)" }
        if let value = rules.unencryptedRegex { return "unencrypted_regex \(value)" }
        if let value = rules.encryptedRegex { return "encrypted_regex \(value)" }
        return "none"
    }
}
