#if canImport(Glibc)
import Glibc
#endif
import CExt2fs

/// libext2fs' error table must be registered once before `error_message()` can name its codes.
private let ext2ErrorTableRegistered: Bool = {
    initialize_ext2_error_table()
    return true
}()

/// Makes sure `error_message()` knows libext2fs' codes. Cheap after the first call.
func registerExt2ErrorTable() {
    _ = ext2ErrorTableRegistered
}

/// The text `error_message()` gives for a libext2fs `errcode_t` (an errno or an `EXT2_ET_*` code).
public func ext2ErrorMessage(_ code: Int) -> String {
    registerExt2ErrorTable()
    guard let text = error_message(errcode_t(code)) else { return "libext2fs error \(code)" }
    return String(cString: text)
}

/// Converts a libext2fs `errcode_t` into a ``PiflashError``, once, at the boundary: 0 passes.
///
/// Codes that are plain errnos (libext2fs passes `EIO`, `ENOSPC`… through) keep their errno, so the
/// hint says what to do; `EXT2_ET_*` codes get `error_message()`'s text.
///
/// - Parameters:
///   - code: the `errcode_t` returned.
///   - call: the libext2fs function, e.g. `"ext2fs_open2"`.
///   - what: what was being done, for the message (`"cannot open the root filesystem"`).
///   - path: the device or image file.
///   - status: the exit status to give; an operational failure by default.
func ext2Check(
    _ code: errcode_t, _ call: String, _ what: @autoclosure () -> String, path: String, offset: UInt64? = nil,
    status: ExitStatus = .failure
) throws {
    guard code != 0 else { return }
    throw ext2Error(code, call, what(), path: path, offset: offset, status: status)
}

/// The ``PiflashError`` for a non-zero libext2fs `errcode_t`. See ``ext2Check(_:_:_:path:offset:status:)``.
func ext2Error(
    _ code: errcode_t, _ call: String, _ what: String, path: String, offset: UInt64? = nil,
    status: ExitStatus = .failure
) -> PiflashError {
    let text = ext2ErrorMessage(Int(code))
    let isErrno = code > 0 && code < 4096
    return PiflashError(
        status, "\(what): \(text) (\(call))", path: path, offset: offset, call: call,
        errno: isErrno ? Int32(code) : nil,
        hint: isErrno ? PiflashError.system(call, errno: Int32(code)).hint : nil)
}
