#if canImport(Glibc)
import Glibc
#endif
import CExt2fs
import CPiflashShim

/// An inode number inside an ext2/3/4 filesystem.
public typealias Ext2InodeNumber = UInt32

/// What `stat` would say about an inode, read with libext2fs.
public struct Ext2Stat: Sendable, Equatable {
    /// The inode number.
    public var inode: Ext2InodeNumber
    /// The full mode: file type bits and permission bits.
    public var mode: UInt16
    /// uid, with the high 16 bits (`l_i_uid_high`).
    public var uid: UInt32
    /// gid, with the high 16 bits (`l_i_gid_high`).
    public var gid: UInt32
    /// Size in bytes (`i_size` with `i_size_high`).
    public var size: UInt64
    /// Hard links (`i_links_count`).
    public var linksCount: UInt16
    /// Blocks in use, in 512-byte units, as `stat(2)` counts them (`ext2fs_get_stat_i_blocks`).
    public var sectors: UInt64
    /// Access, modification and change times, in seconds since the epoch (the 32-bit fields).
    public var atime: Int64
    public var mtime: Int64
    public var ctime: Int64

    /// Permission bits only (e.g. `0o600`), including setuid, setgid and sticky.
    public var permissions: UInt16 { mode & 0o7777 }
    /// Whether the inode is a directory, a regular file, a symlink.
    public var isDirectory: Bool { mode & Ext2Filesystem.typeMask == Ext2Filesystem.directoryType }
    public var isRegularFile: Bool { mode & Ext2Filesystem.typeMask == Ext2Filesystem.regularType }
    public var isSymlink: Bool { mode & Ext2Filesystem.typeMask == Ext2Filesystem.symlinkType }
    /// `directory`, `regular file`, `symlink` or `special file`, for messages.
    public var kind: String {
        isDirectory ? "directory" : isRegularFile ? "regular file" : isSymlink ? "symlink" : "special file"
    }
}

/// An ext2/3/4 filesystem opened in place with libext2fs (`ext2_filsys`), at a byte offset inside a
/// block device or image file. Used from one thread.
///
/// Close it with ``close()`` so a flush error is never lost; `deinit` closes it too (ignoring errors)
/// when a failure left it open. Prefer ``withFilesystem(path:offset:access:_:)``.
public final class Ext2Filesystem {
    /// How the filesystem is opened.
    public enum Access: Sendable {
        /// Read-write (`EXT2_FLAG_RW | EXT2_FLAG_64BITS`), bitmaps loaded, for changing files.
        case readWrite
        /// Read-only through the page cache.
        case readOnly
        /// Read-only with `O_DIRECT` (`EXT2_FLAG_DIRECT_IO`): reads what the medium holds, not a cache.
        case readOnlyDirect
    }

    static let typeMask: UInt16 = 0o170000
    static let regularType: UInt16 = 0o100000
    static let directoryType: UInt16 = 0o040000
    static let symlinkType: UInt16 = 0o120000
    /// The root directory's inode (`EXT2_ROOT_INO`).
    public static let rootInode: Ext2InodeNumber = 2

    private var handle: ext2_filsys?
    /// The log receiving this filesystem's writes, kept alive while the channel may call it.
    private let writeLog: Ext2WriteLog?
    /// The device or image file.
    public let path: String
    /// The byte offset of the filesystem inside ``path``.
    public let offset: UInt64
    /// How it was opened.
    public let access: Access

    private init(handle: ext2_filsys, path: String, offset: UInt64, access: Access, writeLog: Ext2WriteLog?) {
        self.handle = handle
        self.writeLog = writeLog
        self.path = path
        self.offset = offset
        self.access = access
    }

    /// Opens the filesystem that starts `offset` bytes into `path` (`ext2fs_open2` with io_options
    /// `offset=N` and the unix I/O manager); for ``Access/readWrite`` also reads the block and inode
    /// bitmaps (`ext2fs_read_bitmaps`).
    ///
    /// With a `writeLog`, the filesystem is opened through piflash's recording I/O manager (a thin
    /// layer over the unix one, `piflash_recording_io_manager`): every block libext2fs writes,
    /// until ``close()`` has flushed, is reported to the log with its bytes.
    ///
    /// - Throws: ``PiflashError``: exit 2 when there is no ext2/3/4 filesystem there or it has
    ///   features this libext2fs cannot write; exit 1 for I/O errors.
    ///
    /// With a `descriptor` (the flash job's exclusive handle of `path`), nothing is opened by path:
    /// libext2fs gets a duplicate of the descriptor (`unixfd_io_manager`, which closes the duplicate
    /// when the filesystem closes) — the same open file, so the card stays held exclusively. The
    /// descriptor must not be in `O_DIRECT` mode (libext2fs' descriptor manager does unaligned I/O):
    /// see ``DeviceFile/withBufferedIO(_:path:_:)``; `.readOnlyDirect` then reads through the page
    /// cache, which the caller drops first.
    public static func open(
        path: String, offset: UInt64, access: Access, writeLog: Ext2WriteLog? = nil, descriptor: Int32? = nil
    ) throws -> Ext2Filesystem {
        registerExt2ErrorTable()
        var flags = Int32(EXT2_FLAG_64BITS)
        switch access {
        case .readWrite: flags |= Int32(EXT2_FLAG_RW)
        case .readOnly: break
        case .readOnlyDirect: if descriptor == nil { flags |= Int32(EXT2_FLAG_DIRECT_IO) }
        }
        var fs: ext2_filsys?
        var name = path
        if let descriptor {
            let copy = dup(descriptor)
            guard copy >= 0 else { throw PiflashError.system("dup", errno: errno, path: path) }
            name = String(copy)
        }
        let manager: io_manager
        if let writeLog {
            manager = piflash_recording_io_manager()
            piflash_recording_io_arm({ context, offset, length, data in
                Unmanaged<Ext2WriteLog>.fromOpaque(context!).takeUnretainedValue()
                    .record(offset: offset, length: length, data: data)
            }, Unmanaged.passUnretained(writeLog).toOpaque())
            piflash_recording_io_arm_descriptor(descriptor == nil ? 0 : 1)
        } else {
            manager = descriptor == nil ? piflash_unix_io_manager() : piflash_unixfd_io_manager()
        }
        let code = ext2fs_open2(name, "offset=\(offset)", flags, 0, 0, manager, &fs)
        // A failed open may not have reached the manager: never leave the recorder armed.
        piflash_recording_io_arm(nil, nil)
        piflash_recording_io_arm_descriptor(0)

        guard code == 0, let fs else {
            let notExt = [EXT2_ET_BAD_MAGIC, EXT2_ET_UNSUPP_FEATURE, EXT2_ET_RO_UNSUPP_FEATURE, EXT2_ET_CORRUPT_SUPERBLOCK]
                .contains(Int(code))
            throw ext2Error(
                code, "ext2fs_open2", "cannot open the ext4 filesystem at byte \(offset)", path: path, offset: offset,
                status: notExt ? .usage : .failure)
        }
        let filesystem = Ext2Filesystem(handle: fs, path: path, offset: offset, access: access, writeLog: writeLog)
        if access == .readWrite {
            try ext2Check(
                ext2fs_read_bitmaps(fs), "ext2fs_read_bitmaps", "cannot read the allocation bitmaps", path: path,
                offset: offset)
        }
        return filesystem
    }

    /// Opens the filesystem, runs `body`, and closes it with ``close()`` (flushing, and throwing a
    /// flush error) whether or not `body` threw; `body`'s error wins.
    public static func withFilesystem<T>(
        path: String, offset: UInt64, access: Access, writeLog: Ext2WriteLog? = nil, descriptor: Int32? = nil,
        _ body: (Ext2Filesystem) throws -> T
    ) throws -> T {
        let fs = try open(path: path, offset: offset, access: access, writeLog: writeLog, descriptor: descriptor)
        let result: T
        do {
            result = try body(fs)
        } catch {
            try? fs.close()
            throw error
        }
        try fs.close()
        return result
    }

    deinit {
        if handle != nil { _ = ext2fs_close_free(&handle) }
    }

    /// Flushes everything (superblock, group descriptors, bitmaps, cached blocks, then `fsync`) and
    /// closes (`ext2fs_close_free`). Calling it twice is a programming error.
    public func close() throws {
        precondition(handle != nil, "Ext2Filesystem closed twice")
        let code = ext2fs_close_free(&handle)
        handle = nil
        try ext2Check(code, "ext2fs_close_free", "cannot flush the root filesystem", path: path, offset: offset)
    }

    private var fs: ext2_filsys {
        guard let handle else { preconditionFailure("Ext2Filesystem used after close") }
        return handle
    }

    // MARK: Facts

    /// The block size in bytes.
    public var blockSize: Int { Int(fs.pointee.blocksize) }
    /// Free blocks, from the superblock.
    public var freeBlocks: UInt64 { UInt64(ext2fs_free_blocks_count(fs.pointee.super)) }
    /// Free inodes, from the superblock.
    public var freeInodes: UInt64 { UInt64(fs.pointee.super.pointee.s_free_inodes_count) }
    /// The filesystem's volume label.
    public var label: String {
        withUnsafeBytes(of: fs.pointee.super.pointee.s_volume_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
    /// Whether the journal holds transactions not yet replayed (`needs_recovery`): writing behind
    /// the journal's back would then lose them or corrupt the filesystem.
    public var needsJournalRecovery: Bool {
        ext2fs_has_feature_journal_needs_recovery(fs.pointee.super) != 0
    }
    /// Whether new files store data in extents (the `extent` feature).
    public var hasExtents: Bool { ext2fs_has_feature_extents(fs.pointee.super) != 0 }

    // MARK: Lookup

    /// The inode of `name` in directory `directory`, or nil when there is no such entry
    /// (`ext2fs_lookup`). Follows nothing.
    public func lookup(_ name: String, in directory: Ext2InodeNumber) throws -> Ext2InodeNumber? {
        var inode: ext2_ino_t = 0
        let bytes = Array(name.utf8)
        let code = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                ext2fs_lookup(fs, directory, $0.baseAddress, Int32(bytes.count), nil, &inode)
            }
        }
        if code == EXT2_ET_FILE_NOT_FOUND { return nil }
        try ext2Check(code, "ext2fs_lookup", "cannot look up \(name) in a directory", path: path, offset: offset)
        return inode
    }

    /// The inode at an absolute path (`ext2fs_namei`: symlinks among the parents are followed, a
    /// symlink as the last component is not), or nil when it does not exist.
    public func inode(atPath absolutePath: String) throws -> Ext2InodeNumber? {
        var inode: ext2_ino_t = 0
        let code = ext2fs_namei(fs, Self.rootInode, Self.rootInode, absolutePath, &inode)
        if code == EXT2_ET_FILE_NOT_FOUND { return nil }
        try ext2Check(code, "ext2fs_namei", "cannot look up \(absolutePath)", path: path, offset: offset)
        return inode
    }

    /// Reads an inode (`ext2fs_read_inode_full`).
    public func stat(_ inode: Ext2InodeNumber) throws -> Ext2Stat {
        let raw = try readInode(inode)
        var small = raw.smallView
        let sectors = ext2fs_get_stat_i_blocks(fs, &small)
        return Ext2Stat(
            inode: inode, mode: raw.i_mode,
            uid: UInt32(raw.i_uid) | UInt32(raw.osd2.linux2.l_i_uid_high) << 16,
            gid: UInt32(raw.i_gid) | UInt32(raw.osd2.linux2.l_i_gid_high) << 16,
            size: UInt64(raw.i_size) | UInt64(raw.i_size_high) << 32,
            linksCount: raw.i_links_count, sectors: UInt64(sectors),
            atime: Int64(raw.i_atime), mtime: Int64(raw.i_mtime), ctime: Int64(raw.i_ctime))
    }

    // MARK: Changes

    /// Creates directory `name` in `parent` (`ext2fs_mkdir`, growing the parent with
    /// `ext2fs_expand_dir` when it is full) and sets its permissions, owner and times.
    ///
    /// - Returns: the new directory's inode.
    @discardableResult
    public func makeDirectory(
        _ name: String, in parent: Ext2InodeNumber, permissions: UInt16, uid: UInt32, gid: UInt32, time: timespec
    ) throws -> Ext2InodeNumber {
        var code = ext2fs_mkdir(fs, parent, 0, name)
        if code == EXT2_ET_DIR_NO_SPACE {
            try ext2Check(
                ext2fs_expand_dir(fs, parent), "ext2fs_expand_dir", "cannot grow a directory to add \(name)",
                path: path, offset: offset)
            code = ext2fs_mkdir(fs, parent, 0, name)
        }
        try ext2Check(code, "ext2fs_mkdir", "cannot create directory \(name)", path: path, offset: offset)
        guard let inode = try lookup(name, in: parent) else {
            throw PiflashError.failure("directory \(name) vanished right after it was created", path: path)
        }
        try setAttributes(inode, type: Self.directoryType, permissions: permissions, uid: uid, gid: gid, time: time)
        return inode
    }

    /// Writes a regular file `name` in `parent` holding exactly `content`, then sets its permissions,
    /// owner and times (atime = mtime = ctime = `time`).
    ///
    /// A new file gets a new inode (`ext2fs_new_inode`, `ext2fs_link` — growing the directory with
    /// `ext2fs_expand_dir` when full —, `ext2fs_inode_alloc_stats2`, extents initialised as
    /// `mke2fs -d` does, `ext2fs_write_new_inode`). An existing regular file (`existing`) with one
    /// link is truncated in place (`ext2fs_punch` frees every old block) and rewritten; one with
    /// several hard links is unlinked from this name and replaced by a new inode, so the other names
    /// keep their content. Data goes through `ext2fs_file_open`/`write`/`flush`/`close`.
    ///
    /// - Returns: the file's inode.
    @discardableResult
    public func writeFile(
        _ name: String, in parent: Ext2InodeNumber, replacing existing: Ext2InodeNumber?, content: UnsafeRawBufferPointer,
        permissions: UInt16, uid: UInt32, gid: UInt32, time: timespec
    ) throws -> Ext2InodeNumber {
        let target: Ext2InodeNumber
        if let existing, try stat(existing).linksCount <= 1 {
            target = existing
            try truncate(existing)
        } else {
            if let existing { try unlinkOneName(name, of: existing, in: parent) }
            target = try createEmptyFile(name, in: parent, permissions: permissions)
        }
        try writeContent(content, to: target, named: name)
        try setAttributes(target, type: Self.regularType, permissions: permissions, uid: uid, gid: gid, time: time)
        return target
    }

    /// Reads a whole regular file (`ext2fs_file_open` / `ext2fs_file_read`).
    public func readFile(_ inode: Ext2InodeNumber) throws -> [UInt8] {
        var file: ext2_file_t?
        try ext2Check(
            ext2fs_file_open(fs, inode, 0, &file), "ext2fs_file_open", "cannot open inode \(inode) for reading",
            path: path, offset: offset)
        guard let file else { preconditionFailure("ext2fs_file_open succeeded without a file") }
        defer { ext2fs_file_close(file) }
        var size: UInt64 = 0
        try ext2Check(ext2fs_file_get_lsize(file, &size), "ext2fs_file_get_lsize", "cannot size inode \(inode)", path: path)
        var bytes = [UInt8](repeating: 0, count: Int(size))
        var done = 0
        while done < bytes.count {
            var got: UInt32 = 0
            let want = UInt32(min(bytes.count - done, 1 << 20))
            let code = bytes.withUnsafeMutableBytes { buffer in
                ext2fs_file_read(file, buffer.baseAddress! + done, want, &got)
            }
            try ext2Check(code, "ext2fs_file_read", "cannot read inode \(inode)", path: path, offset: offset)
            if got == 0 {
                throw PiflashError.verification("inode \(inode) ended after \(done) of \(size) bytes", path: path)
            }
            done += Int(got)
        }
        return bytes
    }

    // MARK: Internals

    private func readInode(_ inode: Ext2InodeNumber) throws -> ext2_inode_large {
        var raw = ext2_inode_large()
        let code = withUnsafeMutablePointer(to: &raw) { pointer in
            pointer.withMemoryRebound(to: ext2_inode.self, capacity: 1) {
                ext2fs_read_inode_full(fs, inode, $0, Int32(MemoryLayout<ext2_inode_large>.size))
            }
        }
        try ext2Check(code, "ext2fs_read_inode_full", "cannot read inode \(inode)", path: path, offset: offset)
        return raw
    }

    private func writeInode(_ inode: Ext2InodeNumber, _ raw: inout ext2_inode_large) throws {
        let code = withUnsafeMutablePointer(to: &raw) { pointer in
            pointer.withMemoryRebound(to: ext2_inode.self, capacity: 1) {
                ext2fs_write_inode_full(fs, inode, $0, Int32(MemoryLayout<ext2_inode_large>.size))
            }
        }
        try ext2Check(code, "ext2fs_write_inode_full", "cannot write inode \(inode)", path: path, offset: offset)
    }

    /// Sets type + permissions, uid and gid (with their high 16 bits), and atime/mtime/ctime
    /// (with nanoseconds where the inode has room for them).
    private func setAttributes(
        _ inode: Ext2InodeNumber, type: UInt16, permissions: UInt16, uid: UInt32, gid: UInt32, time: timespec
    ) throws {
        var raw = try readInode(inode)
        raw.i_mode = type | (permissions & 0o7777)
        raw.i_uid = UInt16(truncatingIfNeeded: uid)
        raw.osd2.linux2.l_i_uid_high = UInt16(truncatingIfNeeded: uid >> 16)
        raw.i_gid = UInt16(truncatingIfNeeded: gid)
        raw.osd2.linux2.l_i_gid_high = UInt16(truncatingIfNeeded: gid >> 16)
        let seconds = UInt32(truncatingIfNeeded: time.tv_sec)
        raw.i_atime = seconds
        raw.i_mtime = seconds
        raw.i_ctime = seconds
        // The extra time fields follow i_extra_isize, i_checksum_hi: ctime, mtime, atime (4 bytes each).
        if fs.pointee.super.pointee.s_inode_size > 128 && raw.i_extra_isize >= 16 {
            let extra = UInt32(truncatingIfNeeded: time.tv_nsec) << 2 | UInt32((time.tv_sec >> 32) & 3)
            raw.i_atime_extra = extra
            raw.i_mtime_extra = extra
            raw.i_ctime_extra = extra
        }
        try writeInode(inode, &raw)
    }

    /// Frees every block of a regular file and sets its size to 0 (`ext2fs_punch`); the inode, its
    /// name, owner and mode stay.
    public func truncate(_ inode: Ext2InodeNumber) throws {
        var raw = try readInode(inode)
        let code = withUnsafeMutablePointer(to: &raw) { pointer in
            pointer.withMemoryRebound(to: ext2_inode.self, capacity: 1) {
                ext2fs_punch(fs, inode, $0, nil, 0, ~0)
            }
        }
        try ext2Check(code, "ext2fs_punch", "cannot free the old blocks of inode \(inode)", path: path, offset: offset)
        raw = try readInode(inode)
        raw.i_size = 0
        raw.i_size_high = 0
        try writeInode(inode, &raw)
    }

    /// Removes one name of a hard-linked inode and drops its link count by one.
    private func unlinkOneName(_ name: String, of inode: Ext2InodeNumber, in parent: Ext2InodeNumber) throws {
        try ext2Check(
            ext2fs_unlink(fs, parent, name, inode, 0), "ext2fs_unlink", "cannot unlink \(name)", path: path,
            offset: offset)
        var raw = try readInode(inode)
        raw.i_links_count -= 1
        try writeInode(inode, &raw)
    }

    /// Allocates an inode for an empty regular file and links it as `name` in `parent`.
    private func createEmptyFile(_ name: String, in parent: Ext2InodeNumber, permissions: UInt16) throws -> Ext2InodeNumber {
        var inode: ext2_ino_t = 0
        let mode = Int32(Self.regularType | (permissions & 0o7777))
        try ext2Check(
            ext2fs_new_inode(fs, parent, mode, nil, &inode), "ext2fs_new_inode", "no free inode for \(name)",
            path: path, offset: offset)
        var code = ext2fs_link(fs, parent, name, inode, Int32(EXT2_FT_REG_FILE))
        if code == EXT2_ET_DIR_NO_SPACE {
            try ext2Check(
                ext2fs_expand_dir(fs, parent), "ext2fs_expand_dir", "cannot grow a directory to add \(name)",
                path: path, offset: offset)
            code = ext2fs_link(fs, parent, name, inode, Int32(EXT2_FT_REG_FILE))
        }
        try ext2Check(code, "ext2fs_link", "cannot link \(name) into its directory", path: path, offset: offset)
        ext2fs_inode_alloc_stats2(fs, inode, 1, 0)

        var small = ext2_inode()
        small.i_mode = UInt16(mode)
        let now = UInt32(truncatingIfNeeded: Glibc.time(nil))
        small.i_atime = now
        small.i_mtime = now
        small.i_ctime = now
        small.i_links_count = 1
        let inlineData = ext2fs_has_feature_inline_data(fs.pointee.super) != 0
        if inlineData {
            small.i_flags |= UInt32(EXT4_INLINE_DATA_FL)
        } else if hasExtents {
            // Writes an empty extent header into i_block and sets EXT4_EXTENTS_FL, as mke2fs -d does.
            var extents: ext2_extent_handle_t?
            try ext2Check(
                ext2fs_extent_open2(fs, inode, &small, &extents), "ext2fs_extent_open2",
                "cannot start the extent tree of \(name)", path: path, offset: offset)
            ext2fs_extent_free(extents)
        }
        try ext2Check(
            ext2fs_write_new_inode(fs, inode, &small), "ext2fs_write_new_inode", "cannot write the inode of \(name)",
            path: path, offset: offset)
        if inlineData {
            try ext2Check(
                ext2fs_inline_data_init(fs, inode), "ext2fs_inline_data_init", "cannot set up inline data of \(name)",
                path: path, offset: offset)
        }
        return inode
    }

    /// Writes `content` from the start of an empty file, then flushes and closes it.
    private func writeContent(_ content: UnsafeRawBufferPointer, to inode: Ext2InodeNumber, named name: String) throws {
        guard !content.isEmpty else { return }
        var file: ext2_file_t?
        try ext2Check(
            ext2fs_file_open(fs, inode, Int32(EXT2_FILE_WRITE), &file), "ext2fs_file_open",
            "cannot open \(name) for writing", path: path, offset: offset)
        guard let file else { preconditionFailure("ext2fs_file_open succeeded without a file") }
        var closed = false
        defer { if !closed { ext2fs_file_close(file) } }
        var done = 0
        while done < content.count {
            var written: UInt32 = 0
            let want = UInt32(min(content.count - done, 1 << 20))
            let code = ext2fs_file_write(file, content.baseAddress! + done, want, &written)
            try ext2Check(code, "ext2fs_file_write", "cannot write \(name)", path: path, offset: offset)
            if written == 0 {
                throw PiflashError.failure("writing \(name) made no progress after \(done) bytes", path: path)
            }
            done += Int(written)
        }
        try ext2Check(ext2fs_file_flush(file), "ext2fs_file_flush", "cannot flush \(name)", path: path, offset: offset)
        closed = true
        try ext2Check(ext2fs_file_close(file), "ext2fs_file_close", "cannot close \(name)", path: path, offset: offset)
    }
}

extension ext2_inode_large {
    /// The first 128 bytes, as the small `ext2_inode` that some libext2fs calls take.
    fileprivate var smallView: ext2_inode {
        var copy = self
        return withUnsafePointer(to: &copy) { $0.withMemoryRebound(to: ext2_inode.self, capacity: 1) { $0.pointee } }
    }
}
