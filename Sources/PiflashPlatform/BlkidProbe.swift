#if canImport(Glibc)
import Glibc
#endif
import CBlkid

/// One libblkid probe (`blkid_probe`), freed in `deinit`. Used from one thread.
///
/// libblkid reports failures as negative numbers (and sometimes `errno`); ``check(_:_:)`` converts
/// them once, here, into ``PiflashError``.
final class BlkidProbe {
    let handle: blkid_probe
    let path: String

    /// A probe over a whole device or image file (`blkid_new_probe_from_filename`).
    init(path: String) throws {
        guard let handle = blkid_new_probe_from_filename(path) else {
            let code = errno
            throw PiflashError.system(
                "blkid_new_probe_from_filename", errno: code != 0 ? code : EIO, path: path,
                status: code == ENOENT || code == ENOTDIR ? .usage : .failure,
                what: "cannot open \(path) to read its partition table")
        }
        self.handle = handle
        self.path = path
    }

    /// A probe over the byte range `offset ..< offset + size` of an open descriptor
    /// (`blkid_new_probe` + `blkid_probe_set_device`). The caller keeps `fd` open while probing.
    init(fd: Int32, offset: UInt64, size: UInt64, path: String) throws {
        guard let handle = blkid_new_probe() else {
            throw PiflashError.system("blkid_new_probe", errno: ENOMEM, path: path)
        }
        self.handle = handle
        self.path = path
        try check(
            blkid_probe_set_device(handle, fd, blkid_loff_t(offset), blkid_loff_t(size)),
            "blkid_probe_set_device", offset: offset)
    }

    deinit { blkid_free_probe(handle) }

    /// Converts a libblkid return code: `>= 0` passes through, negative becomes a ``PiflashError``
    /// (a negative errno when the library gave one, else the `errno` it left, else `EIO`).
    @discardableResult
    func check(_ result: Int32, _ call: String, offset: UInt64? = nil) throws -> Int32 {
        if result >= 0 { return result }
        let code: Int32 = result < -1 ? -result : (errno != 0 ? errno : EIO)
        throw PiflashError.system(call, errno: code, path: path, offset: offset)
    }

    /// A probed value (`blkid_probe_lookup_value`), e.g. `TYPE`, `LABEL`, `UUID`, or nil.
    func value(_ name: String) -> String? {
        var data: UnsafePointer<CChar>?
        var length = 0
        guard blkid_probe_lookup_value(handle, name, &data, &length) == 0, let data else { return nil }
        let text = String(cString: data)
        return text.isEmpty ? nil : text
    }
}

/// Turns an optional C string into an optional, non-empty Swift string.
func blkidString(_ pointer: UnsafePointer<CChar>?) -> String? {
    guard let pointer else { return nil }
    let text = String(cString: pointer)
    return text.isEmpty ? nil : text
}
