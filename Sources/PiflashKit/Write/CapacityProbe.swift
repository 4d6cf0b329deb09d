import Glibc
import PiflashPlatform

/// The quick capacity sanity check: a counterfeit card claims more than it has and wraps writes
/// past its real end onto its beginning. Write distinct random markers at the start and in the last
/// MiB, flush, drop caches, and read both back with `O_DIRECT`.
public enum CapacityProbe {
    static let markerSize = 4096

    /// Checks that the device keeps data written in its last MiB without it landing elsewhere.
    /// - Throws: exit 4 when a marker does not read back (a bad or counterfeit card), exit 1 for I/O errors.
    public static func check(_ target: borrowing DeviceFile, size: UInt64) throws {
        guard size >= 2 << 20 else { return }
        let tail = (size - (1 << 20)) / UInt64(markerSize) * UInt64(markerSize)
        let head = AlignedBuffer(count: markerSize)
        let end = AlignedBuffer(count: markerSize)
        fillRandom(head, stamp: "piflash capacity marker, start")
        fillRandom(end, stamp: "piflash capacity marker at byte \(tail)")
        // The marker at byte 0 must never read as a partition table (MBR entries and signature),
        // should the job stop right after writing it.
        (head.bytes.baseAddress! + 440).initializeMemory(as: UInt8.self, repeating: 0, count: 512 - 440)
        head.used = markerSize
        end.used = markerSize
        try target.write(head.filled, at: 0)
        try target.write(end.filled, at: tail)
        try target.sync()
        try target.dropCaches()
        let check = AlignedBuffer(count: markerSize)
        for (marker, offset) in [(end, tail), (head, UInt64(0))] {
            let got = try target.read(into: check.bytes, at: offset)
            if got != markerSize || memcmp(check.bytes.baseAddress!, marker.bytes.baseAddress!, markerSize) != 0 {
                throw PiflashError.verification(
                    offset == 0
                        ? "data written near the card's end (byte \(tail)) overwrote its beginning: the card is smaller than the \(formatBytes(size)) it claims (counterfeit?)"
                        : "data written at byte \(tail), in the card's last MiB, did not read back: the card is smaller than the \(formatBytes(size)) it claims or failing",
                    path: target.path, offset: offset == 0 ? tail : offset)
            }
        }
    }

    private static func fillRandom(_ buffer: AlignedBuffer, stamp: String) {
        var generator = SystemRandomNumberGenerator()
        let words = buffer.bytes.bindMemory(to: UInt64.self)
        for i in words.indices { words[i] = generator.next() }
        _ = buffer.bytes.initializeMemory(as: UInt8.self, from: Array(stamp.utf8).prefix(markerSize))
    }
}
