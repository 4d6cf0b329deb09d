// The contract of this module, used by host files, the flash job and `piflash check`.
// Bodies marked SKELETON are replaced by the secrets work before it lands.
import PiflashCore

/// Decrypted secret values by key path (`a.b.c` for nested keys), held in memory only.
public struct SecretValues: Sendable {
    public private(set) var values: [String: [UInt8]]

    public init(_ values: [String: [UInt8]]) {
        self.values = values
    }

    /// The value at a key path, or nil.
    public func value(_ keyPath: String) -> [UInt8]? { values[keyPath] }

    /// Every key path, sorted.
    public var keys: [String] { values.keys.sorted() }
}

/// Where the secrets of a host come from, and with which age identities they are opened.
public enum SecretLoader {
    /// A SOPS file (YAML, JSON or dotenv, by extension or content) decrypted natively for age
    /// recipients with MAC verification, or by the `sops` binary for PGP/KMS-only files.
    /// Throws exit-2 errors for unreadable/malformed files, exit-1 errors for decryption failures.
    public static func loadSOPS(path: String, identities: [AgeIdentity]) throws -> SecretValues {
        fatalError("SKELETON")
    }

    /// An age-encrypted YAML or dotenv file (format by the name before `.age`).
    public static func loadAge(path: String, identities: [AgeIdentity]) throws -> SecretValues {
        fatalError("SKELETON")
    }

    /// A folder of plain files, one value per file; the file name is the key.
    public static func loadDirectory(path: String) throws -> SecretValues {
        fatalError("SKELETON")
    }
}

/// An age X25519 identity (`AGE-SECRET-KEY-1…`).
public struct AgeIdentity: Sendable {
    public let secretKey: [UInt8]
    public init(secretKey: [UInt8]) { self.secretKey = secretKey }

    /// Every identity in a keys file or `SOPS_AGE_KEY` text (comments and blank lines skipped).
    public static func parse(_ text: String) throws -> [AgeIdentity] { fatalError("SKELETON") }

    /// The identities to use: `--age-identity FILE`, `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`,
    /// `~/.config/sops/age/keys.txt` (all that exist, in that order).
    public static func load(explicitFile: String?, environment: [String: String]) throws -> [AgeIdentity] {
        fatalError("SKELETON")
    }
}

/// An OpenSSH ed25519 key: the public half, its fingerprint and its `known_hosts` form.
public struct OpenSSHPublicKey: Sendable, Equatable {
    /// The wire blob: string "ssh-ed25519", string key(32).
    public let blob: [UInt8]

    public init(blob: [UInt8]) { self.blob = blob }

    /// From an `ssh-ed25519 AAAA… [comment]` line.
    public init(line: String) throws { fatalError("SKELETON") }

    /// The public key of an `-----BEGIN OPENSSH PRIVATE KEY-----` file (unencrypted).
    public init(privateKeyPEM: [UInt8]) throws { fatalError("SKELETON") }

    /// `ssh-ed25519 AAAA…` (no comment), as `ssh-keygen -y` prints it before the comment.
    public var line: String { fatalError("SKELETON") }

    /// `SHA256:…` (unpadded base64), as `ssh-keygen -lf` prints it.
    public var fingerprint: String { fatalError("SKELETON") }
}
