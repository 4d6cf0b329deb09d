#if canImport(Glibc)
import Glibc
#endif
import CPiflashShim

/// Creates an anonymous memory file (`memfd_create(name, MFD_CLOEXEC)`) of `size` bytes, sparse: only
/// the pages written take memory. The caller closes the descriptor.
///
/// - Throws: exit-1 ``PiflashError`` naming `path` (what the file is for) when the kernel refuses.
public func makeSparseMemoryFile(name: String, size: UInt64, path: String) throws -> Int32 {
    let fd = try retryingEINTR("memfd_create", path: path) { piflash_memfd(name) }
    guard ftruncate(fd, off_t(size)) == 0 else {
        let code = errno
        close(fd)
        throw PiflashError.system("ftruncate", errno: code, path: path, what: "cannot size a memory file of \(size) bytes")
    }
    return fd
}
