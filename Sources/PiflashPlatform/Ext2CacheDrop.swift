#if canImport(Glibc)
import Glibc
#endif
import CPiflashShim

extension Ext2Filesystem {
    /// Makes the next read of `path` come from the medium rather than the kernel's caches, so a
    /// read-back proves what the card (or image file) holds.
    ///
    /// A block device gets `BLKFLSBUF` (which writes back and then drops its buffer cache); a regular
    /// file gets `fsync` and `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file.
    ///
    /// - Throws: ``PiflashError`` when the path cannot be opened, flushed or its cache dropped.
    public static func dropCachedBlocks(of path: String) throws {
        let fd = try retryingEINTR("open", path: path) { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        var info = Glibc.stat()
        try retryingEINTR("fstat", path: path) { fstat(fd, &info) }
        if info.st_mode & S_IFMT == S_IFBLK {
            try retryingEINTR("ioctl(BLKFLSBUF)", path: path) { piflash_ioctl_none(fd, piflash_BLKFLSBUF) }
        } else {
            try retryingEINTR("fsync", path: path) { fsync(fd) }
            let code = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
            if code != 0 {
                throw PiflashError.system("posix_fadvise", errno: code, path: path, what: "cannot drop the cached pages")
            }
        }
    }

    /// Whether `path` is a block device (rather than an image file).
    public static func isBlockDevice(_ path: String) -> Bool {
        fileMode(path).map { $0 & S_IFMT == S_IFBLK } ?? false
    }
}

/// `st_mode` of a path (following symlinks), or nil when it cannot be stat'ed.
private func fileMode(_ path: String) -> mode_t? {
    var info = stat()
    return stat(path, &info) == 0 ? info.st_mode : nil
}
