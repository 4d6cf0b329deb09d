import Foundation

/// What happened at the station, in the order it happened: the ONE stream every view of the
/// station (terminal, log, JSON lines, state file, systemd status, web page) is fed from.
public enum StationEvent: Sendable {
    /// The station's own life: `ready` (with its slots), `stopping` (why, and how many jobs still
    /// run) and `stopped`.
    case station(StationLifecycle)
    /// A slot's status changed (a state change at once; progress within a phase at most twice a
    /// second per slot).
    case slot(SlotStatus)
    /// A job's own reporter output, tagged with its slot.
    case job(slot: String, JobReport)
    /// A job ended (well or not), with the result `piflash flash --json` prints.
    case result(slot: String, FlashResult)
    /// A line for the operator (why a card was left alone, what the station does on a signal).
    case note(String)
    /// Something the operator must see.
    case warning(String)
    /// The journal's database stopped answering (`reachable` false, with why) or answers again: a
    /// PostgreSQL journal shared by several stations can be lost for a while.
    case journal(reachable: Bool, detail: String?)
    /// The event loop's heartbeat (about four a second): views that show elapsed times or
    /// throttle their redraws catch up here.
    case tick
}

/// The station's lifecycle events.
public enum StationLifecycle: Sendable {
    case ready(config: String, slots: [String])
    case stopping(reason: String, runningJobs: Int)
    case stopped
}

/// One call a flash job made on its ``Reporter``.
public enum JobReport: Sendable {
    case begin(phase: String, total: UInt64?)
    case progress(phase: String, done: UInt64, total: UInt64?)
    case end(phase: String, bytes: UInt64, seconds: Double)
    case note(String)
    case warning(String)
    case event(name: String, fields: [(String, JSONValue)])
}

/// A view of the station: receives every ``StationEvent`` synchronously, on the thread that
/// produced it (the event loop or a job's thread), so implementations are thread-safe and quick.
public protocol StationObserver: AnyObject, Sendable {
    func station(_ event: StationEvent)
}

/// Fans the station's events out to its observers, in the order they were added.
public final class StationStream: Sendable {
    private let observers = Locked<[any StationObserver]>([])

    public init() {}

    /// Adds a view; it receives the events from now on.
    public func add(_ observer: any StationObserver) {
        observers.withLock { $0.append(observer) }
    }

    /// Sends one event to every view.
    public func send(_ event: StationEvent) {
        for observer in observers.withLock({ $0 }) { observer.station(event) }
    }
}
