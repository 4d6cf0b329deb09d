import PiflashPlatform

/// The free space of an ext2/3/4 filesystem, from its block bitmaps read by libext2fs.
///
/// Mapped: every block the bitmaps mark used — libext2fs counts the superblocks and their backups,
/// the group descriptors and reserved GDT blocks, the bitmaps, the inode tables and the journal as
/// used, and fills in `BLOCK_UNINIT` groups (`uninit_bg`, `metadata_csum`, `flex_bg` placements) itself
/// — plus the bytes before the first data block (the 1 KiB boot block of 1 KiB-block filesystems) and
/// anything in the partition after the filesystem's last block. Left out: blocks the bitmaps mark free.
///
/// Mapped in full (doubts): a filesystem not cleanly unmounted, with errors recorded, with a journal to
/// replay (the replay could allocate blocks the bitmaps do not show yet), with `bigalloc`, larger than
/// its partition, whose bitmaps fail their checksums, or where a group's bitmap shows more free
/// blocks than its descriptor counts.
enum Ext4Map {
    /// Bytes libext2fs reads to find the superblock: 1024 bytes at 1024 into the filesystem.
    static let superblock: Range<UInt64> = 1024..<2048

    /// The free blocks' bytes (relative to the image) of the ext2/3/4 filesystem at the start of `partition`.
    ///
    /// Three steps, each asking only for bytes that come later in the image than what it read: the
    /// superblock; the group descriptors; the block bitmaps. ``MapInput/require(_:)`` throws ``MapNeed``
    /// until each step's bytes have passed.
    static func holes(in partition: Range<UInt64>, input: MapInput) throws -> (summary: String, holes: ByteRanges) {
        let base = partition.lowerBound
        try input.require([base + superblock.lowerBound..<base + superblock.upperBound])
        let geometry = try opening { try Ext2BlockAllocation.geometry(path: input.path, offset: base) }
        if let reason = geometry.distrust.first { throw MapDoubt("the ext filesystem is \(reason)") }
        let bs = geometry.blockSize
        let fsBytes = geometry.blocksCount * bs
        guard base + fsBytes <= partition.upperBound else {
            throw MapDoubt("the ext filesystem (\(fsBytes) bytes) is larger than its partition")
        }
        try input.require(geometry.descriptorBlocks.map { base + $0 * bs..<base + ($0 + 1) * bs })
        let bitmaps = try opening { try Ext2BlockAllocation.blockBitmapBlocks(path: input.path, offset: base) }
        try input.require(bitmaps.map { base + $0 * bs..<base + ($0 + 1) * bs })
        let used = try opening { try Ext2BlockAllocation.usedBlocks(path: input.path, offset: base) }
        if let group = used.groupsWithMissingBlocks.first {
            throw MapDoubt("block group \(group)'s bitmap shows more free blocks than its descriptor counts")
        }
        let described = ByteRanges([base + geometry.firstDataBlock * bs..<base + fsBytes])
        let usedBytes = ByteRanges(used.runs.map { base + $0.lowerBound * bs..<base + $0.upperBound * bs })
        let holes = described.subtracting(usedBytes)
        let summary =
            "ext, \(geometry.blocksCount) blocks of \(bs) bytes, \(holes.count / bs) free"
        return (summary, holes)
    }

    /// Runs a libext2fs step; its failures (bad magic, checksums, unsupported features) become doubts.
    private static func opening<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as PiflashError {
            throw MapDoubt(error.message)
        }
    }
}
