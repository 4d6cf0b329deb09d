// age X25519 identities: parsing `AGE-SECRET-KEY-1…` lines and finding them where sops does.
import Crypto
import PiflashCore

/// An age identity: X25519 (`AGE-SECRET-KEY-1…`), or an OpenSSH ed25519 key used as an age
/// identity (`ssh-ed25519` stanzas, as `age -R key.pub` and sops' SSH support write them).
public struct AgeIdentity: Sendable {
    /// The 32-byte X25519 scalar (for an SSH key, derived from its ed25519 seed). Never printed
    /// or logged.
    public let secretKey: [UInt8]
    /// For an SSH key: its public key blob (string "ssh-ed25519", string key).
    let sshPublicBlob: [UInt8]?

    public init(secretKey: [UInt8]) {
        self.secretKey = secretKey
        self.sshPublicBlob = nil
    }

    /// An unencrypted OpenSSH ed25519 private key used as an age identity.
    /// - Throws: ``PiflashError`` (exit 2) as ``OpenSSHPublicKey/init(privateKeyPEM:)`` does.
    public init(sshPrivateKeyPEM: [UInt8]) throws {
        let (blob, seed) = try OpenSSHPublicKey.parsePrivateKey(sshPrivateKeyPEM)
        // The X25519 scalar of an ed25519 key is the first half of SHA-512(seed) (clamped by X25519).
        self.secretKey = Array(SHA512.hash(data: seed).prefix(32))
        self.sshPublicBlob = blob
    }

    /// From one `AGE-SECRET-KEY-1…` string.
    /// - Throws: ``PiflashError`` (exit 2) when it is not a valid identity; the message never
    ///   contains the string itself.
    public init(bech32 text: String) throws {
        guard let (hrp, data) = Bech32.decode(text), hrp == "age-secret-key-", data.count == 32 else {
            throw PiflashError.usage("not a valid age identity (expected AGE-SECRET-KEY-1…)")
        }
        self.secretKey = data
        self.sshPublicBlob = nil
    }

    /// The recipient this identity decrypts for: `age1…`, or `ssh-ed25519 AAAA…` for an SSH key.
    public var recipient: String {
        if let sshPublicBlob { return OpenSSHPublicKey(blob: sshPublicBlob).line }
        guard let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: secretKey) else { return "age1?" }
        return Bech32.encode(hrp: "age", data: Array(key.publicKey.rawRepresentation))
    }

    /// Every identity in a keys file or `SOPS_AGE_KEY` text (comments and blank lines skipped).
    ///
    /// - Throws: ``PiflashError`` (exit 2) naming the line number of a line that is not an
    ///   identity (never its content).
    public static func parse(_ text: String) throws -> [AgeIdentity] {
        var identities: [AgeIdentity] = []
        var lineNumber = 0
        for rawLine in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = String(decoding: rawLine, as: UTF8.self).trimmingASCIIWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            do {
                identities.append(try AgeIdentity(bech32: line))
            } catch {
                throw PiflashError.usage(
                    "line \(lineNumber) is not an age identity (expected AGE-SECRET-KEY-1…)",
                    hint: "only X25519 age identities are supported")
            }
        }
        return identities
    }

    /// The identities to use: `--age-identity FILE`, `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`,
    /// `~/.config/sops/age/keys.txt` (or `$XDG_CONFIG_HOME/sops/age/keys.txt`), all that exist,
    /// in that order.
    ///
    /// - Throws: ``PiflashError`` (exit 2) when a file named explicitly (flag or
    ///   `SOPS_AGE_KEY_FILE`) cannot be read or holds something else than identities; (exit 1)
    ///   when no identity is found anywhere, listing where it looked.
    public static func load(explicitFile: String?, environment: [String: String]) throws -> [AgeIdentity] {
        var identities: [AgeIdentity] = []
        var looked: [String] = []
        if let explicitFile {
            looked.append("--age-identity \(explicitFile)")
            identities += try parseFile(explicitFile, origin: "--age-identity")
        }
        if let text = environment["SOPS_AGE_KEY"] {
            looked.append("SOPS_AGE_KEY")
            do {
                identities += try parse(text)
            } catch let error as PiflashError {
                throw PiflashError.usage("SOPS_AGE_KEY: \(error.message)", hint: error.hint)
            }
        } else {
            looked.append("SOPS_AGE_KEY (unset)")
        }
        if let file = environment["SOPS_AGE_KEY_FILE"], !file.isEmpty {
            looked.append("SOPS_AGE_KEY_FILE=\(file)")
            identities += try parseFile(file, origin: "SOPS_AGE_KEY_FILE")
        } else {
            looked.append("SOPS_AGE_KEY_FILE (unset)")
        }
        if let file = environment["SOPS_AGE_SSH_PRIVATE_KEY_FILE"], !file.isEmpty {
            looked.append("SOPS_AGE_SSH_PRIVATE_KEY_FILE=\(file)")
            let pem = try FileSystem.readFile(file, what: "SSH private key (SOPS_AGE_SSH_PRIVATE_KEY_FILE)")
            do {
                identities.append(try AgeIdentity(sshPrivateKeyPEM: pem))
            } catch let error as PiflashError {
                throw PiflashError.usage(error.message, path: file, hint: error.hint)
            }
        }
        let configHome: String?
        if let xdg = environment["XDG_CONFIG_HOME"], !xdg.isEmpty {
            configHome = xdg
        } else if let home = environment["HOME"], !home.isEmpty {
            configHome = home + "/.config"
        } else {
            configHome = nil
        }
        if let configHome {
            let defaultFile = configHome + "/sops/age/keys.txt"
            looked.append(defaultFile)
            if FileSystem.isReadableFile(defaultFile) {
                identities += try parseFile(defaultFile, origin: "the default keys file")
            }
        }
        guard !identities.isEmpty else {
            throw PiflashError.failure(
                "no age identity found; looked in: " + looked.joined(separator: ", "),
                hint: "pass --age-identity FILE, or set SOPS_AGE_KEY_FILE, or put your key in ~/.config/sops/age/keys.txt (age-keygen -o FILE)")
        }
        return identities
    }

    static func parseFile(_ path: String, origin: String) throws -> [AgeIdentity] {
        let bytes = try FileSystem.readFile(path, what: "age identity file (\(origin))")
        do {
            return try parse(String(decoding: bytes, as: UTF8.self))
        } catch let error as PiflashError {
            throw PiflashError.usage(error.message, path: path, hint: error.hint)
        }
    }

    /// The file key of an `X25519` stanza, nil if the stanza is not for this identity.
    /// - Throws: ``AgeFailure/header(_:)`` when the stanza is malformed or its share is a
    ///   low-order point.
    func unwrap(_ stanza: AgeHeader.Stanza) throws(AgeFailure) -> [UInt8]? {
        switch (stanza.type, sshPublicBlob) {
        // An SSH key also opens X25519 stanzas for its converted key (ssh-to-age, as sops-nix uses).
        case ("X25519", _): return try unwrapX25519(stanza)
        case ("ssh-ed25519", let blob?): return try unwrapSSH(stanza, blob: blob)
        default: return nil
        }
    }

    /// An `ssh-ed25519 TAG SHARE` stanza: X25519 with the share, tweaked by a key derived from
    /// the SSH public key (age's agessh package).
    func unwrapSSH(_ stanza: AgeHeader.Stanza, blob: [UInt8]) throws(AgeFailure) -> [UInt8]? {
        guard stanza.arguments.count == 2 else { throw .header("an ssh-ed25519 stanza needs exactly two arguments") }
        let tag = Array(SHA256.hash(data: blob).prefix(4))
        guard let stanzaTag = Base64.decode(Array(stanza.arguments[0].utf8), padded: false), stanzaTag.count == 4 else {
            throw .header("the ssh-ed25519 stanza tag is not 4 bytes of canonical base64")
        }
        guard stanzaTag == tag else { return nil }
        guard let share = Base64.decode(Array(stanza.arguments[1].utf8), padded: false), share.count == 32 else {
            throw .header("the ssh-ed25519 stanza share is not 32 bytes of canonical base64")
        }
        guard stanza.body.count == 32 else { throw .header("the ssh-ed25519 stanza body is not a 16-byte file key") }
        let label = Array("age-encryption.org/v1/ssh-ed25519".utf8)
        let wrappingKey: SymmetricKey
        do {
            let privateKey = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: secretKey)
            let shared = try privateKey.sharedSecretFromKeyAgreement(
                with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: share))
            let sharedBytes = shared.withUnsafeBytes { Array($0) }
            if sharedBytes.allSatisfy({ $0 == 0 }) { throw AgeFailure.header("the ssh-ed25519 share is a low-order point") }
            // HKDF with an empty secret, salted with the SSH public key blob.
            let tweak = HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: [UInt8]()), salt: blob, info: label, outputByteCount: 32)
            let tweakKey = try tweak.withUnsafeBytes { try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array($0)) }
            let tweaked = try tweakKey.sharedSecretFromKeyAgreement(with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: sharedBytes))
            let salt = share + Array(privateKey.publicKey.rawRepresentation)
            wrappingKey = tweaked.hkdfDerivedSymmetricKey(using: SHA256.self, salt: salt, sharedInfo: label, outputByteCount: 32)
        } catch {
            throw .header("the ssh-ed25519 share is a low-order point")
        }
        return Self.openFileKey(stanza.body, wrappingKey: wrappingKey)
    }

    static func openFileKey(_ body: [UInt8], wrappingKey: SymmetricKey) -> [UInt8]? {
        do {
            let box = try ChaChaPoly.SealedBox(
                nonce: ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12)), ciphertext: body.prefix(16), tag: body.suffix(16))
            return Array(try ChaChaPoly.open(box, using: wrappingKey))
        } catch {
            return nil
        }
    }

    func unwrapX25519(_ stanza: AgeHeader.Stanza) throws(AgeFailure) -> [UInt8]? {
        guard stanza.arguments.count == 1 else { throw .header("an X25519 stanza needs exactly one argument") }
        guard let share = Base64.decode(Array(stanza.arguments[0].utf8), padded: false), share.count == 32 else {
            throw .header("the X25519 stanza share is not 32 bytes of canonical base64")
        }
        guard stanza.body.count == 32 else { throw .header("the X25519 stanza body is not a 16-byte file key") }
        let wrappingKey: SymmetricKey
        do {
            let privateKey = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: secretKey)
            let shared = try privateKey.sharedSecretFromKeyAgreement(
                with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: share))
            let isZero = shared.withUnsafeBytes { bytes in bytes.allSatisfy { $0 == 0 } }
            if isZero { throw AgeFailure.header("the X25519 share is a low-order point") }
            let salt = share + Array(privateKey.publicKey.rawRepresentation)
            wrappingKey = shared.hkdfDerivedSymmetricKey(
                using: SHA256.self, salt: salt, sharedInfo: Array("age-encryption.org/v1/X25519".utf8), outputByteCount: 32)
        } catch {
            throw .header("the X25519 share is a low-order point")
        }
        do {
            let box = try ChaChaPoly.SealedBox(
                nonce: ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12)),
                ciphertext: stanza.body.prefix(16), tag: stanza.body.suffix(16))
            return Array(try ChaChaPoly.open(box, using: wrappingKey))
        } catch {
            return nil
        }
    }
}

extension StringProtocol {
    /// The string without leading and trailing spaces, tabs, CR and LF.
    func trimmingASCIIWhitespace() -> String {
        let bytes = Array(utf8)
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = bytes.lastIndex(where: { !isSpace($0) })!
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}
