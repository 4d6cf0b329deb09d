// Bech32 (BIP 173) without the 90-character limit, as age uses it for keys.

/// Bech32 encoding of age identities (`AGE-SECRET-KEY-1…`) and recipients (`age1…`).
enum Bech32 {
    private static let charset = Array("qpzry9x8gf2tvdw0s3jn54khce6mua7l".utf8)

    private static let charsetIndex: [Int8] = {
        var table = [Int8](repeating: -1, count: 256)
        for (index, character) in charset.enumerated() { table[Int(character)] = Int8(index) }
        return table
    }()

    private static func polymod(_ values: [UInt8]) -> UInt32 {
        let generator: [UInt32] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3]
        var checksum: UInt32 = 1
        for value in values {
            let top = checksum >> 25
            checksum = (checksum & 0x1ff_ffff) << 5 ^ UInt32(value)
            for bit in 0..<5 where (top >> UInt32(bit)) & 1 == 1 {
                checksum ^= generator[bit]
            }
        }
        return checksum
    }

    private static func expand(_ hrp: [UInt8]) -> [UInt8] {
        hrp.map { $0 >> 5 } + [0] + hrp.map { $0 & 31 }
    }

    /// Regroups bits (8 → 5 when encoding, 5 → 8 when decoding); nil when the padding is not canonical.
    private static func convertBits(_ data: [UInt8], from: Int, to: Int, pad: Bool) -> [UInt8]? {
        var accumulator = 0
        var bits = 0
        var output: [UInt8] = []
        let maxValue = (1 << to) - 1
        for value in data {
            accumulator = (accumulator << from) | Int(value)
            bits += from
            while bits >= to {
                bits -= to
                output.append(UInt8((accumulator >> bits) & maxValue))
            }
        }
        if pad {
            if bits > 0 { output.append(UInt8((accumulator << (to - bits)) & maxValue)) }
        } else if bits >= from || (accumulator << (to - bits)) & maxValue != 0 {
            return nil
        }
        return output
    }

    /// The human-readable part (lowercased) and the data of a Bech32 string, or nil when it is
    /// malformed, mixed-case or its checksum is wrong.
    static func decode(_ text: String) -> (hrp: String, data: [UInt8])? {
        let bytes = Array(text.utf8)
        let lower = bytes.contains { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }
        let upper = bytes.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }
        if lower && upper { return nil }
        guard bytes.allSatisfy({ $0 >= 33 && $0 <= 126 }) else { return nil }
        let folded = bytes.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 32 : $0 }
        guard let separator = folded.lastIndex(of: UInt8(ascii: "1")), separator >= 1,
            folded.count - separator - 1 >= 6
        else { return nil }
        let hrp = Array(folded[..<separator])
        var values: [UInt8] = []
        for character in folded[(separator + 1)...] {
            let value = charsetIndex[Int(character)]
            if value < 0 { return nil }
            values.append(UInt8(value))
        }
        guard polymod(expand(hrp) + values) == 1 else { return nil }
        guard let data = convertBits(Array(values.dropLast(6)), from: 5, to: 8, pad: false) else { return nil }
        return (String(decoding: hrp, as: UTF8.self), data)
    }

    /// `data` in Bech32 under the (lowercase) human-readable part `hrp`.
    static func encode(hrp: String, data: [UInt8]) -> String {
        let hrpBytes = Array(hrp.utf8)
        let values = convertBits(data, from: 8, to: 5, pad: true) ?? []
        let checksumInput = expand(hrpBytes) + values + [0, 0, 0, 0, 0, 0]
        let checksum = polymod(checksumInput) ^ 1
        var output = hrpBytes + [UInt8(ascii: "1")]
        for value in values { output.append(charset[Int(value)]) }
        for index in 0..<6 { output.append(charset[Int((checksum >> UInt32(5 * (5 - index))) & 31)]) }
        return String(decoding: output, as: UTF8.self)
    }
}
