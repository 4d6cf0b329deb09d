import Glibc
import Synchronization

/// SIGINT and SIGTERM as a flag the long-running stages poll between chunks, so a job stops at a
/// chunk boundary, flushes, says where it stopped and leaves no card that looks valid.
public enum Interrupts {
    private static let received = Atomic<Int32>(0)
    /// A pipe the handler writes a byte into, so a thread blocked in poll(2) on something else
    /// (the udev monitor, the terminal) wakes up whichever thread the kernel delivered the signal
    /// to: its read end (``descriptor``) and its write end.
    private static let wakeRead = Atomic<Int32>(-1)
    private static let wakeWrite = Atomic<Int32>(-1)

    /// Installs the handlers (idempotent). The first signal sets the flag; a second one of the same
    /// kind, while the job is still winding down, is left to the default action only after the
    /// job has had its chance to clean up — we never kill mid-`pwrite` from the handler.
    public static func install() {
        if wakeRead.load(ordering: .relaxed) < 0 {
            var ends: [Int32] = [-1, -1]
            if pipe(&ends) == 0 {
                for fd in ends {
                    _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                }
                wakeWrite.store(ends[1], ordering: .relaxed)
                wakeRead.store(ends[0], ordering: .relaxed)
            }
        }
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { signal in
            let saved = errno
            Interrupts.received.store(signal, ordering: .relaxed)
            let fd = Interrupts.wakeWrite.load(ordering: .relaxed)
            if fd >= 0 {
                var byte: UInt8 = 1
                _ = write(fd, &byte, 1)  // async-signal-safe; a full pipe is still readable
            }
            errno = saved
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGINT, &action, nil)
        sigaction(SIGTERM, &action, nil)
        // A parent may have left them blocked (the mask survives exec): unblock, or a stop request
        // would never reach the job.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// The signal received, or nil.
    public static var signal: Int32? {
        let value = received.load(ordering: .relaxed)
        return value == 0 ? nil : value
    }

    /// A descriptor that becomes readable (and stays readable) once a signal was received, for
    /// `poll(2)` next to the descriptors a wait is really about; -1 before ``install()``.
    public static var descriptor: Int32 { wakeRead.load(ordering: .relaxed) }

    /// Throws when a signal was received, naming where the job stopped.
    /// - Parameter position: where the job is, e.g. "writing at byte 123456".
    public static func check(_ position: @autoclosure () -> String) throws {
        if let signal {
            let name = signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)"
            throw PiflashError.failure("interrupted by \(name) while \(position())")
        }
    }

    /// For tests and the station: forget a received signal.
    public static func reset() {
        received.store(0, ordering: .relaxed)
        let fd = wakeRead.load(ordering: .relaxed)
        var buffer = [UInt8](repeating: 0, count: 64)
        while fd >= 0, read(fd, &buffer, buffer.count) > 0 {}
    }
}
