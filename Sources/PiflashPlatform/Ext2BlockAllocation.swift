#if canImport(Glibc)
import Glibc
#endif
import CExt2fs
import CPiflashShim

/// What an ext2/3/4 superblock says about the filesystem's shape, read with libext2fs
/// (`ext2fs_open2` with `EXT2_FLAG_SUPER_ONLY`: the group descriptors are not read).
public struct Ext2Geometry: Sendable, Equatable {
    /// Block size in bytes.
    public var blockSize: UInt64
    /// Blocks in the filesystem (`s_blocks_count`).
    public var blocksCount: UInt64
    /// The first block the group bitmaps describe (`s_first_data_block`: 1 with 1 KiB blocks, else 0).
    public var firstDataBlock: UInt64
    /// Block groups.
    public var groupCount: UInt32
    /// Where the group descriptor blocks are (block numbers, `ext2fs_descriptor_block_loc2`; scattered
    /// with `meta_bg`).
    public var descriptorBlocks: [UInt64]
    /// Reasons the block bitmaps cannot be trusted to cover every block in use: not cleanly
    /// unmounted, errors recorded, a journal to replay, `bigalloc`. Empty when they can.
    public var distrust: [String]
}

/// The blocks an ext2/3/4 filesystem uses, from its block bitmaps (`ext2fs_read_block_bitmap`, which
/// counts the superblocks, group descriptors, bitmaps, inode tables and the journal as used, and fills
/// in `BLOCK_UNINIT` groups itself).
public struct Ext2UsedBlocks: Sendable, Equatable {
    /// Runs of used blocks, `[start, end)` in block numbers, sorted, not touching each other.
    public var runs: [Range<UInt64>]
    /// Groups whose bitmap shows more free blocks than their descriptor counts (`bg_free_blocks_count`):
    /// the bitmap may miss blocks in use, so it must not be trusted.
    public var groupsWithMissingBlocks: [UInt32]
}

/// Read-only access to an ext2/3/4 filesystem's allocation, for mapping which bytes of an image matter.
public enum Ext2BlockAllocation {
    /// Reads the superblock of the filesystem at byte `offset` of `path` (`EXT2_FLAG_SUPER_ONLY`).
    ///
    /// - Throws: exit-2 ``PiflashError`` when there is no ext2/3/4 filesystem there or libext2fs does not
    ///   support its features; exit 1 for read errors.
    public static func geometry(path: String, offset: UInt64) throws -> Ext2Geometry {
        try withOpen(path: path, offset: offset, flags: Int32(EXT2_FLAG_SUPER_ONLY)) { fs in
            let sb = fs.pointee.super!
            var distrust: [String] = []
            if sb.pointee.s_state & UInt16(EXT2_VALID_FS) == 0 { distrust.append("not cleanly unmounted") }
            if sb.pointee.s_state & UInt16(EXT2_ERROR_FS) != 0 { distrust.append("errors recorded") }
            if ext2fs_has_feature_journal_needs_recovery(sb) != 0 { distrust.append("the journal needs recovery") }
            if ext2fs_has_feature_bigalloc(sb) != 0 { distrust.append("bigalloc") }
            let first = UInt64(sb.pointee.s_first_data_block)
            let descriptorBlocks = (0..<UInt32(fs.pointee.desc_blocks)).map {
                UInt64(ext2fs_descriptor_block_loc2(fs, blk64_t(first), dgrp_t($0)))
            }
            return Ext2Geometry(
                blockSize: UInt64(fs.pointee.blocksize), blocksCount: UInt64(ext2fs_blocks_count(sb)),
                firstDataBlock: first, groupCount: UInt32(fs.pointee.group_desc_count),
                descriptorBlocks: descriptorBlocks, distrust: distrust)
        }
    }

    /// The block numbers of every group's block bitmap (`ext2fs_block_bitmap_loc`), read from the group
    /// descriptors (`ext2fs_open2` without `EXT2_FLAG_SUPER_ONLY`). Locations outside the filesystem
    /// are left out (libext2fs does not read them either).
    public static func blockBitmapBlocks(path: String, offset: UInt64) throws -> [UInt64] {
        try withOpen(path: path, offset: offset, flags: 0) { fs in
            let count = ext2fs_blocks_count(fs.pointee.super)
            return (0..<UInt32(fs.pointee.group_desc_count)).compactMap { group in
                let block = ext2fs_block_bitmap_loc(fs, dgrp_t(group))
                return block > 0 && block < count ? UInt64(block) : nil
            }
        }
    }

    /// Reads the block bitmaps (`ext2fs_read_block_bitmap`, checksums verified) and returns the runs of
    /// used blocks (`ext2fs_find_first_set_block_bitmap2` / `ext2fs_find_first_zero_block_bitmap2`),
    /// with each group's count of free bits checked against its descriptor.
    public static func usedBlocks(path: String, offset: UInt64) throws -> Ext2UsedBlocks {
        try withOpen(path: path, offset: offset, flags: 0) { fs in
            try ext2Check(
                ext2fs_read_block_bitmap(fs), "ext2fs_read_block_bitmap", "cannot read the block bitmaps",
                path: path, offset: offset, status: .usage)
            guard let bitmap = fs.pointee.block_map else { preconditionFailure("ext2fs_read_block_bitmap left no bitmap") }
            let sb = fs.pointee.super!
            let first = UInt64(sb.pointee.s_first_data_block)
            let last = UInt64(ext2fs_blocks_count(sb)) - 1
            var runs: [Range<UInt64>] = []
            var cursor = first
            while cursor <= last {
                // ENOENT means "none in the range"; any other code is an error, never "free".
                var start: blk64_t = 0
                let found = ext2fs_find_first_set_block_bitmap2(bitmap, blk64_t(cursor), blk64_t(last), &start)
                if found == errcode_t(ENOENT) { break }
                try ext2Check(found, "ext2fs_find_first_set_block_bitmap2", "cannot search the block bitmap", path: path, offset: offset)
                var end: blk64_t = 0
                let zero = ext2fs_find_first_zero_block_bitmap2(bitmap, start, blk64_t(last), &end)
                let end64: UInt64
                if zero == errcode_t(ENOENT) {
                    end64 = last + 1
                } else {
                    try ext2Check(zero, "ext2fs_find_first_zero_block_bitmap2", "cannot search the block bitmap", path: path, offset: offset)
                    end64 = UInt64(end)
                }
                runs.append(UInt64(start)..<end64)
                cursor = end64
            }
            // Per group: free bits counted in the bitmap must not exceed the descriptor's free count.
            let perGroup = UInt64(sb.pointee.s_blocks_per_group)
            let groups = Int(fs.pointee.group_desc_count)
            var used = [UInt64](repeating: 0, count: groups)
            for run in runs {
                var b = run.lowerBound
                while b < run.upperBound {
                    let group = Int((b - first) / perGroup)
                    let groupEnd = min(run.upperBound, first + UInt64(group + 1) * perGroup)
                    used[group] += groupEnd - b
                    b = groupEnd
                }
            }
            var missing: [UInt32] = []
            for group in 0..<groups {
                let groupFirst = first + UInt64(group) * perGroup
                let groupBlocks = min(perGroup, last + 1 - groupFirst)
                let freeInBitmap = groupBlocks - used[group]
                if freeInBitmap > UInt64(ext2fs_bg_free_blocks_count(fs, dgrp_t(group))) { missing.append(UInt32(group)) }
            }
            return Ext2UsedBlocks(runs: runs, groupsWithMissingBlocks: missing)
        }
    }

    /// Opens read-only with the unix I/O manager at `offset`, runs `body`, closes.
    private static func withOpen<T>(path: String, offset: UInt64, flags: Int32, _ body: (ext2_filsys) throws -> T) throws -> T {
        registerExt2ErrorTable()
        var fs: ext2_filsys?
        let code = ext2fs_open2(path, "offset=\(offset)", Int32(EXT2_FLAG_64BITS) | flags, 0, 0, piflash_unix_io_manager(), &fs)
        guard code == 0, let fs else {
            throw ext2Error(
                code, "ext2fs_open2", "cannot open the ext2/3/4 filesystem at byte \(offset)", path: path, offset: offset,
                status: .usage)
        }
        defer { var handle: ext2_filsys? = fs; _ = ext2fs_close_free(&handle) }
        return try body(fs)
    }
}
