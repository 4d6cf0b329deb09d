// Keeping decrypted secrets off disks: a process that holds them is non-dumpable (no core file,
// no ptrace or /proc/PID/mem by other processes of the same user), and secret buffers live in
// their own pages, locked out of swap where RLIMIT_MEMLOCK allows, excluded from core dumps and
// zeroed when released.
import CPiflashShim
import Glibc
import Synchronization

/// The process-wide protections of a process that holds decrypted secrets.
public enum SecretMemory {
    private static let protected = Atomic<Bool>(false)
    private static let lockFailure = Mutex<String?>(nil)

    /// Marks the process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`, through the C shim), once: a crash writes no
    /// core file that could hold a host key, and other processes of the user cannot read its
    /// memory. Idempotent and cheap; call it before decrypting.
    public static func protectProcess() {
        guard !protected.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = piflash_set_dumpable(0)
    }

    /// Whether the kernel reports the process as non-dumpable (`prctl(PR_GET_DUMPABLE)`).
    public static var isNonDumpable: Bool { piflash_get_dumpable() == 0 }

    /// Why a secret buffer could not be locked in memory (the first failure), for a note to
    /// the user; nil when every lock succeeded.
    public static var lockNote: String? { lockFailure.withLock { $0 } }

    static func noteLockFailure(_ code: Int32) {
        lockFailure.withLock { note in
            if note == nil {
                note = "secret memory could not be locked (mlock: \(String(cString: strerror(code))); raise RLIMIT_MEMLOCK, "
                    + "e.g. ulimit -l): the secrets may be swapped out; they are still zeroed after use"
            }
        }
    }
}

/// Secret bytes in their own anonymous pages: `mlock`ed when the limit allows (else noted in
/// ``SecretMemory/lockNote``), `MADV_DONTDUMP`, and zeroed before they are unmapped. Used from
/// one thread at a time.
public final class LockedBytes: @unchecked Sendable {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    /// The bytes held.
    public private(set) var count = 0
    /// Whether the pages are locked in memory.
    public let isLocked: Bool

    /// A buffer for up to `capacity` bytes.
    public init(capacity: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let size = max(page, (capacity + page - 1) / page * page)
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            mapped != MAP_FAILED
        else { fatalError("mmap of \(size) bytes for secret memory failed: errno \(errno)") }
        base = mapped
        self.capacity = size
        _ = madvise(mapped, size, MADV_DONTDUMP)
        if mlock(mapped, size) == 0 {
            isLocked = true
        } else {
            isLocked = false
            SecretMemory.noteLockFailure(errno)
        }
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

    deinit {
        explicit_bzero(base, capacity)
        if isLocked { munlock(base, capacity) }
        munmap(base, capacity)
    }

    /// Zeroes an array's storage in place (for the copies Swift code must make).
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            if let address = buffer.baseAddress { explicit_bzero(address, buffer.count) }
        }
    }
}

/// Reading a secret from the controlling terminal without echo.
public enum SecretPrompt {
    /// Whether standard input is a terminal.
    public static var isInteractive: Bool { isatty(STDIN_FILENO) == 1 }

    /// Writes `prompt` to standard error, reads one line from standard input with echo turned
    /// off (restored afterwards), and returns it without its newline, in locked memory.
    ///
    /// - Parameter limit: the most bytes accepted; a longer line is an error.
    /// - Throws: ``PiflashError`` (exit 2) when standard input is not a terminal, the input
    ///   ends before a newline, or the line is too long.
    public static func read(prompt: String, limit: Int = 256) throws -> LockedBytes {
        guard isInteractive else { throw PiflashError.usage("standard input is not a terminal; cannot ask for a secret") }
        var saved = termios()
        guard tcgetattr(STDIN_FILENO, &saved) == 0 else { throw PiflashError.system("tcgetattr", errno: errno, path: "stdin", status: .usage) }
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        quiet.c_lflag |= tcflag_t(ECHONL)
        // Echo off first (dropping anything typed ahead), then the prompt: nothing typed after
        // the prompt can be echoed.
        guard tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0 else {
            throw PiflashError.system("tcsetattr", errno: errno, path: "stdin", status: .usage)
        }
        defer { _ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved) }
        writeAll(prompt, to: STDERR_FILENO)
        let line = LockedBytes(capacity: limit + 1)
        var byte: UInt8 = 0
        while true {
            let count = Glibc.read(STDIN_FILENO, &byte, 1)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { throw PiflashError.usage("the input ended before a newline") }
            if byte == UInt8(ascii: "\n") { break }
            guard line.append(byte: byte), line.count <= limit else {
                byte = 0
                throw PiflashError.usage("the input is longer than \(limit) bytes")
            }
        }
        byte = 0
        if line.withUnsafeBytes({ $0.last }) == UInt8(ascii: "\r") { line.removeLast() }
        return line
    }

    /// All of standard input (a pipe or file) in locked memory, without one final newline
    /// (`\n` or `\r\n`).
    /// - Throws: ``PiflashError`` (exit 2) when it holds more than `limit` bytes or cannot be read.
    public static func readStandardInput(limit: Int = 256) throws -> LockedBytes {
        let content = LockedBytes(capacity: limit + 2)
        var buffer = [UInt8](repeating: 0, count: 64)
        defer { LockedBytes.wipe(&buffer) }
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw PiflashError.system("read", errno: errno, path: "stdin", status: .usage) }
            if count == 0 { break }
            for byte in buffer[0..<count] {
                guard content.append(byte: byte), content.count <= limit + 2 else {
                    throw PiflashError.usage("standard input holds more than \(limit) bytes")
                }
            }
        }
        if content.withUnsafeBytes({ $0.last }) == UInt8(ascii: "\n") {
            content.removeLast()
            if content.withUnsafeBytes({ $0.last }) == UInt8(ascii: "\r") { content.removeLast() }
        }
        guard content.count <= limit else { throw PiflashError.usage("standard input holds more than \(limit) bytes") }
        return content
    }
}
