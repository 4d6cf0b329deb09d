import Crypto
import PiflashSecrets

/// The key of the keyed digests piflash records about content derived from a host's secrets
/// (injected files, injected blocks): HMAC-SHA-256 under a key that only whoever holds the
/// host's secrets can derive, so a journal, a `--json` paste or a station's state file proves
/// "same content" to them and lets nobody else test guesses (an 8-character Wi-Fi passphrase
/// behind a plain SHA-256 falls to an offline search).
///
/// Derivation (stable, documented in piflash-hosts(5)): HKDF-SHA-256 with
/// - input key material: for each secret the host uses, sorted by name, the name's UTF-8 bytes
///   and the value's bytes, each preceded by its length as a 4-byte big-endian integer;
/// - salt: the ASCII bytes `piflash`;
/// - info: ``label`` (`piflash content digest v1`);
/// - 32 output bytes.
public struct DigestKey: Sendable, Equatable {
    /// The HKDF info string; part of the derivation's name in the man page.
    public static let label = "piflash content digest v1"
    static let salt = Array("piflash".utf8)

    private let key: [UInt8]

    /// The key for the secrets named `names` (the ones the host's files are made from).
    ///
    /// - Returns: nil when no secret is used: then nothing recorded is derived from secrets.
    public init?(secrets: SecretValues, names: some Sequence<String>) {
        var material: [UInt8] = []
        var used = 0
        for name in Set(names).sorted() {
            guard var value = secrets.value(name) else { continue }
            Self.appendLengthPrefixed(Array(name.utf8), to: &material)
            Self.appendLengthPrefixed(value, to: &material)
            SecretPages.wipe(&value)
            used += 1
        }
        guard used > 0 else { return nil }
        let derived = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: material), salt: Self.salt, info: Array(Self.label.utf8),
            outputByteCount: 32)
        key = derived.withUnsafeBytes { Array($0) }
        material.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }

    /// A key from its raw 32 bytes (tests, and recomputing from a stored derivation).
    public init(raw: [UInt8]) {
        precondition(raw.count == 32, "a digest key is 32 bytes")
        key = raw
    }

    /// HMAC-SHA-256 of `bytes` under this key.
    public func mac(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: key))
        hmac.update(data: Array(bytes))
        return Array(hmac.finalize())
    }

    /// Lower-case hex of ``mac(_:)``.
    public func macHex(_ bytes: some Sequence<UInt8>) -> String { hexString(mac(bytes)) }

    private static func appendLengthPrefixed(_ bytes: [UInt8], to out: inout [UInt8]) {
        let n = UInt32(bytes.count)
        out += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
        out += bytes
    }
}
