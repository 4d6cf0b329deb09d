// OpenSSH ed25519 keys: the `openssh-key-v1` private key format (PROTOCOL.key in OpenSSH),
// `ssh-ed25519 AAAA…` public key lines, and SHA256 fingerprints as `ssh-keygen -l` prints them.
import Crypto
import PiflashCore

/// An OpenSSH ed25519 key: the public half, its fingerprint and its `known_hosts` form.
public struct OpenSSHPublicKey: Sendable, Equatable {
    /// The wire blob: string "ssh-ed25519", string key(32).
    public let blob: [UInt8]

    public init(blob: [UInt8]) { self.blob = blob }

    static let keyType = "ssh-ed25519"

    /// The wire blob of an ed25519 public key.
    static func blob(publicKey: [UInt8]) -> [UInt8] {
        var writer = SSHWireWriter()
        writer.writeString(Array(keyType.utf8))
        writer.writeString(publicKey)
        return writer.bytes
    }

    /// The 32-byte ed25519 public key inside ``blob``.
    public var rawPublicKey: [UInt8] {
        var reader = SSHWireReader(blob)
        _ = try? reader.readString()
        return (try? reader.readString()) ?? []
    }

    /// From an `ssh-ed25519 AAAA… [comment]` line.
    /// - Throws: ``PiflashError`` (exit 2) when it is not an ed25519 public key line.
    public init(line: String) throws {
        let fields = line.trimmingASCIIWhitespace().split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 2 else { throw PiflashError.usage("not an OpenSSH public key line (expected ssh-ed25519 AAAA…)") }
        guard fields[0] == Self.keyType else {
            throw PiflashError.usage("unsupported SSH key type \(fields[0]); only ssh-ed25519 is supported")
        }
        guard let blob = Base64.decode(Array(fields[1].utf8), padded: true) else {
            throw PiflashError.usage("the SSH public key is not valid base64")
        }
        var reader = SSHWireReader(blob)
        guard let type = try? reader.readString(), type.elementsEqual(Array(Self.keyType.utf8)),
            let key = try? reader.readString(), key.count == 32, reader.isAtEnd
        else { throw PiflashError.usage("the SSH public key blob is not an ssh-ed25519 key") }
        self.blob = blob
    }

    /// The public key of an `-----BEGIN OPENSSH PRIVATE KEY-----` file (unencrypted).
    ///
    /// Checks the format, the two check integers, the padding, and that the private seed
    /// really derives the stored public key.
    /// - Throws: ``PiflashError`` (exit 2) for a malformed, encrypted or non-ed25519 key. The
    ///   message never contains key material.
    public init(privateKeyPEM: [UInt8]) throws {
        self.blob = try Self.parsePrivateKey(privateKeyPEM).blob
    }

    /// The public blob and the 32-byte ed25519 seed of an unencrypted OpenSSH private key.
    /// The seed is secret: it stays in memory and never appears in an error.
    static func parsePrivateKey(_ privateKeyPEM: [UInt8]) throws -> (blob: [UInt8], seed: [UInt8]) {
        let body = try Self.pemBody(privateKeyPEM)
        var reader = SSHWireReader(body)
        let magic = Array("openssh-key-v1".utf8) + [0]
        guard body.starts(with: magic) else { throw PiflashError.usage("not an openssh-key-v1 private key") }
        reader.skip(magic.count)
        do {
            let cipher = String(decoding: try reader.readString(), as: UTF8.self)
            let kdf = String(decoding: try reader.readString(), as: UTF8.self)
            _ = try reader.readString()  // KDF options
            guard cipher == "none", kdf == "none" else {
                throw PiflashError.usage(
                    "the SSH private key is encrypted with a passphrase (cipher \(cipher)); piflash needs an unencrypted key",
                    hint: "store the key unencrypted inside your SOPS/age secrets (ssh-keygen -p -N '' -f COPY removes the passphrase of a copy)")
            }
            let count = try reader.readUInt32()
            guard count == 1 else { throw PiflashError.usage("the SSH private key file holds \(count) keys; expected exactly one") }
            let publicBlob = try reader.readString()
            var publicReader = SSHWireReader(publicBlob)
            let publicType = String(decoding: try publicReader.readString(), as: UTF8.self)
            guard publicType == Self.keyType else {
                throw PiflashError.usage("unsupported SSH key type \(publicType); only ssh-ed25519 host keys are supported")
            }
            let privateSection = try reader.readString()
            guard reader.isAtEnd else { throw PiflashError.usage("trailing data after the SSH private key") }
            var secret = SSHWireReader(privateSection)
            let check1 = try secret.readUInt32()
            let check2 = try secret.readUInt32()
            guard check1 == check2 else {
                throw PiflashError.usage("the SSH private key's check integers differ: the key is corrupt (or encrypted)")
            }
            let type = String(decoding: try secret.readString(), as: UTF8.self)
            guard type == Self.keyType else { throw PiflashError.usage("unsupported SSH key type \(type); only ssh-ed25519 is supported") }
            let publicKey = try secret.readString()
            let privateKey = try secret.readString()
            _ = try secret.readString()  // comment
            guard publicKey.count == 32, privateKey.count == 64, Array(privateKey.suffix(32)) == publicKey else {
                throw PiflashError.usage("the SSH private key's ed25519 fields are inconsistent")
            }
            var padding: UInt8 = 1
            while !secret.isAtEnd {
                guard try secret.readByte() == padding else { throw PiflashError.usage("the SSH private key's padding is wrong") }
                padding &+= 1
            }
            guard publicBlob == Self.blob(publicKey: publicKey) else {
                throw PiflashError.usage("the SSH private key's public half does not match its private half")
            }
            let derived = try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey.prefix(32)).publicKey.rawRepresentation
            guard Array(derived) == publicKey else {
                throw PiflashError.usage("the SSH private key's seed does not derive its public key: the key is corrupt")
            }
            return (publicBlob, Array(privateKey.prefix(32)))
        } catch let error as PiflashError {
            throw error
        } catch {
            throw PiflashError.usage("the SSH private key is truncated or malformed")
        }
    }

    /// The base64 body between the PEM armor lines.
    static func pemBody(_ pem: [UInt8]) throws -> [UInt8] {
        let text = String(decoding: pem, as: UTF8.self)
        let lines = text.utf8.split(whereSeparator: { $0 == 0x0A || $0 == 0x0D }).map { String(decoding: $0, as: UTF8.self).trimmingASCIIWhitespace() }
        guard let begin = lines.firstIndex(of: "-----BEGIN OPENSSH PRIVATE KEY-----"),
            let end = lines[begin...].firstIndex(of: "-----END OPENSSH PRIVATE KEY-----")
        else {
            if lines.contains(where: { $0.hasPrefix("-----BEGIN") && $0.hasSuffix("PRIVATE KEY-----") }) {
                throw PiflashError.usage(
                    "the SSH private key is in an old PEM format; only the OpenSSH format (BEGIN OPENSSH PRIVATE KEY) is supported",
                    hint: "ssh-keygen -t ed25519 writes the OpenSSH format")
            }
            throw PiflashError.usage("not an OpenSSH private key (no BEGIN OPENSSH PRIVATE KEY line)")
        }
        let joined = lines[(begin + 1)..<end].joined()
        guard let body = Base64.decode(Array(joined.utf8), padded: true) else {
            throw PiflashError.usage("the SSH private key is not valid base64")
        }
        return body
    }

    /// `ssh-ed25519 AAAA…` (no comment), as `ssh-keygen -y` prints it before the comment.
    public var line: String { Self.keyType + " " + Base64.encode(blob, padded: true) }

    /// `SHA256:…` (unpadded base64), as `ssh-keygen -lf` prints it.
    public var fingerprint: String { "SHA256:" + Base64.encode(Array(SHA256.hash(data: blob)), padded: false) }
}

/// Reads the SSH wire encoding (RFC 4251 §5): uint32 and length-prefixed strings.
struct SSHWireReader {
    struct Truncated: Error {}

    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { index == bytes.count }

    mutating func skip(_ count: Int) { index = min(index + count, bytes.count) }

    mutating func readByte() throws -> UInt8 {
        guard index < bytes.count else { throw Truncated() }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func readUInt32() throws -> UInt32 {
        guard bytes.count - index >= 4 else { throw Truncated() }
        defer { index += 4 }
        return bytes[index..<(index + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func readString() throws -> [UInt8] {
        let length = Int(try readUInt32())
        guard bytes.count - index >= length else { throw Truncated() }
        defer { index += length }
        return Array(bytes[index..<(index + length)])
    }
}

/// Writes the SSH wire encoding.
struct SSHWireWriter {
    var bytes: [UInt8] = []

    mutating func writeString(_ value: [UInt8]) {
        let length = UInt32(value.count)
        bytes += [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
        bytes += value
    }
}

/// An OpenSSH ed25519 private key held in memory: generated here, written in the
/// `openssh-key-v1` format that ``OpenSSHPublicKey/parsePrivateKey(_:)`` reads (PROTOCOL.key:
/// no cipher, no KDF, one key, two equal check integers, padding 1, 2, 3… to 8 bytes).
public struct OpenSSHPrivateKey: Sendable {
    /// The public half.
    public let publicKey: OpenSSHPublicKey
    /// The 32-byte ed25519 seed. Secret: never printed, logged or written but into ``pem``.
    let seed: [UInt8]
    /// The key's comment (`root@NAME` for a host key).
    public let comment: String

    /// A fresh ed25519 key from the system's random generator.
    public static func generate(comment: String) -> OpenSSHPrivateKey {
        let key = Curve25519.Signing.PrivateKey()
        return OpenSSHPrivateKey(
            publicKey: OpenSSHPublicKey(blob: OpenSSHPublicKey.blob(publicKey: Array(key.publicKey.rawRepresentation))),
            seed: Array(key.rawRepresentation), comment: comment)
    }

    /// The private key file, as `ssh-keygen -t ed25519 -N ''` writes it: PEM armor with base64
    /// in 70-column lines, ending with a newline. The bytes are secret.
    public var pem: [UInt8] {
        let publicKeyBytes = publicKey.rawPublicKey
        var secret = SSHWireWriter()
        let check = UInt32.random(in: .min ... .max)
        secret.writeUInt32(check)
        secret.writeUInt32(check)
        secret.writeString(Array(OpenSSHPublicKey.keyType.utf8))
        secret.writeString(publicKeyBytes)
        secret.writeString(seed + publicKeyBytes)
        secret.writeString(Array(comment.utf8))
        var padding: UInt8 = 1
        while secret.bytes.count % 8 != 0 {
            secret.bytes.append(padding)
            padding += 1
        }
        var body = SSHWireWriter()
        body.bytes = Array("openssh-key-v1".utf8) + [0]
        body.writeString(Array("none".utf8))
        body.writeString(Array("none".utf8))
        body.writeString([])
        body.writeUInt32(1)
        body.writeString(publicKey.blob)
        body.writeString(secret.bytes)
        let encoded = Array(Base64.encode(body.bytes, padded: true).utf8)
        var output = Array("-----BEGIN OPENSSH PRIVATE KEY-----\n".utf8)
        var index = 0
        while index < encoded.count {
            output += encoded[index..<min(index + 70, encoded.count)] + [0x0A]
            index += 70
        }
        output += Array("-----END OPENSSH PRIVATE KEY-----\n".utf8)
        secret.bytes.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        body.bytes.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        return output
    }

    /// `ssh-ed25519 AAAA… COMMENT\n`: the `.pub` file.
    public var publicKeyFile: String { publicKey.line + " " + comment + "\n" }
}

extension SSHWireWriter {
    mutating func writeUInt32(_ value: UInt32) {
        bytes += [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }
}
