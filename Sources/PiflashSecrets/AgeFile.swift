// Decryption of age v1 files (https://age-encryption.org/v1) with X25519 identities:
// unwrap the file key, check the header MAC, then decrypt the STREAM payload.
import Crypto
import PiflashCore

/// age file decryption with X25519 identities, natively on swift-crypto.
public enum AgeFile {
    static let fileKeySize = 16
    static let chunkSize = 64 * 1024
    static let tagSize = 16
    static let nonceSize = 16

    /// Decrypts an age file, binary or ASCII-armored, with the first identity that matches.
    ///
    /// - Parameters:
    ///   - file: the whole file.
    ///   - identities: the X25519 identities to try.
    ///   - path: the file, for error messages.
    /// - Returns: the plaintext, held in memory only.
    /// - Throws: ``PiflashError`` (exit 1) when no identity matches, the header MAC or the payload
    ///   does not authenticate, or the file is not a well-formed age file.
    public static func decrypt(_ file: [UInt8], identities: [AgeIdentity], path: String? = nil) throws -> [UInt8] {
        let result = open(file, identities: identities, armored: nil)
        guard let failure = result.failure else { return result.plaintext }
        throw error(for: failure, identities: identities, path: path)
    }

    /// The error a user sees for a failure; never includes key material.
    static func error(for failure: AgeFailure, identities: [AgeIdentity], path: String?) -> PiflashError {
        switch failure {
        case .noMatch:
            let mine = identities.map(\.recipient).joined(separator: ", ")
            return .failure(
                "no identity matches: this age file is not encrypted to any of your \(identities.count) age identities (\(mine))",
                path: path,
                hint: "use the identity the file was encrypted to (--age-identity FILE, SOPS_AGE_KEY_FILE or ~/.config/sops/age/keys.txt)")
        case .headerMAC:
            return .failure("the age header MAC does not match: the file was modified or corrupted", path: path)
        case .armor(let reason):
            return .failure("malformed age ASCII armor: \(reason)", path: path)
        case .header(let reason):
            return .failure("malformed age header: \(reason)", path: path)
        case .payload(let reason):
            return .failure("the age payload does not decrypt: \(reason); the file is truncated or corrupted", path: path)
        }
    }

    /// Opens an age file and reports what happened.
    ///
    /// - Parameter armored: true to require armor, false to refuse it, nil to detect it.
    /// - Returns: the plaintext released before any failure (the whole plaintext on success),
    ///   and the failure if there was one.
    static func open(_ file: [UInt8], identities: [AgeIdentity], armored: Bool?) -> (plaintext: [UInt8], failure: AgeFailure?) {
        let binary: [UInt8]
        do {
            binary = (armored ?? AgeArmor.isArmored(file)) ? try AgeArmor.decode(file) : file
        } catch {
            return ([], error)
        }
        let header: AgeHeader
        let fileKey: [UInt8]
        do {
            header = try AgeHeader.parse(binary)
            fileKey = try unwrapFileKey(header.stanzas, identities: identities)
            try checkMAC(header, fileKey: fileKey)
        } catch {
            return ([], error)
        }
        let payload = binary[header.payloadStart...]
        guard payload.count >= nonceSize else { return ([], .header("the payload nonce is missing or short")) }
        return decryptPayload(payload.dropFirst(nonceSize), fileKey: fileKey, nonce: Array(payload.prefix(nonceSize)))
    }

    /// The file key from the first stanza an identity opens. A malformed stanza of the
    /// identity's type is fatal, as in the reference implementation; other types are skipped.
    static func unwrapFileKey(_ stanzas: [AgeHeader.Stanza], identities: [AgeIdentity]) throws(AgeFailure) -> [UInt8] {
        // A passphrase-encrypted file must have its scrypt stanza alone.
        if stanzas.contains(where: { $0.type == "scrypt" }) && stanzas.count > 1 {
            throw .header("an scrypt stanza must be the only stanza")
        }
        for identity in identities {
            for stanza in stanzas {
                if let fileKey = try identity.unwrap(stanza) { return fileKey }
            }
        }
        throw .noMatch
    }

    static func checkMAC(_ header: AgeHeader, fileKey: [UInt8]) throws(AgeFailure) {
        let macKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: fileKey), salt: [UInt8](), info: Array("header".utf8), outputByteCount: 32)
        guard HMAC<SHA256>.isValidAuthenticationCode(header.mac, authenticating: header.authenticatedBytes, using: macKey) else {
            throw .headerMAC
        }
    }

    /// Decrypts the STREAM payload: 64 KiB chunks, each sealed with ChaCha20-Poly1305 under an
    /// 11-byte big-endian counter and a last-chunk flag.
    static func decryptPayload(_ chunks: ArraySlice<UInt8>, fileKey: [UInt8], nonce: [UInt8]) -> (plaintext: [UInt8], failure: AgeFailure?) {
        let key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: fileKey), salt: nonce, info: Array("payload".utf8), outputByteCount: 32)
        let sealedChunkSize = chunkSize + tagSize
        var plaintext: [UInt8] = []
        plaintext.reserveCapacity(chunks.count)
        var position = chunks.startIndex
        var counter: UInt64 = 0
        while true {
            let remaining = chunks.endIndex - position
            if remaining == 0 { return (plaintext, .payload("the last chunk is missing")) }
            var last = remaining < sealedChunkSize
            if last && counter != 0 && remaining == tagSize {
                return (plaintext, .payload("the last chunk is empty"))
            }
            let chunk = chunks[position..<(position + min(remaining, sealedChunkSize))]
            var opened = openChunk(chunk, key: key, counter: counter, last: last)
            if opened == nil && !last {
                // A full-size chunk may be the last one.
                last = true
                opened = openChunk(chunk, key: key, counter: counter, last: true)
            }
            guard let opened else { return (plaintext, .payload("chunk \(counter) does not authenticate")) }
            plaintext += opened
            position = chunk.endIndex
            counter += 1
            if last {
                if position != chunks.endIndex { return (plaintext, .payload("data after the last chunk")) }
                return (plaintext, nil)
            }
        }
    }

    static func openChunk(_ chunk: ArraySlice<UInt8>, key: SymmetricKey, counter: UInt64, last: Bool) -> [UInt8]? {
        guard chunk.count >= tagSize else { return nil }
        var nonce = [UInt8](repeating: 0, count: 12)
        for byte in 0..<8 { nonce[10 - byte] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(byte))) }
        nonce[11] = last ? 1 : 0
        do {
            let box = try ChaChaPoly.SealedBox(
                nonce: ChaChaPoly.Nonce(data: nonce), ciphertext: chunk.dropLast(tagSize), tag: chunk.suffix(tagSize))
            return Array(try ChaChaPoly.open(box, using: key))
        } catch {
            return nil
        }
    }
}
