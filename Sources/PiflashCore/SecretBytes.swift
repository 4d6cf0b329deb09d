// Secret buffers: decrypted values, rendered bootstrap files and typed passphrases live in their
// own anonymous pages, locked out of swap where RLIMIT_MEMLOCK allows (else noted once for the
// user), excluded from core dumps (`MADV_DONTDUMP`) and zeroed before they are unmapped.
// ``LockedBytes`` is the growable buffer a reader fills; ``SecretBytes`` the immutable value the
// rest of the program passes around.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// One mapping of secret pages: what both buffer types own.
public enum SecretPages {
    private static let lockFailure = Mutex<String?>(nil)

    /// Why a secret buffer could not be locked in memory (the first failure), for a note to the
    /// user; nil when every lock succeeded.
    public static var lockNote: String? { lockFailure.withLock { $0 } }

    /// Maps at least one page for `capacity` bytes, `MADV_DONTDUMP`, and locks it when the limit allows.
    static func map(capacity: Int) -> (base: UnsafeMutableRawPointer, size: Int, locked: Bool) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let size = max(page, (capacity + page - 1) / page * page)
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            mapped != MAP_FAILED
        else { fatalError("mmap of \(size) bytes for secret memory failed: errno \(errno)") }
        #if os(Linux)
        _ = madvise(mapped, size, MADV_DONTDUMP)
        #endif
        if mlock(mapped, size) == 0 { return (mapped, size, true) }
        let code = errno
        lockFailure.withLock { note in
            if note == nil {
                note = "secret memory could not be locked (mlock: \(String(cString: strerror(code))); raise RLIMIT_MEMLOCK, "
                    + "e.g. ulimit -l): the secrets may be swapped out; they are still zeroed after use"
            }
        }
        return (mapped, size, false)
    }

    /// Zeroes, unlocks and unmaps pages from ``map(capacity:)``.
    static func release(_ base: UnsafeMutableRawPointer, size: Int, locked: Bool) {
        explicit_bzero(base, size)
        if locked { munlock(base, size) }
        munmap(base, size)
    }

    /// Zeroes an array's storage in place (for the copies Swift code must make).
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            if let address = buffer.baseAddress { explicit_bzero(address, buffer.count) }
        }
    }
}

/// A growable secret buffer in locked, no-dump pages, zeroed when released: what a passphrase is
/// read into. Used from one thread at a time (it is not `Sendable`); ``SecretBytes`` is the
/// immutable value made from it.
public final class LockedBytes {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    /// The bytes held.
    public private(set) var count = 0
    /// Whether the pages are locked in memory.
    public let isLocked: Bool

    /// A buffer for up to `capacity` bytes.
    public init(capacity: Int) {
        (base, self.capacity, isLocked) = SecretPages.map(capacity: capacity)
    }

    /// A locked copy of `bytes`; the caller should wipe its own copy.
    public convenience init(copying bytes: [UInt8]) {
        self.init(capacity: bytes.count)
        append(bytes)
    }

    /// Appends bytes. Traps past the capacity (a programming error).
    public func append(_ bytes: some Collection<UInt8>) {
        precondition(count + bytes.count <= capacity, "LockedBytes capacity exceeded")
        for byte in bytes {
            base.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
            count += 1
        }
    }

    /// Appends one byte; false when the buffer is full.
    @discardableResult
    public func append(byte: UInt8) -> Bool {
        guard count < capacity else { return false }
        base.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
        count += 1
        return true
    }

    /// Drops the last `n` bytes (zeroing them).
    public func removeLast(_ n: Int = 1) {
        let n = min(n, count)
        explicit_bzero(base + (count - n), n)
        count -= n
    }

    /// Reads the bytes in place.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// A copy as an array: the caller owns it and should wipe it (``wipe(_:)``) when done.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Whether both hold the same bytes.
    public func equals(_ other: LockedBytes) -> Bool {
        count == other.count && memcmp(base, other.base, count) == 0
    }

    /// The bytes as an immutable ``SecretBytes`` (a locked copy).
    public var sealed: SecretBytes { withUnsafeBytes { SecretBytes(copying: $0) } }

    deinit { SecretPages.release(base, size: capacity, locked: isLocked) }

    /// Zeroes an array's storage in place (for the copies Swift code must make).
    public static func wipe(_ bytes: inout [UInt8]) { SecretPages.wipe(&bytes) }
}

/// Immutable secret bytes — a decrypted value, a rendered key file — in their own locked, no-dump
/// pages, zeroed and unmapped when the last reference goes. Read in place with
/// ``withUnsafeBytes(_:)``; ``bytes`` makes an ordinary copy its caller must wipe.
///
/// `@unchecked Sendable` because the pages are written only in `init`, before the value can be
/// shared, and only read afterwards; the pointer is owned and never escapes a scoped read.
public final class SecretBytes: @unchecked Sendable, Equatable {
    private let base: UnsafeMutableRawPointer
    private let size: Int
    /// The number of bytes.
    public let count: Int
    /// Whether the pages are locked in memory (``SecretPages/lockNote`` says why not).
    public let isLocked: Bool

    /// A locked copy of `bytes`. The caller should wipe its own copy if it was secret.
    public init(copying bytes: some Sequence<UInt8>) {
        let array = Array(bytes)
        (base, size, isLocked) = SecretPages.map(capacity: array.count)
        count = array.count
        array.withUnsafeBytes { if let from = $0.baseAddress { base.copyMemory(from: from, byteCount: count) } }
    }

    /// A locked copy of an array that is then zeroed in place: the plaintext now exists only here.
    public convenience init(wiping bytes: inout [UInt8]) {
        self.init(copying: bytes)
        SecretPages.wipe(&bytes)
    }

    /// Reads the bytes in place.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// An ordinary copy: its owner should wipe it (``SecretPages/wipe(_:)``) when done.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Whether the bytes equal `other` (not constant-time: for tests and record keeping, never
    /// for authentication).
    public func equals(_ other: some Collection<UInt8>) -> Bool {
        guard other.count == count else { return false }
        return withUnsafeBytes { mine in zip(mine, other).allSatisfy { $0 == $1 } }
    }

    public static func == (lhs: SecretBytes, rhs: SecretBytes) -> Bool {
        lhs === rhs || (lhs.count == rhs.count && memcmp(lhs.base, rhs.base, lhs.count) == 0)
    }

    deinit { SecretPages.release(base, size: size, locked: isLocked) }
}
