import Foundation
import PiflashPlatform

/// The station's heartbeat into the journal, on its own thread (a database that does not answer
/// never holds up the udev loop): every `interval` seconds it writes what a lost PostgreSQL
/// connection kept back, then the station's row with its slots' state, and renews its claims —
/// so other stations leave them alone until `heartbeat_timeout` passes without one.
final class StationPulse: @unchecked Sendable {
    private let journal: Journal
    private let interval: Double
    private let beat: @Sendable () -> (StationHeartbeat, claimants: [String])
    private let changed: @Sendable (_ reachable: Bool, _ error: String?) -> Void
    private let stopSignal = DispatchSemaphore(value: 0)
    private var thread: WorkerThread?

    /// - Parameters:
    ///   - interval: seconds between heartbeats.
    ///   - beat: the heartbeat to write and the claimants whose claims it renews (called each time).
    ///   - changed: told when the journal stops or starts answering again.
    init(journal: Journal, interval: Double, beat: @escaping @Sendable () -> (StationHeartbeat, claimants: [String]),
         changed: @escaping @Sendable (_ reachable: Bool, _ error: String?) -> Void) {
        self.journal = journal
        self.interval = interval
        self.beat = beat
        self.changed = changed
    }

    /// Starts the thread; the first heartbeat is written at once.
    func start() {
        thread = WorkerThread { [self] in
            var reachable = true
            repeat {
                let (heartbeat, claimants) = beat()
                do {
                    try journal.heartbeat(heartbeat, claimants: claimants)
                    if !reachable { changed(true, nil) }
                    reachable = true
                } catch {
                    if reachable { changed(false, "\(error)") }
                    reachable = false
                }
            } while stopSignal.wait(timeout: .now() + interval) == .timedOut
        }
    }

    /// Stops the thread after one last heartbeat attempt in progress, if any.
    func stop() {
        stopSignal.signal()
        thread?.join()
        thread = nil
    }
}
