// AES-256-GCM with SOPS' 32-byte IVs, both directions.
import Crypto

/// AES-GCM with an IV of any length (SOPS uses 32 bytes).
enum AESGCM {
    /// The plaintext, or nil when the tag does not authenticate.
    static func open(ciphertext: [UInt8], tag: [UInt8], iv: [UInt8], key: SymmetricKey, additionalData: [UInt8]) -> [UInt8]? {
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: iv), ciphertext: ciphertext, tag: tag)
            return Array(try AES.GCM.open(box, using: key, authenticating: additionalData))
        } catch {
            return nil
        }
    }

    /// The ciphertext and the 16-byte tag of `plaintext` under `key` and `iv`.
    /// Traps on an IV swift-crypto refuses (empty): a programming error, never user input.
    static func seal(_ plaintext: [UInt8], iv: [UInt8], key: SymmetricKey, additionalData: [UInt8]) -> (ciphertext: [UInt8], tag: [UInt8]) {
        do {
            let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: iv), authenticating: additionalData)
            return (Array(box.ciphertext), Array(box.tag))
        } catch {
            preconditionFailure("AES-GCM sealing failed: \(error)")
        }
    }
}
