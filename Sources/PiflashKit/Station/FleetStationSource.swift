import Foundation

/// Every station of a shared journal, as the web page shows them: the station serving the page
/// with its live state first, then every other station that heart-beats into the same journal
/// (PostgreSQL shared by several machines, or an SQLite file shared by several stations of one
/// machine) with the slots of its last heartbeat, marked stale with its age once the heartbeat is
/// older than `heartbeat_timeout`. The queue and the newest entries are the shared journal's.
///
/// Nothing here is secret: a heartbeat carries the slots' `slot` events (state, host, card,
/// progress), the journal entries are shown without their injected files' digests (``WebAPI``).
public struct FleetStationSource: StationSnapshotSource {
    private let local: any StationSnapshotSource
    private let localName: String
    private let journal: Journal
    private let queueHosts: [String]
    private let heartbeatTimeout: Double

    /// - Parameters:
    ///   - local: the station serving the view (its live state wins over its own heartbeat row).
    ///   - localName: its name in the journal's `stations` table (without `station@`).
    ///   - journal: the shared journal.
    ///   - queue: the queue shown (the local station's).
    ///   - heartbeatTimeout: seconds without a heartbeat after which a station is stale (and its
    ///     claims no longer count as claimed).
    public init(local: any StationSnapshotSource, localName: String, journal: Journal, queue: [String],
                heartbeatTimeout: Double) {
        self.local = local
        self.localName = localName
        self.journal = journal
        self.queueHosts = queue
        self.heartbeatTimeout = heartbeatTimeout
    }

    /// The station in this process, and the journal it shares.
    public init(daemon: StationDaemon) {
        self.init(local: LocalStationSource(daemon: daemon), localName: daemon.name, journal: daemon.journal,
                  queue: daemon.config.queue, heartbeatTimeout: daemon.config.heartbeatTimeout)
    }

    /// The local station, then the others by name. When the journal cannot be read, the local
    /// station alone, with the reason in its ``StationSnapshot/journalError``.
    public func stations() throws -> [StationSnapshot] {
        var stations = try local.stations()
        let rows: [(station: StationHeartbeat, heartbeatAt: Date, age: Double)]
        do {
            rows = try journal.stations()
        } catch {
            if !stations.isEmpty { stations[0].journalError = "\(error)" }
            return stations
        }
        let now = Date()
        for row in rows where row.station.name != localName {
            stations.append(Self.snapshot(row.station, age: row.age, now: now, heartbeatTimeout: heartbeatTimeout))
        }
        return stations
    }

    /// A station as its heartbeat row shows it: `updatedAt` is now minus the heartbeat's age by the
    /// database's clock (so another machine's clock never makes it look fresh or old), `running`
    /// while that age is within `heartbeatTimeout`.
    static func snapshot(_ beat: StationHeartbeat, age: Double, now: Date, heartbeatTimeout: Double) -> StationSnapshot {
        let known = age.isFinite ? max(0, age) : nil
        return StationSnapshot(
            name: StationDaemon.label(of: beat.name), machine: beat.machine, pid: beat.pid, config: nil, hosts: nil,
            startedAt: beat.startedAt,
            updatedAt: known.map { now.addingTimeInterval(-$0) } ?? Date(timeIntervalSince1970: 0),
            running: (known ?? .infinity) <= heartbeatTimeout, slots: slots(fromHeartbeat: beat.slots), isLocal: false,
            heartbeatAge: known)
    }

    /// The slots of a heartbeat's `slots` column (a JSON array of `slot` event objects); an
    /// unreadable column gives no slots rather than failing the whole page.
    static func slots(fromHeartbeat text: String) -> [SlotStatus] {
        guard let array = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else { return [] }
        return array.compactMap(SlotStatus.init(jsonObject:))
    }

    /// The local station's queue, as the shared journal shows it (claims of every station).
    public func queue() throws -> QueueSnapshot {
        try QueueSnapshot.read(queue: queueHosts, journal: journal, staleAfter: heartbeatTimeout)
    }

    /// The newest entries of the shared journal (every station's).
    public func journal(limit: Int) throws -> [JournalEntry] {
        try journal.entries(limit: limit)
    }
}
