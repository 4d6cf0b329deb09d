/// The byte ranges of an image that matter ("mapped"), computed from the image itself; the rest is
/// free space of a filesystem piflash understands, whose content no reader of that filesystem sees.
///
/// The rules (one place decides them; ``ImageMapper`` applies them):
/// - Everything outside a recognised filesystem is mapped: the partition tables (the MBR sector; the
///   primary GPT header and entries; the backup GPT entries and header at the end), the gaps between
///   and before partitions (other boards keep boot loaders there), extended partitions and their
///   logical partitions, partitions of a type piflash does not understand, partitions overlapping
///   another, and everything after the last partition.
/// - A filesystem is recognised only when the partition's type allows it (MBR `0x83`; GPT Linux
///   filesystem data and the discoverable root, /home and /srv types; MBR `0x01 0x04 0x06 0x0b 0x0c 0x0e
///   0xef`, GPT basic data and EFI System for FAT; the GPT extended boot loader type for both) AND its
///   content proves it.
/// - Inside ext2/3/4 only the blocks the block bitmaps mark used are mapped (libext2fs
///   `ext2fs_read_block_bitmap`: metadata, journal and inode tables count as used) — see ``Ext4Map``.
/// - Inside FAT12/16/32: the reserved area, every FAT, the root directory (FAT12/16) and the clusters
///   any FAT copy marks non-zero (bad clusters too) — see ``FATMap``.
/// - Any doubt (a check failing, a table or filesystem not understood, a filesystem not cleanly
///   unmounted or larger than its partition) maps that whole partition, or for the table the whole
///   image: the map never leaves out a byte it is not sure about.
/// - Ranges are rounded outward to ``granularity`` (4 KiB); ``ranges(alignedTo:)`` rounds them further.
public struct ImageMap: Sendable, Equatable {
    /// The map's own rounding: every range starts and ends on a multiple of this (or at the image's end).
    public static let granularity: UInt64 = 4096

    /// The uncompressed image's size in bytes. Whoever writes by this map must check the image stream
    /// has exactly this many bytes.
    public let imageBytes: UInt64
    /// The mapped ranges: sorted, non-overlapping, merged, within `0..<imageBytes`.
    public let ranges: [Range<UInt64>]
    /// What the map decided for each part of the image, for reports and the journal.
    public let regions: [Region]

    /// One decision of the map.
    public struct Region: Sendable, Equatable {
        /// The bytes it is about.
        public var range: Range<UInt64>
        /// What is there: `"partition table"`, `"partition 2 (0x83): ext, 16384 blocks of 1024 bytes, 4100 free"`…
        public var summary: String
        /// Why it is mapped in full, when it is (a doubt, or not a filesystem piflash understands).
        public var mappedInFullBecause: String?
    }

    /// Bytes mapped.
    public var mappedBytes: UInt64 { ranges.reduce(0) { $0 + UInt64($1.count) } }

    /// Mapped bytes as a fraction of the image (1 for an empty image).
    public var mappedFraction: Double { imageBytes == 0 ? 1 : Double(mappedBytes) / Double(imageBytes) }

    /// A map from the mapped set, rounded outward to ``granularity`` and clamped to the image.
    init(imageBytes: UInt64, mapped: ByteRanges, regions: [Region]) {
        self.imageBytes = imageBytes
        ranges = mapped.clamped(to: 0..<imageBytes).roundedOutward(to: Self.granularity, limit: imageBytes).ranges
        self.regions = regions
    }

    /// The map that maps every byte (for `--full`, or when the image is not understood).
    public static func full(imageBytes: UInt64, because reason: String) -> ImageMap {
        ImageMap(
            imageBytes: imageBytes, mapped: ByteRanges([0..<imageBytes]),
            regions: [Region(range: 0..<imageBytes, summary: "the whole image", mappedInFullBecause: reason)])
    }

    /// The mapped ranges rounded outward to multiples of `unit` (a sector, a write chunk) and merged,
    /// the last one ending at most at ``imageBytes`` (which need not be a multiple of `unit`).
    ///
    /// - Parameter unit: bytes, greater than 0; typically a power of two ≥ 512.
    public func ranges(alignedTo unit: UInt64) -> [Range<UInt64>] {
        ByteRanges(ranges).roundedOutward(to: unit, limit: imageBytes).ranges
    }

    /// Whether every byte of `range` is mapped.
    public func isMapped(_ range: Range<UInt64>) -> Bool { ByteRanges(ranges).contains(range) }
}
