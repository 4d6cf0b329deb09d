import Foundation
import Glibc

/// One station as its views show it: who it is, whether it runs, and its slots. The station
/// serving the view gives its live state (``LocalStationSource``); the other stations of a shared
/// journal give the state of their last heartbeat (``FleetStationSource``).
public struct StationSnapshot: Sendable {
    /// `station@NAME` (the station file's `name`, else the machine's): the prefix of its slots'
    /// journal claimants.
    public var name: String
    public var machine: String
    public var pid: Int32
    /// The station file; nil for another station (its heartbeat does not carry it).
    public var config: String?
    /// The hosts folder; nil for another station.
    public var hosts: String?
    public var startedAt: Date
    /// When this state was last known to be current: now for the local station, its last
    /// heartbeat for another (measured by the database's clock, expressed on this machine's).
    public var updatedAt: Date
    /// The local station; or another whose heartbeat is not stale.
    public var running: Bool
    public var slots: [SlotStatus]
    /// Whether this is the station serving the view (its slots are live, not a heartbeat's).
    public var isLocal: Bool
    /// Seconds since its last heartbeat, by the database's clock; nil for the local station.
    public var heartbeatAge: Double?
    /// Why the other stations of the journal cannot be shown now (its database does not
    /// answer); set on the local station only.
    public var journalError: String?

    public init(name: String, machine: String, pid: Int32, config: String?, hosts: String?, startedAt: Date,
                updatedAt: Date, running: Bool, slots: [SlotStatus], isLocal: Bool = true, heartbeatAge: Double? = nil,
                journalError: String? = nil) {
        self.name = name
        self.machine = machine
        self.pid = pid
        self.config = config
        self.hosts = hosts
        self.startedAt = startedAt
        self.updatedAt = updatedAt
        self.running = running
        self.slots = slots
        self.isLocal = isLocal
        self.heartbeatAge = heartbeatAge
        self.journalError = journalError
    }

    /// A station whose heartbeat is older than the heartbeat timeout: it stopped or was killed
    /// (its slots show what they last were; its claims return to the queue).
    public var isStale: Bool { !isLocal && !running }

    /// The station's JSON object (`/api/stations`): the fields above, slots as in `slot` events.
    public var json: JSONValue {
        .object([
            ("name", .string(name)), ("machine", .string(machine)), ("pid", .int(Int64(pid))), ("config", .string(config)),
            ("hosts", .string(hosts)), ("started_at", .string(iso8601UTC(startedAt))),
            ("updated_at", .string(iso8601UTC(updatedAt))), ("running", .bool(running)), ("local", .bool(isLocal)),
            ("stale", .bool(isStale)),
            ("heartbeat_age_seconds", heartbeatAge.map { .double(($0 * 10).rounded() / 10) } ?? .null),
            ("journal_error", .string(journalError)),
            ("slots", .array(slots.map { .object($0.jsonFields) })),
        ])
    }
}

/// The queue as the journal shows it: each host done (flashed successfully), claimed (being
/// flashed) or remaining, in hand-out order.
public struct QueueSnapshot: Sendable, Equatable {
    /// Where a queue host stands.
    public enum Standing: String, Sendable {
        case done, claimed, remaining
    }

    /// One host of the queue.
    public struct Host: Sendable, Equatable {
        public var name: String
        public var standing: Standing
        /// Who claimed it (`station@NAME:slot`), while claimed.
        public var claimant: String?
        /// The journal entry of its successful flash, when done.
        public var journalID: Int64?

        public init(name: String, standing: Standing, claimant: String? = nil, journalID: Int64? = nil) {
            self.name = name
            self.standing = standing
            self.claimant = claimant
            self.journalID = journalID
        }
    }

    public var hosts: [Host]

    public init(hosts: [Host]) {
        self.hosts = hosts
    }

    /// How many hosts stand so.
    public func count(_ standing: Standing) -> Int { hosts.filter { $0.standing == standing }.count }

    /// The queue from the journal, fleet-wide: successes, and claims renewed within `staleAfter`
    /// seconds (a stale claim's host is remaining: the next claim takes it over).
    /// - Throws: ``PiflashError`` when the journal cannot be read.
    public static func read(queue: [String], journal: Journal, staleAfter: Double) throws -> QueueSnapshot {
        let status = try journal.queueStatus(queue: queue, staleAfter: staleAfter)
        let done = Set(status.done)
        let claims = Dictionary(status.claimed.map { ($0.host, $0.claimant) }, uniquingKeysWith: { first, _ in first })
        return QueueSnapshot(hosts: try queue.map { name in
            if done.contains(name), let entry = try journal.lastSuccess(host: name) {
                return Host(name: name, standing: .done, journalID: entry.id)
            }
            if let claimant = claims[name] { return Host(name: name, standing: .claimed, claimant: claimant) }
            return Host(name: name, standing: .remaining)
        })
    }

    /// `/api/queue`: counts and hosts.
    public var json: JSONValue {
        .object([
            ("done", .int(Int64(count(.done)))), ("claimed", .int(Int64(count(.claimed)))),
            ("remaining", .int(Int64(count(.remaining)))),
            ("hosts", .array(hosts.map { host in
                .object([("host", .string(host.name)), ("state", .string(host.standing.rawValue)),
                         ("claimant", .string(host.claimant)), ("journal_id", host.journalID.map { .int($0) } ?? .null)])
            })),
        ])
    }
}

/// Where the views read the station's state from: the stations, the queue and the newest
/// journal entries. ``LocalStationSource`` reads this station and its journal;
/// ``FleetStationSource`` adds every other station that heart-beats into the same journal.
public protocol StationSnapshotSource: Sendable {
    /// Every station known, this one first.
    func stations() throws -> [StationSnapshot]
    /// The queue's hosts.
    func queue() throws -> QueueSnapshot
    /// The newest journal entries, newest first.
    func journal(limit: Int) throws -> [JournalEntry]
}

/// The running station in this process and its journal (the terminal screen's source).
public struct LocalStationSource: StationSnapshotSource {
    private let daemon: StationDaemon

    public init(daemon: StationDaemon) {
        self.daemon = daemon
    }

    public func stations() throws -> [StationSnapshot] {
        [StationSnapshot(name: StationDaemon.label(of: daemon.name), machine: daemon.machine, pid: getpid(),
                         config: daemon.config.path, hosts: daemon.catalog.directory, startedAt: daemon.startedAt,
                         updatedAt: Date(), running: true, slots: daemon.board.statuses)]
    }

    public func queue() throws -> QueueSnapshot {
        try QueueSnapshot.read(queue: daemon.config.queue, journal: daemon.journal,
                               staleAfter: daemon.config.heartbeatTimeout)
    }

    public func journal(limit: Int) throws -> [JournalEntry] {
        try daemon.journal.entries(limit: limit)
    }
}
