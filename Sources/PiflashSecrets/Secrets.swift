// The contract of this module, used by host files, the flash job and `piflash check`.
// age lives in Age*.swift, SOPS in SOPS*.swift, OpenSSH keys in OpenSSHKey.swift.
import PiflashCore

/// Decrypted secret values by key path (`a.b.c` for nested keys), held in memory only: each value
/// in its own locked, no-dump pages (``SecretBytes``), zeroed when the last copy of the set goes.
public struct SecretValues: Sendable {
    private var storage: [String: SecretBytes]

    /// Locked copies of `values`; the caller's arrays are left as they are (tests, public values).
    public init(_ values: [String: [UInt8]]) {
        storage = values.mapValues { SecretBytes(copying: $0) }
    }

    /// Locked copies of `values`, whose arrays are then zeroed and removed: the plaintext exists
    /// only in locked memory afterwards. What every loader uses.
    public init(wiping values: inout [String: [UInt8]]) {
        var storage: [String: SecretBytes] = [:]
        for key in Array(values.keys) {
            storage[key] = SecretBytes(wiping: &values[key]!)
        }
        values.removeAll()
        self.storage = storage
    }

    /// The value at a key path, in locked memory, or nil.
    public func secret(_ keyPath: String) -> SecretBytes? { storage[keyPath] }

    /// A copy of the value at a key path, or nil: the caller should wipe it
    /// (``SecretPages/wipe(_:)``) when done; ``secret(_:)`` reads it in place.
    public func value(_ keyPath: String) -> [UInt8]? { storage[keyPath]?.bytes }

    /// Every key path, sorted.
    public var keys: [String] { storage.keys.sorted() }

    /// Each value transformed in place, by key path (e.g. to compare with what a test wrote).
    public func mapValues<T>(_ transform: (UnsafeRawBufferPointer) throws -> T) rethrows -> [String: T] {
        try storage.mapValues { try $0.withUnsafeBytes(transform) }
    }

    /// Whether every value is locked in memory (false when RLIMIT_MEMLOCK is too low: see
    /// ``SecretPages/lockNote``).
    public var isLocked: Bool { storage.values.allSatisfy(\.isLocked) }
}

/// Where the secrets of a host come from, and with which age identities they are opened.
public enum SecretLoader {
    /// A SOPS file (YAML, JSON, dotenv or INI, by extension or content) decrypted natively for
    /// age recipients with MAC verification, or by the `sops` binary for PGP/KMS-only files.
    /// Throws exit-2 errors for unreadable/malformed files, exit-1 errors for decryption failures.
    public static func loadSOPS(path: String, identities: [AgeIdentity]) throws -> SecretValues {
        try loadSOPS(path: path, identities: identities, environment: ProcessEnvironment.current)
    }

    /// ``loadSOPS(path:identities:)`` with the environment given: `PATH` finds `sops`, which
    /// then runs with this environment (and finds its own keys there).
    public static func loadSOPS(path: String, identities: [AgeIdentity], environment: [String: String]) throws -> SecretValues {
        let content = try FileSystem.readFile(path, what: "SOPS file")
        let format = SOPSFormat.detect(path: path, content: content)
        let document = try SOPSDocument(content: content, format: format, path: path)
        let metadata = document.metadata
        if metadata.keyGroupCount == 1, var dataKey = try dataKey(metadata, identities: identities, path: path) {
            defer { SecretPages.wipe(&dataKey) }
            return try document.decrypt(dataKey: dataKey)
        }
        // No age recipient of ours: PGP/KMS (or Shamir key groups) need the sops binary.
        if let sops = SOPSBinary.find(environment: environment) {
            return try SOPSBinary.decrypt(executable: sops, path: path, format: format, environment: environment)
        }
        var found = metadata.ageRecipients.map { "age " + $0.recipient } + metadata.otherKeys
        if found.isEmpty { found = ["none"] }
        let mine = identities.map(\.recipient).joined(separator: ", ")
        let reason = metadata.keyGroupCount > 1
            ? "it uses \(metadata.keyGroupCount) key groups (Shamir), which only sops can combine"
            : "no age recipient matches your identities (\(mine.isEmpty ? "none" : mine))"
        throw PiflashError.failure(
            "cannot decrypt the SOPS file: \(reason); its recipients: \(found.joined(separator: ", "))",
            path: path,
            hint: "add one of your age recipients to the file (sops updatekeys), or install sops so piflash can use it for PGP/KMS")
    }

    /// The data key from the first age recipient one of the identities opens; nil when none does.
    static func dataKey(_ metadata: SOPSMetadata, identities: [AgeIdentity], path: String) throws -> [UInt8]? {
        var lastFailure: AgeFailure?
        for recipient in metadata.ageRecipients {
            let result = AgeFile.open(Array(recipient.encryptedDataKey.utf8), identities: identities, armored: true)
            switch result.failure {
            case nil: return result.plaintext
            case .noMatch: continue
            case let failure?: lastFailure = failure
            }
        }
        if let lastFailure, lastFailure != .noMatch {
            let error = AgeFile.error(for: lastFailure, identities: identities, path: path)
            throw PiflashError.failure("the age-encrypted SOPS data key cannot be opened: \(error.message)", path: path)
        }
        return nil
    }

    /// An age-encrypted YAML or dotenv file (format by the name before `.age`: `x.yaml.age`,
    /// `x.env.age`; JSON too). YAML keys flatten like SOPS keys (`a.b.c`, `a.0`).
    /// Throws exit-2 errors for unreadable/malformed files, exit-1 errors for decryption failures.
    public static func loadAge(path: String, identities: [AgeIdentity]) throws -> SecretValues {
        let file = try FileSystem.readFile(path, what: "age-encrypted secrets file")
        var plaintext = try AgeFile.decrypt(file, identities: identities, path: path)
        defer { SecretPages.wipe(&plaintext) }
        var name = (path.split(separator: "/").last.map(String.init) ?? path).lowercased()
        if name.hasSuffix(".age") { name.removeLast(4) }
        if name.hasSuffix(".env") || name == "env" || name.hasPrefix(".env") {
            var values = try Dotenv.parse(plaintext, path: path)
            return SecretValues(wiping: &values)
        }
        if name.hasSuffix(".json") {
            let tree: SOPSNode
            do {
                tree = try OrderedJSON.parse(plaintext)
            } catch {
                throw PiflashError.usage("the decrypted file is not valid JSON (byte \(error.offset): \(error.reason))", path: path)
            }
            var values = tree.flattened()
            return SecretValues(wiping: &values)
        }
        if name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            return try yamlValues(plaintext, path: path)
        }
        throw PiflashError.usage(
            "cannot tell the format of the age-encrypted file from its name",
            path: path, hint: "name it NAME.yaml.age, NAME.env.age or NAME.json.age")
    }

    static func yamlValues(_ plaintext: [UInt8], path: String) throws -> SecretValues {
        var values: [String: [UInt8]] = [:]
        for document in try SOPSDocument.yamlDocuments(plaintext, path: path, isPlaintext: true) {
            switch document {
            case .mapping, .null: values.merge(document.flattened()) { $1 }
            default: throw PiflashError.usage("the decrypted YAML is not a mapping of keys to values", path: path)
            }
        }
        return SecretValues(wiping: &values)
    }

    /// A folder of plain files, one value per file; the file name is the key. Hidden files and
    /// subfolders are skipped. Throws exit-2 errors when the folder or a file cannot be read.
    public static func loadDirectory(path: String) throws -> SecretValues {
        var values: [String: [UInt8]] = [:]
        for name in try FileSystem.regularFiles(in: path) {
            values[name] = try FileSystem.readFile(path + "/" + name, what: "secret file")
        }
        return SecretValues(wiping: &values)
    }
}
