#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The exit statuses of the `piflash` contract (SPEC "Commands").
public enum ExitStatus: Int32, Sendable, CaseIterable {
    /// Everything was done and read back.
    case success = 0
    /// An operational failure: I/O error, card removed, decryption failed, timeout.
    case failure = 1
    /// A usage or configuration error: bad flag, bad host file, unreadable or corrupt image.
    case usage = 2
    /// The target was refused by the safety policy or is unsuitable (too small, read-only, busy).
    case refused = 3
    /// Verification failed: the card does not hold what was written (a bad or counterfeit card).
    case verificationFailed = 4
}

/// The one error type a user sees: what failed, where, the system call and errno underneath,
/// and what to do about it.
public struct PiflashError: Error, Sendable, CustomStringConvertible {
    /// Which exit status this error ends the program with.
    public var status: ExitStatus
    /// What failed, in a sentence.
    public var message: String
    /// The device or file involved, when there is one.
    public var path: String?
    /// The byte offset involved (the first bad byte, where a write failed), when there is one.
    public var offset: UInt64?
    /// The system or library call that failed, when one did.
    public var call: String?
    /// The errno (or negative errno converted to positive) the call returned.
    public var errno: Int32?
    /// What the user can do about it.
    public var hint: String?

    public init(
        _ status: ExitStatus, _ message: String, path: String? = nil, offset: UInt64? = nil,
        call: String? = nil, errno: Int32? = nil, hint: String? = nil
    ) {
        self.status = status
        self.message = message
        self.path = path
        self.offset = offset
        self.call = call
        self.errno = errno
        self.hint = hint
    }

    /// A usage or configuration error (exit 2).
    public static func usage(_ message: String, path: String? = nil, hint: String? = nil) -> PiflashError {
        PiflashError(.usage, message, path: path, hint: hint)
    }

    /// A target refused by the safety policy or unsuitable (exit 3).
    public static func refused(_ message: String, path: String? = nil, hint: String? = nil) -> PiflashError {
        PiflashError(.refused, message, path: path, hint: hint)
    }

    /// A verification failure (exit 4).
    public static func verification(_ message: String, path: String? = nil, offset: UInt64? = nil) -> PiflashError {
        PiflashError(.verificationFailed, message, path: path, offset: offset)
    }

    /// An operational failure (exit 1).
    public static func failure(_ message: String, path: String? = nil, offset: UInt64? = nil, hint: String? = nil) -> PiflashError {
        PiflashError(.failure, message, path: path, offset: offset, hint: hint)
    }

    /// A failed system call: `-1` and `errno`, converted once at the boundary.
    ///
    /// - Parameters:
    ///   - call: the system call, e.g. `"pwrite"`.
    ///   - errno: the errno it left.
    ///   - path: the device or file.
    ///   - offset: the byte offset, for reads and writes.
    ///   - status: the exit status; defaults to an operational failure.
    public static func system(
        _ call: String, errno: Int32, path: String? = nil, offset: UInt64? = nil, status: ExitStatus = .failure,
        what: String? = nil
    ) -> PiflashError {
        let reason = String(cString: strerror(errno))
        var message = what.map { "\($0): \(reason)" } ?? "\(call) failed: \(reason)"
        if let offset { message += " at byte \(offset)" }
        return PiflashError(status, message, path: path, offset: offset, call: call, errno: errno, hint: hintFor(errno: errno, call: call))
    }

    static func hintFor(errno code: Int32, call: String) -> String? {
        switch code {
        case EBUSY: return "the card is mounted or in use by another program; unmount it or close that program"
        case EACCES, EPERM: return "run as root, or add your user to the piflash group (see udev-rules/60-piflash.rules)"
        case EROFS: return "the card is write-protected: check the lock switch on its side"
        case ENOSPC: return "there is no room left"
        case ENOMEDIUM, ENXIO, ENODEV: return "the card was removed or the reader has no medium"
        case EIO: return "the card or reader reported an I/O error: the card may be failing; try another card or reader"
        default: return nil
        }
    }

    public var description: String {
        var text = message
        if let path, !message.contains(path) { text = "\(path): \(text)" }
        if let hint { text += " (\(hint))" }
        return text
    }
}

/// Retries a system call while it fails with `EINTR`, and turns `-1` into a thrown ``PiflashError``.
@discardableResult
public func retryingEINTR<T: BinaryInteger>(
    _ call: String, path: String? = nil, offset: UInt64? = nil, _ body: () -> T
) throws -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        throw PiflashError.system(call, errno: code, path: path, offset: offset)
    }
}
