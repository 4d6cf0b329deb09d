// The age recipient of an SSH ed25519 key, as ssh-to-age (and sops-nix) derive it: the
// Edwards point's y coordinate mapped to the Montgomery u coordinate, u = (1 + y) / (1 − y)
// mod 2^255 − 19 (RFC 7748 §4.1), encoded as `age1…`. Public-key arithmetic only: nothing
// here needs to run in constant time.

import PiflashCore
/// Arithmetic modulo p = 2^255 − 19 on sixteen 16-bit limbs (little-endian), enough for one
/// inversion and two multiplications.
struct Field25519: Equatable {
    var limbs: [Int64]

    init(limbs: [Int64]) { self.limbs = limbs }

    /// From 32 little-endian bytes; the top bit (the sign of x in an Edwards encoding) is ignored.
    init(bytes: [UInt8]) {
        precondition(bytes.count == 32)
        limbs = (0..<16).map { Int64(bytes[2 * $0]) | Int64(bytes[2 * $0 + 1]) << 8 }
        limbs[15] &= 0x7FFF
    }

    static let one = Field25519(limbs: [1] + Array(repeating: 0, count: 15))

    /// Propagates carries; 2^256 ≡ 38 (mod p) folds the top carry back into the first limb.
    mutating func carry() {
        for index in 0..<16 {
            let carry = limbs[index] >> 16
            limbs[index] -= carry << 16
            if index < 15 { limbs[index + 1] += carry } else { limbs[0] += 38 * carry }
        }
    }

    static func + (a: Field25519, b: Field25519) -> Field25519 {
        Field25519(limbs: (0..<16).map { a.limbs[$0] + b.limbs[$0] })
    }

    static func - (a: Field25519, b: Field25519) -> Field25519 {
        Field25519(limbs: (0..<16).map { a.limbs[$0] - b.limbs[$0] })
    }

    static func * (a: Field25519, b: Field25519) -> Field25519 {
        var product = [Int64](repeating: 0, count: 31)
        for i in 0..<16 {
            for j in 0..<16 { product[i + j] += a.limbs[i] * b.limbs[j] }
        }
        for index in 0..<15 { product[index] += 38 * product[index + 16] }
        var result = Field25519(limbs: Array(product[0..<16]))
        result.carry()
        result.carry()
        return result
    }

    /// a^(p−2) = 1/a (Fermat); zero stays zero.
    var inverse: Field25519 {
        var result = self
        // p − 2 = 2^255 − 21: every bit set from 254 down to 0 except bits 2 and 4.
        for bit in stride(from: 253, through: 0, by: -1) {
            result = result * result
            if bit != 2 && bit != 4 { result = result * self }
        }
        return result
    }

    /// The canonical 32 little-endian bytes (fully reduced below p).
    var bytes: [UInt8] {
        var value = self
        value.carry()
        value.carry()
        value.carry()
        for _ in 0..<2 {
            var reduced = [Int64](repeating: 0, count: 16)
            reduced[0] = value.limbs[0] - 0xFFED
            for index in 1..<15 {
                reduced[index] = value.limbs[index] - 0xFFFF - ((reduced[index - 1] >> 16) & 1)
                reduced[index - 1] &= 0xFFFF
            }
            reduced[15] = value.limbs[15] - 0x7FFF - ((reduced[14] >> 16) & 1)
            let borrow = (reduced[15] >> 16) & 1
            reduced[14] &= 0xFFFF
            if borrow == 0 { value.limbs = reduced }
        }
        var output = [UInt8](repeating: 0, count: 32)
        for index in 0..<16 {
            output[2 * index] = UInt8(truncatingIfNeeded: value.limbs[index])
            output[2 * index + 1] = UInt8(truncatingIfNeeded: value.limbs[index] >> 8)
        }
        return output
    }

    var isZero: Bool { bytes.allSatisfy { $0 == 0 } }
}

extension OpenSSHPublicKey {
    /// The X25519 public key of this ed25519 key (Edwards y → Montgomery u), as ssh-to-age
    /// computes it; nil for the identity point (y = 1), which no real key is.
    public var montgomeryPublicKey: [UInt8]? {
        let y = Field25519(bytes: rawPublicKey)
        let denominator = Field25519.one - y
        guard !denominator.isZero else { return nil }
        return ((Field25519.one + y) * denominator.inverse).bytes
    }

    /// The age recipient (`age1…`) whose identity is this key's private half converted by
    /// ssh-to-age: what sops-nix on the host decrypts with when it uses its SSH host key.
    /// - Throws: ``PiflashError`` (exit 2) for a degenerate key.
    public func ageRecipient() throws -> AgeRecipient {
        guard let u = montgomeryPublicKey else {
            throw PiflashError.usage("the SSH host key is the identity point and has no age recipient: it is not a real key")
        }
        return AgeRecipient(publicKey: u)
    }
}
