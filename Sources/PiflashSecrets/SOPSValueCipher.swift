// One encrypted SOPS value: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, AES-256-GCM with a
// 32-byte IV and the key path as additional data (getsops/sops aes/cipher.go). Both directions
// live here: the one place that knows the value encoding.
import Crypto
import PiflashCore

/// Encryption and decryption of single SOPS values with the document's data key.
enum SOPSValueCipher {
    /// A decrypted value: its plaintext bytes, the bytes sops feeds to the MAC for it, and its
    /// SOPS type (`str`, `int`, `float`, `bool`, `bytes`, `comment`).
    struct Plaintext {
        var bytes: [UInt8]
        var macBytes: [UInt8]
        var type: String = "str"
    }

    /// The IV length sops uses.
    static let ivSize = 32

    /// The additional data of a value at `keyPath` (list indices excluded): `a:b:c:`.
    static func additionalData(_ keyPath: [String]) -> String { keyPath.map { $0 + ":" }.joined() }

    /// Encrypts one value as sops does: a fresh random 32-byte IV, AES-256-GCM, the empty value
    /// stays empty (sops writes `""` for it).
    ///
    /// - Parameters:
    ///   - bytes: the plaintext bytes (for `int`/`float`/`bool`, their text as sops writes it).
    ///   - type: the SOPS type recorded in the value.
    ///   - key: the 32-byte data key.
    ///   - additionalData: ``additionalData(_:)`` of the key path, or `lastmodified` for the MAC.
    static func encrypt(_ bytes: [UInt8], type: String = "str", key: SymmetricKey, additionalData: String) -> String {
        if bytes.isEmpty && (type == "str" || type == "bytes" || type == "comment") { return "" }
        let iv = SecureRandom.bytes(ivSize)
        let sealed = AESGCM.seal(bytes, iv: iv, key: key, additionalData: Array(additionalData.utf8))
        return "ENC[AES256_GCM,data:" + Base64.encode(sealed.ciphertext, padded: true) + ",iv:" + Base64.encode(iv, padded: true)
            + ",tag:" + Base64.encode(sealed.tag, padded: true) + ",type:" + type + "]"
    }

    /// Whether `text` looks like an encrypted value.
    static func isEncrypted(_ text: String) -> Bool { text.hasPrefix("ENC[AES256_GCM,") }

    /// Decrypts one value.
    ///
    /// - Parameters:
    ///   - text: the `ENC[…]` string; the empty string stands for an empty value, as in sops.
    ///   - key: the 32-byte data key.
    ///   - additionalData: the key path joined with `:` plus a trailing `:` (or `lastmodified`
    ///     for the MAC).
    ///   - keyPath: the key path for error messages.
    /// - Throws: ``PiflashError`` (exit 1) when the value is malformed or does not
    ///   authenticate. The message names the key path, never the value.
    static func decrypt(_ text: String, key: SymmetricKey, additionalData: String, keyPath: String, path: String) throws -> Plaintext {
        if text.isEmpty { return Plaintext(bytes: [], macBytes: []) }
        guard text.hasPrefix("ENC[AES256_GCM,"), text.hasSuffix("]") else {
            throw PiflashError.failure("the value of \(keyPath) is not a SOPS-encrypted value (ENC[AES256_GCM,…])", path: path)
        }
        let inner = text.dropFirst("ENC[AES256_GCM,".count).dropLast()
        var fields: [String: Substring] = [:]
        for field in inner.split(separator: ",", omittingEmptySubsequences: false) {
            guard let colon = field.firstIndex(of: ":") else {
                throw PiflashError.failure("the encrypted value of \(keyPath) is malformed", path: path)
            }
            fields[String(field[..<colon])] = field[field.index(after: colon)...]
        }
        guard let dataText = fields["data"], let ivText = fields["iv"], let tagText = fields["tag"],
            let type = fields["type"],
            let data = Base64.decode(Array(dataText.utf8), padded: true),
            let iv = Base64.decode(Array(ivText.utf8), padded: true),
            let tag = Base64.decode(Array(tagText.utf8), padded: true), tag.count == 16, !iv.isEmpty
        else { throw PiflashError.failure("the encrypted value of \(keyPath) is malformed", path: path) }
        guard let bytes = AESGCM.open(ciphertext: data, tag: tag, iv: iv, key: key, additionalData: Array(additionalData.utf8)) else {
            throw PiflashError.failure(
                "the value of \(keyPath) does not authenticate with the data key: the file was tampered with or corrupted",
                path: path)
        }
        let text = String(decoding: bytes, as: UTF8.self)
        switch type {
        case "str", "bytes":
            return Plaintext(bytes: bytes, macBytes: bytes, type: String(type))
        case "int", "int64":
            guard let value = Int64(text.hasPrefix("+") ? String(text.dropFirst()) : text) else {
                throw PiflashError.failure("the value of \(keyPath) is typed int but is not an integer", path: path)
            }
            return Plaintext(bytes: bytes, macBytes: Array(String(value).utf8), type: String(type))
        case "float":
            guard let value = Double(text) else {
                throw PiflashError.failure("the value of \(keyPath) is typed float but is not a number", path: path)
            }
            return Plaintext(bytes: bytes, macBytes: Array(goFormatFloat(value).utf8), type: "float")
        case "bool":
            switch text {
            case "1", "t", "T", "TRUE", "true", "True": return Plaintext(bytes: bytes, macBytes: Array("True".utf8), type: "bool")
            case "0", "f", "F", "FALSE", "false", "False": return Plaintext(bytes: bytes, macBytes: Array("False".utf8), type: "bool")
            default: throw PiflashError.failure("the value of \(keyPath) is typed bool but is not a boolean", path: path)
            }
        case "comment":
            return Plaintext(bytes: bytes, macBytes: [], type: "comment")
        default:
            throw PiflashError.failure("the value of \(keyPath) has an unknown SOPS type \(type)", path: path)
        }
    }
}
