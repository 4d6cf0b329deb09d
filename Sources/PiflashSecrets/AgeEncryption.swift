// Encryption of age v1 files (https://age-encryption.org/v1) to X25519 recipients: a fresh
// file key wrapped once per recipient, the header MAC, one STREAM payload. The counterpart of
// AgeFile's decryption, with the same constants.
import Crypto
import PiflashCore

/// An age X25519 recipient: `age1…`, the Bech32 form of a Curve25519 public key.
public struct AgeRecipient: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The 32-byte X25519 public key.
    public let publicKey: [UInt8]

    /// From its 32-byte X25519 public key.
    public init(publicKey: [UInt8]) {
        precondition(publicKey.count == 32, "an X25519 public key is 32 bytes")
        self.publicKey = publicKey
    }

    /// From an `age1…` string.
    /// - Throws: ``PiflashError`` (exit 2) when it is not an X25519 age recipient; plugin and
    ///   SSH recipients are named as such.
    public init(_ text: String) throws {
        let trimmed = text.trimmingASCIIWhitespace()
        if trimmed.hasPrefix("ssh-") {
            throw PiflashError.usage(
                "the age recipient `\(trimmed.prefix(24))…` is an SSH key; piflash encrypts to X25519 recipients (age1…) only",
                hint: "convert it with `piflash hosts recipient HOST` (for a piflash host) or ssh-to-age")
        }
        guard let (hrp, data) = Bech32.decode(trimmed) else {
            throw PiflashError.usage("`\(trimmed)` is not an age recipient (expected age1… with a valid checksum)")
        }
        guard hrp == "age", data.count == 32 else {
            throw PiflashError.usage(
                "`\(trimmed)` is not an X25519 age recipient (\(hrp)1…); piflash encrypts to age1… recipients only")
        }
        publicKey = data
    }

    /// `age1…`.
    public var description: String { Bech32.encode(hrp: "age", data: publicKey) }
}

extension AgeFile {
    /// An age file of `plaintext` for `recipients`, binary.
    ///
    /// - Precondition: at least one recipient.
    /// - Throws: ``PiflashError`` (exit 2) for a recipient that is not a usable X25519 key.
    static func encrypt(_ plaintext: [UInt8], to recipients: [AgeRecipient]) throws -> [UInt8] {
        precondition(!recipients.isEmpty, "age encryption needs a recipient")
        let fileKey = SecureRandom.bytes(fileKeySize)
        var header = AgeHeader.versionLine + [0x0A]
        for recipient in recipients {
            let stanza = try wrapX25519(fileKey: fileKey, recipient: recipient)
            header += Array(("-> X25519 " + Base64.encode(stanza.share, padded: false) + "\n").utf8)
            let body = Base64.encode(stanza.body, padded: false)
            var lines: [Substring] = []
            var rest = Substring(body)
            while rest.count >= 64 {
                lines.append(rest.prefix(64))
                rest = rest.dropFirst(64)
            }
            lines.append(rest)  // the last line is shorter than 64 columns, possibly empty
            for line in lines { header += Array(line.utf8) + [0x0A] }
        }
        header += Array("---".utf8)
        let macKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: fileKey), salt: [UInt8](), info: Array("header".utf8), outputByteCount: 32)
        let mac = Array(HMAC<SHA256>.authenticationCode(for: header, using: macKey))
        header += Array((" " + Base64.encode(mac, padded: false) + "\n").utf8)

        let nonce = SecureRandom.bytes(nonceSize)
        let payloadKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: fileKey), salt: nonce, info: Array("payload".utf8), outputByteCount: 32)
        var output = header + nonce
        var position = 0
        var counter: UInt64 = 0
        repeat {
            let end = min(position + chunkSize, plaintext.count)
            let last = end == plaintext.count
            output += sealChunk(plaintext[position..<end], key: payloadKey, counter: counter, last: last)
            position = end
            counter += 1
        } while position < plaintext.count
        return output
    }

    /// ``encrypt(_:to:)`` in ASCII armor, as SOPS stores data keys.
    static func encryptArmored(_ plaintext: [UInt8], to recipients: [AgeRecipient]) throws -> String {
        String(decoding: AgeArmor.encode(try encrypt(plaintext, to: recipients)), as: UTF8.self)
    }

    /// One X25519 stanza: an ephemeral share and the file key sealed under the shared secret.
    static func wrapX25519(fileKey: [UInt8], recipient: AgeRecipient) throws -> (share: [UInt8], body: [UInt8]) {
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        let share = Array(ephemeral.publicKey.rawRepresentation)
        let shared: SharedSecret
        do {
            shared = try ephemeral.sharedSecretFromKeyAgreement(
                with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: recipient.publicKey))
        } catch {
            throw PiflashError.usage("the age recipient \(recipient) is not a usable X25519 public key")
        }
        if shared.withUnsafeBytes({ $0.allSatisfy { $0 == 0 } }) {
            throw PiflashError.usage("the age recipient \(recipient) is a low-order point, not a usable X25519 public key")
        }
        do {
            let wrappingKey = shared.hkdfDerivedSymmetricKey(
                using: SHA256.self, salt: share + recipient.publicKey, sharedInfo: Array("age-encryption.org/v1/X25519".utf8),
                outputByteCount: 32)
            let box = try ChaChaPoly.seal(fileKey, using: wrappingKey, nonce: ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12)))
            return (share, Array(box.ciphertext) + Array(box.tag))
        } catch {
            preconditionFailure("X25519 wrapping failed: \(error)")
        }
    }

    static func sealChunk(_ chunk: ArraySlice<UInt8>, key: SymmetricKey, counter: UInt64, last: Bool) -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: 12)
        for byte in 0..<8 { nonce[10 - byte] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(byte))) }
        nonce[11] = last ? 1 : 0
        do {
            let box = try ChaChaPoly.seal(chunk, using: key, nonce: ChaChaPoly.Nonce(data: nonce))
            return Array(box.ciphertext) + Array(box.tag)
        } catch {
            preconditionFailure("ChaCha20-Poly1305 sealing failed: \(error)")
        }
    }
}
