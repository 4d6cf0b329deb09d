// Keeping decrypted secrets off disks: a process that holds them is non-dumpable (no core file,
// no ptrace or /proc/PID/mem by other processes of the same user). The buffers themselves
// (``LockedBytes``, ``SecretBytes``) live in PiflashCore, so every layer can hold secrets in them.
import CPiflashShim
import Glibc
import Synchronization

/// The process-wide protections of a process that holds decrypted secrets.
public enum SecretMemory {
    private static let protected = Atomic<Bool>(false)

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
    public static var lockNote: String? { SecretPages.lockNote }
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
