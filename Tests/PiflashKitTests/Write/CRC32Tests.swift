import PiflashPlatform
import Testing

/// `crc32` folds with PCLMULQDQ where the CPU has it and uses zlib for the rest: it must give the
/// standard CRC-32 (zlib's, gzip's) for every length, alignment and running value.
@Suite("CRC-32 of the write path's chunks")
struct CRC32Tests {
    /// The textbook bit-at-a-time CRC-32 (reflected, polynomial 0xEDB88320), as the reference.
    static func reference(_ crc: UInt32, _ bytes: [UInt8]) -> UInt32 {
        var c = ~crc
        for byte in bytes {
            c ^= UInt32(byte)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
        }
        return ~c
    }

    static func crc(_ seed: UInt32, _ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBytes { crc32(seed, $0) }
    }

    @Test("the check value and known vectors")
    func knownValues() {
        #expect(Self.crc(0, Array("123456789".utf8)[...]) == 0xCBF4_3926)
        #expect(Self.crc(0, [][...]) == 0)
        // 1 MiB of zeros and of a byte ramp, long enough for the folded path (values from zlib).
        #expect(Self.crc(0, [UInt8](repeating: 0, count: 1 << 20)[...]) == 0xA738_EA1C)
        #expect(Self.crc(0, (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }[...]) == 0xD424_BDC1)
    }

    @Test("every length and offset from 0 to 300 bytes, and random long ones, match the reference")
    func matchesReference() {
        var generator = SystemRandomNumberGenerator()
        let data = (0..<(1 << 16) + 64).map { _ in UInt8.random(in: 0...255, using: &generator) }
        for length in 0...300 {
            for offset in [0, 1, 7, 15] {
                let slice = data[offset..<(offset + length)]
                #expect(Self.crc(0, slice) == Self.reference(0, Array(slice)), "length \(length) at offset \(offset)")
            }
        }
        for _ in 0..<40 {
            let offset = Int.random(in: 0..<64, using: &generator)
            let length = Int.random(in: 64...(1 << 16), using: &generator)
            let seed = UInt32.random(in: 0...UInt32.max, using: &generator)
            let slice = data[offset..<(offset + length)]
            #expect(Self.crc(seed, slice) == Self.reference(seed, Array(slice)), "length \(length), seed \(seed)")
        }
    }

    @Test("continuing from a previous value equals one pass")
    func continues() {
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        let whole = Self.crc(0, data[...])
        for split in [0, 1, 63, 64, 65, 4096, 99_999, 100_000] {
            #expect(Self.crc(Self.crc(0, data[..<split]), data[split...]) == whole, "split at \(split)")
        }
    }
}
