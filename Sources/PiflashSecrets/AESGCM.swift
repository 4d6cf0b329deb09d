// AES-256-GCM opening with SOPS' 32-byte IVs.
import Crypto

/// AES-GCM decryption with an IV of any length (SOPS uses 32 bytes).
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
}
