import CPiflashShim
import Glibc

/// An open block device or image file, closed exactly once. Opening, sizing, positioned I/O,
/// flushing and ejecting go through here, each C convention converted once.
///
/// `~Copyable`, with a consuming ``close()`` that throws, so an `fsync`/`close` error on a freshly
/// written card is never lost. Worker threads borrow ``descriptor`` while the owner keeps the file
/// open and joins them before closing.
public struct DeviceFile: ~Copyable {
    /// The file descriptor.
    public let descriptor: Int32
    /// The path it was opened by, for messages.
    public let path: String
    /// Whether it is a block device (else a regular file).
    public let isBlockDevice: Bool
    /// Whether `O_DIRECT` is in effect.
    public let isDirect: Bool
    private var isOpen = true

    /// How a ``DeviceFile`` is opened.
    public enum Mode: Sendable {
        /// Read only.
        case read
        /// Read and write an existing device or file (never creates, never truncates).
        case readWrite
        /// Create or truncate a regular file for writing, 0644.
        case createFile
    }

    /// Opens a device or file.
    ///
    /// - Parameters:
    ///   - path: the device node or file.
    ///   - mode: read, read-write, or create.
    ///   - direct: ask for `O_DIRECT`; a file system that refuses it (`EINVAL`) gets buffered I/O,
    ///     reported by ``isDirect``.
    ///   - exclusive: `O_EXCL` on a block device: fails with `EBUSY` when it is mounted or held.
    /// - Throws: ``PiflashError`` naming the path, the call and the errno (exit 3 for `EBUSY`,
    ///   `EROFS`, `EACCES`: the target is unusable, not the operation).
    public init(path: String, mode: Mode, direct: Bool, exclusive: Bool = false) throws {
        var flags: Int32 = O_CLOEXEC
        switch mode {
        case .read: flags |= O_RDONLY
        case .readWrite: flags |= O_RDWR
        case .createFile: flags |= O_RDWR | O_CREAT | O_TRUNC
        }
        if exclusive { flags |= O_EXCL }
        var useDirect = direct
        var fd = Self.open(path, flags | (useDirect ? piflash_O_DIRECT : 0))
        if fd < 0 && errno == EINVAL && useDirect {
            useDirect = false
            fd = Self.open(path, flags)
        }
        guard fd >= 0 else {
            let code = errno
            let status: ExitStatus = [EBUSY, EROFS, EACCES, EPERM, ENOMEDIUM].contains(code) && mode != .read ? .refused : .failure
            throw PiflashError.system("open", errno: code, path: path, status: status, what: "cannot open \(path)")
        }
        var info = stat()
        fstat(fd, &info)
        descriptor = fd
        self.path = path
        isBlockDevice = (info.st_mode & S_IFMT) == S_IFBLK
        isDirect = useDirect
    }

    private static func open(_ path: String, _ flags: Int32) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags, 0o644)
            if fd < 0 && errno == EINTR { continue }
            return fd
        }
    }

    deinit {
        if isOpen { Glibc.close(descriptor) }
    }

    /// Closes the descriptor, reporting a failure instead of losing it.
    public consuming func close() throws {
        isOpen = false
        if Glibc.close(descriptor) != 0 {
            throw PiflashError.system("close", errno: errno, path: path)
        }
    }

    /// The size in bytes: `BLKGETSIZE64` for a block device, `st_size` for a file.
    public func size() throws -> UInt64 {
        if isBlockDevice {
            var bytes: UInt64 = 0
            try retryingEINTR("ioctl(BLKGETSIZE64)", path: path) { piflash_ioctl_u64(descriptor, piflash_BLKGETSIZE64, &bytes) }
            return bytes
        }
        var info = stat()
        try retryingEINTR("fstat", path: path) { fstat(descriptor, &info) }
        return UInt64(info.st_size)
    }

    /// The logical sector size (`BLKSSZGET`), 512 for files. `O_DIRECT` I/O is aligned to it.
    public func logicalSectorSize() -> Int {
        guard isBlockDevice else { return 512 }
        var size: Int32 = 0
        if piflash_ioctl_int(descriptor, piflash_BLKSSZGET, &size) == 0, size > 0 { return Int(size) }
        return 512
    }

    /// Whether the kernel marks the block device read-only (`BLKROGET`).
    public func isReadOnly() -> Bool {
        guard isBlockDevice else { return false }
        var readOnly: Int32 = 0
        return piflash_ioctl_int(descriptor, piflash_BLKROGET, &readOnly) == 0 && readOnly != 0
    }

    /// Writes all of `buffer` at `offset` (`pwrite`, retried on `EINTR` and short writes).
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try Self.write(descriptor, buffer, at: offset, path: path)
    }

    /// `pwrite` of a whole buffer on a borrowed descriptor, for worker threads.
    public static func write(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw PiflashError.system("pwrite", errno: errno, path: path, offset: offset + UInt64(done), what: "write failed")
            }
            if n == 0 {
                throw PiflashError.system("pwrite", errno: ENOSPC, path: path, offset: offset + UInt64(done), what: "write failed")
            }
            done += n
        }
    }

    /// Reads up to `buffer.count` bytes at `offset`, stopping early only at the end of the device.
    /// - Returns: the number of bytes read.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try Self.read(descriptor, into: buffer, at: offset, path: path)
    }

    /// `pread` into a whole buffer on a borrowed descriptor, for worker threads.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, path: String) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw PiflashError.system("pread", errno: errno, path: path, offset: offset + UInt64(done), what: "read failed")
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// `fsync`: everything written is on the medium (or the call fails).
    public func sync() throws {
        try retryingEINTR("fsync", path: path) { fsync(descriptor) }
    }

    /// Drops the kernel's cached pages of this device or file, so the next read comes from the
    /// medium: `BLKFLSBUF` for a block device, `posix_fadvise(DONTNEED)` for a file.
    public func dropCaches() throws {
        try Self.dropCaches(descriptor, path: path, isBlockDevice: isBlockDevice)
    }

    /// ``dropCaches()`` on a borrowed descriptor (the flash job's handle, lent to a step).
    public static func dropCaches(_ descriptor: Int32, path: String) throws {
        var info = stat()
        try retryingEINTR("fstat", path: path) { fstat(descriptor, &info) }
        try dropCaches(descriptor, path: path, isBlockDevice: (info.st_mode & S_IFMT) == S_IFBLK)
    }

    private static func dropCaches(_ descriptor: Int32, path: String, isBlockDevice: Bool) throws {
        if isBlockDevice {
            try retryingEINTR("ioctl(BLKFLSBUF)", path: path) { piflash_ioctl_none(descriptor, piflash_BLKFLSBUF) }
        } else {
            _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
        }
    }

    /// Runs `body` with `descriptor`'s open file out of `O_DIRECT` mode (`fcntl(F_SETFL)`), and
    /// puts the mode back afterwards, whatever happens: for libext2fs, which does unaligned I/O on a
    /// borrowed descriptor. The open file (and its exclusive hold on a card) is the same throughout.
    public static func withBufferedIO<T>(_ descriptor: Int32, path: String, _ body: () throws -> T) throws -> T {
        let flags = fcntl(descriptor, F_GETFL)
        guard flags >= 0 else { throw PiflashError.system("fcntl(F_GETFL)", errno: errno, path: path) }
        guard flags & piflash_O_DIRECT != 0 else { return try body() }
        guard fcntl(descriptor, F_SETFL, flags & ~piflash_O_DIRECT) == 0 else {
            throw PiflashError.system("fcntl(F_SETFL)", errno: errno, path: path)
        }
        defer { _ = fcntl(descriptor, F_SETFL, flags) }
        return try body()
    }

    /// Discards byte ranges of a block device (`BLKDISCARD`): the device may erase them (an SD
    /// card's ERASE), and what they read as afterwards is up to the device (zeros, ones or the old
    /// content). Each range is shrunk inward to whole logical sectors.
    ///
    /// - Returns: false when the device does not support discard (nothing was discarded).
    /// - Throws: other failures of the ioctl (an I/O error, a removed card).
    public func discard(_ ranges: [Range<UInt64>]) throws -> Bool {
        let sector = UInt64(logicalSectorSize())
        for range in ranges {
            let start = (range.lowerBound + sector - 1) / sector * sector
            let end = range.upperBound / sector * sector
            guard end > start else { continue }
            if piflash_blkdiscard(descriptor, start, end - start) != 0 {
                let code = errno
                if code == EOPNOTSUPP || code == ENOTTY { return false }
                throw PiflashError.system("ioctl(BLKDISCARD)", errno: code, path: path, offset: start,
                                          what: "cannot discard \(end - start) bytes at \(start)")
            }
        }
        return true
    }

    /// Ejects the medium of a SCSI disk (a USB card reader) through SG_IO START STOP UNIT.
    /// Loop devices and MMC slots have nothing to eject; callers skip them.
    public func ejectSCSI() throws {
        let rc = piflash_scsi_eject(descriptor)
        if rc < 0 {
            throw PiflashError.system("ioctl(SG_IO)", errno: -rc, path: path, what: "eject failed")
        } else if rc > 0 {
            throw PiflashError.failure("the reader refused to eject the card (SCSI status \(rc))", path: path,
                                       hint: "it is safe to pull: everything was flushed")
        }
    }
}

/// Memory aligned for `O_DIRECT`, released when dropped; used by one thread (the pipelines share
/// buffers through ``RingPipeline`` instead).
public final class AlignedBuffer {
    /// The bytes; `count` is the capacity.
    public let bytes: UnsafeMutableRawBufferPointer
    /// How many bytes are in use.
    public var used: Int = 0

    /// - Parameters:
    ///   - count: the capacity, a multiple of `alignment`.
    ///   - alignment: the alignment (4096 covers every logical sector size).
    public init(count: Int, alignment: Int = 4096) {
        precondition(count % alignment == 0, "O_DIRECT buffers are whole sectors")
        var pointer: UnsafeMutableRawPointer?
        let rc = posix_memalign(&pointer, alignment, count)
        precondition(rc == 0 && pointer != nil, "posix_memalign(\(count)) failed")
        bytes = UnsafeMutableRawBufferPointer(start: pointer, count: count)
    }

    deinit {
        free(bytes.baseAddress)
    }

    /// The bytes in use.
    public var filled: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[0..<used]) }
}

/// The size of the block device behind `fd` (`BLKGETSIZE64`), for a borrowed descriptor.
/// - Returns: false when the ioctl failed.
public func blockDeviceSize(_ fd: Int32, _ size: inout UInt64) -> Bool {
    piflash_ioctl_u64(fd, piflash_BLKGETSIZE64, &size) == 0
}
