@_exported import PiflashCore
import Crypto
import Foundation

/// An SSH public host key as it travels in a key exchange: the wire blob (`string algorithm`,
/// then the algorithm's fields), with its `SHA256:` fingerprint and its OpenSSH line form.
///
/// PiflashCheck keeps its own small type (rather than PiflashSecrets' `OpenSSHPublicKey`) so the
/// check does not depend on the secrets module; the two agree on the blob.
public struct SSHHostKey: Sendable, Equatable, CustomStringConvertible {
    /// The wire blob, e.g. `string "ssh-ed25519", string key(32)`.
    public let blob: [UInt8]
    /// The key's algorithm, the first string of the blob: `ssh-ed25519`, `ecdsa-sha2-nistp256`…
    public let algorithm: String

    /// A key from its wire blob.
    ///
    /// - Throws: ``PiflashError`` (usage) when the blob does not start with an SSH string naming
    ///   an algorithm.
    public init(blob: [UInt8]) throws {
        guard blob.count >= 4 else {
            throw PiflashError.usage("an SSH public key blob of \(blob.count) bytes is too short")
        }
        let length = Int(blob[0]) << 24 | Int(blob[1]) << 16 | Int(blob[2]) << 8 | Int(blob[3])
        guard length > 0, length <= 64, blob.count >= 4 + length,
            let name = String(validating: blob[4..<(4 + length)], as: UTF8.self),
            name.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 })
        else {
            throw PiflashError.usage("an SSH public key blob does not start with an algorithm name")
        }
        self.blob = blob
        self.algorithm = name
    }

    /// A key from an OpenSSH public key line, `ssh-ed25519 AAAA… [comment]`, as in a `.pub` file
    /// or an `authorized_keys` line without options. A `known_hosts` line (`host ssh-ed25519 AAAA…`)
    /// is accepted too.
    ///
    /// - Throws: ``PiflashError`` (usage) when no `ALGORITHM BASE64` pair is found, the base64
    ///   does not decode, or the blob names another algorithm than the line.
    public init(line: String) throws {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        for index in fields.indices.dropLast() {
            let name = fields[index]
            guard name.hasPrefix("ssh-") || name.hasPrefix("ecdsa-") || name.hasPrefix("sk-") else { continue }
            guard let data = Data(base64Encoded: fields[index + 1]) else {
                throw PiflashError.usage("the \(name) public key's base64 does not decode")
            }
            try self.init(blob: [UInt8](data))
            guard algorithm == name else {
                throw PiflashError.usage("the public key line says \(name) but its key is \(algorithm)")
            }
            return
        }
        throw PiflashError.usage(
            "not an OpenSSH public key line (expected `ssh-ed25519 AAAA…`): \(line.prefix(40))",
            hint: "pass the content of the host's ssh_host_ed25519_key.pub, or the path of that file")
    }

    /// The `SHA256:` fingerprint of the blob, unpadded base64, as `ssh-keygen -lf` prints it.
    public var fingerprint: String { Self.fingerprint(ofBlob: blob) }

    /// `ssh-ed25519 AAAA…` without a comment.
    public var line: String { algorithm + " " + Data(blob).base64EncodedString() }

    public var description: String { fingerprint }

    /// The `SHA256:` fingerprint of any SSH public key blob, as `ssh-keygen -lf` prints it.
    public static func fingerprint(ofBlob blob: [UInt8]) -> String {
        let digest = Data(SHA256.hash(data: blob)).base64EncodedString()
        return "SHA256:" + digest.trimmingSuffix("=")
    }
}

extension String {
    fileprivate func trimmingSuffix(_ character: Character) -> String {
        var copy = self
        while copy.last == character { copy.removeLast() }
        return copy
    }
}
