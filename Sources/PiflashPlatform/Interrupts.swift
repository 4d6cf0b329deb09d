import Glibc
import Synchronization

/// SIGINT and SIGTERM as a flag the long-running stages poll between chunks, so a job stops at a
/// chunk boundary, flushes, says where it stopped and leaves no card that looks valid.
public enum Interrupts {
    private static let received = Atomic<Int32>(0)

    /// Installs the handlers (idempotent). The first signal sets the flag; a second one of the same
    /// kind, while the job is still winding down, is left to the default action only after the
    /// job has had its chance to clean up — we never kill mid-`pwrite` from the handler.
    public static func install() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { signal in
            Interrupts.received.store(signal, ordering: .relaxed)
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
    }
}
