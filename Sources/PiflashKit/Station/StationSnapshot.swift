import Foundation
import Glibc

/// One station as its views show it: who it is, whether it runs, and its slots. Today built from
/// the local station; a shared database can give one per station of a fleet.
public struct StationSnapshot: Sendable {
    /// `station@NAME` (the station file's `name`, else the machine's): the prefix of its slots'
    /// journal claimants.
    public var name: String
    public var machine: String
    public var pid: Int32
    /// The station file.
    public var config: String
    /// The hosts folder.
    public var hosts: String
    public var startedAt: Date
    /// When this state was last known to be current (a heartbeat, for a remote station).
    public var updatedAt: Date
    public var running: Bool
    public var slots: [SlotStatus]

    public init(name: String, machine: String, pid: Int32, config: String, hosts: String, startedAt: Date, updatedAt: Date,
                running: Bool, slots: [SlotStatus]) {
        self.name = name
        self.machine = machine
        self.pid = pid
        self.config = config
        self.hosts = hosts
        self.startedAt = startedAt
        self.updatedAt = updatedAt
        self.running = running
        self.slots = slots
    }

    /// The station's JSON object (`/api/stations`): the fields above, slots as in `slot` events.
    public var json: JSONValue {
        .object([
            ("name", .string(name)), ("machine", .string(machine)), ("pid", .int(Int64(pid))), ("config", .string(config)),
            ("hosts", .string(hosts)), ("started_at", .string(iso8601UTC(startedAt))),
            ("updated_at", .string(iso8601UTC(updatedAt))), ("running", .bool(running)),
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

    /// The queue from the journal: successes and live claims.
    /// - Throws: ``PiflashError`` when the journal cannot be read.
    public static func read(queue: [String], journal: Journal) throws -> QueueSnapshot {
        let claims = try journal.claims()
        return QueueSnapshot(hosts: try queue.map { name in
            if let done = try journal.lastSuccess(host: name) {
                return Host(name: name, standing: .done, journalID: done.id)
            }
            if let claim = claims.first(where: { $0.host == name }) {
                return Host(name: name, standing: .claimed, claimant: claim.claimant)
            }
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
/// journal entries. ``LocalStationSource`` reads this station and its journal; a shared database
/// can answer for a whole fleet through the same three questions.
public protocol StationSnapshotSource: Sendable {
    /// Every station known, this one first.
    func stations() throws -> [StationSnapshot]
    /// The queue's hosts.
    func queue() throws -> QueueSnapshot
    /// The newest journal entries, newest first.
    func journal(limit: Int) throws -> [JournalEntry]
}

/// The running station in this process and its journal.
public struct LocalStationSource: StationSnapshotSource {
    private let daemon: StationDaemon

    public init(daemon: StationDaemon) {
        self.daemon = daemon
    }

    public func stations() throws -> [StationSnapshot] {
        [StationSnapshot(name: "station@\(daemon.name)", machine: daemon.machine, pid: getpid(),
                         config: daemon.config.path, hosts: daemon.catalog.directory, startedAt: daemon.startedAt,
                         updatedAt: Date(), running: true, slots: daemon.board.statuses)]
    }

    public func queue() throws -> QueueSnapshot {
        try QueueSnapshot.read(queue: daemon.config.queue, journal: daemon.journal)
    }

    public func journal(limit: Int) throws -> [JournalEntry] {
        try daemon.journal.entries(limit: limit)
    }
}
