#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import PiflashPlatform
import Synchronization

/// One flash attempt as the journal keeps it: what was written where, how fast, what was
/// injected (paths and digests, never content; keyed digests of secret-derived content) and how
/// it ended.
///
/// A row is written when the attempt begins (``Journal/begin(_:)``) and completed when it ends
/// (``Journal/finish(_:)``), so a crash mid-flash still leaves a row with no `finishedAt`.
public struct JournalEntry: Sendable, Equatable, Codable {
    /// The row id; nil before the entry is stored.
    public var id: Int64?
    public var startedAt: Date
    /// Nil while the attempt runs, and forever when the process died during it.
    public var finishedAt: Date?
    /// `flash`, `write` or `station`.
    public var command: String
    public var host: String?
    /// The station slot, for station flashes.
    public var slot: String?
    /// The station that flashed the card (`station` entries; its file's `name`, else its machine's).
    public var station: String?
    /// The device node (`/dev/sdb`); nil for `--output`.
    public var devicePath: String?
    public var deviceModel: String?
    public var deviceSerial: String?
    /// The udev `ID_PATH` (which reader/port).
    public var deviceByPath: String?
    public var deviceSize: UInt64?
    /// The image file written with `--output`.
    public var outputPath: String?
    public var imagePath: String
    /// SHA-256 of the uncompressed image, lower-case hex, once known.
    public var imageSHA256: String?
    public var bytes: UInt64?
    public var writeSeconds: Double?
    public var verifySeconds: Double?
    public var injectSeconds: Double?
    /// Bytes per second.
    public var writeRate: Double?
    /// Bytes per second.
    public var verifyRate: Double?
    public var files: [InjectedFile]
    /// The card map's injected part: every range the injection wrote, with digests (keyed when
    /// the host has secrets). With ``imageSHA256`` and ``bytes`` it lets `verify --host` check the
    /// whole card later.
    public var injectedBlocks: [InjectedBlock] = []
    /// The uncompressed image's size.
    public var imageBytes: UInt64?
    /// The bytes written: the mapped ranges of a sparse flash, or the whole image.
    public var mappedBytes: UInt64?
    /// The ranges a sparse flash wrote, with the image's digests there; empty for a full write.
    public var writtenRanges: [WrittenRange] = []
    /// `SHA256:…` of the pinned host key.
    public var hostKeyFingerprint: String?
    public var ok: Bool
    public var error: String?
    public var exitCode: Int32?

    public init(
        id: Int64? = nil, startedAt: Date = Date(), finishedAt: Date? = nil, command: String, host: String? = nil,
        slot: String? = nil, station: String? = nil, devicePath: String? = nil, deviceModel: String? = nil, deviceSerial: String? = nil,
        deviceByPath: String? = nil, deviceSize: UInt64? = nil, outputPath: String? = nil, imagePath: String,
        imageSHA256: String? = nil, bytes: UInt64? = nil, writeSeconds: Double? = nil, verifySeconds: Double? = nil,
        injectSeconds: Double? = nil, writeRate: Double? = nil, verifyRate: Double? = nil, files: [InjectedFile] = [],
        hostKeyFingerprint: String? = nil, ok: Bool = false, error: String? = nil, exitCode: Int32? = nil,
        injectedBlocks: [InjectedBlock] = []
    ) {
        self.injectedBlocks = injectedBlocks
        self.id = id
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.command = command
        self.host = host
        self.slot = slot
        self.station = station
        self.devicePath = devicePath
        self.deviceModel = deviceModel
        self.deviceSerial = deviceSerial
        self.deviceByPath = deviceByPath
        self.deviceSize = deviceSize
        self.outputPath = outputPath
        self.imagePath = imagePath
        self.imageSHA256 = imageSHA256
        self.bytes = bytes
        self.writeSeconds = writeSeconds
        self.verifySeconds = verifySeconds
        self.injectSeconds = injectSeconds
        self.writeRate = writeRate
        self.verifyRate = verifyRate
        self.files = files
        self.hostKeyFingerprint = hostKeyFingerprint
        self.ok = ok
        self.error = error
        self.exitCode = exitCode
    }

    /// How the attempt ended, in a word: `ok`, `failed`, or `unfinished` (still running, or the
    /// process died).
    public var outcome: String {
        if ok { return "ok" }
        return finishedAt == nil ? "unfinished" : "failed"
    }

    private static func size(_ value: UInt64?) -> JSONValue { value.map { .uint($0) } ?? .null }

    /// The entry as one JSON object, with the field names of the `--json` result.
    public var json: JSONValue {
        func number(_ value: Double?) -> JSONValue { value.map { .double($0) } ?? .null }
        return .object([
            ("id", id.map { .int($0) } ?? .null),
            ("started_at", .string(iso8601UTC(startedAt))),
            ("finished_at", .string(finishedAt.map(iso8601UTC))),
            ("command", .string(command)),
            ("host", .string(host)),
            ("slot", .string(slot)),
            ("station", .string(station)),
            ("device", .string(devicePath)),
            ("device_model", .string(deviceModel)),
            ("device_serial", .string(deviceSerial)),
            ("device_by_path", .string(deviceByPath)),
            ("device_size", deviceSize.map { .uint($0) } ?? .null),
            ("output", .string(outputPath)),
            ("image", .string(imagePath)),
            ("image_sha256", .string(imageSHA256)),
            ("bytes", bytes.map { .uint($0) } ?? .null),
            ("write_seconds", number(writeSeconds)),
            ("verify_seconds", number(verifySeconds)),
            ("inject_seconds", number(injectSeconds)),
            ("write_rate", number(writeRate)),
            ("verify_rate", number(verifyRate)),
            ("files", .array(files.map { .object($0.jsonFields) })),
            ("injected_blocks", .array(injectedBlocks.map(\.json))),
            ("image_bytes", Self.size(imageBytes)),
            ("mapped_bytes", Self.size(mappedBytes)),
            ("written_ranges", .array(writtenRanges.map(\.json))),
            ("host_key_fingerprint", .string(hostKeyFingerprint)),
            ("ok", .bool(ok)),
            ("result", .string(outcome)),
            ("error", .string(error)),
            ("exit_code", exitCode.map { .int(Int64($0)) } ?? .null),
        ])
    }
}

/// The flash journal: every attempt, and the station's host claims and heartbeats. Either an
/// SQLite file (WAL mode; the default, shared between the processes of one machine through
/// SQLite's locking) or a PostgreSQL database (`postgresql://USER@HOST/DB`, shared by several
/// stations). Both run the same statements and the same schema (``JournalSchema``). Safe to share
/// between threads (one connection behind a lock).
///
/// With PostgreSQL the connection can be lost (the server restarts, the network drops): a write
/// that finds it lost is kept in memory, in order, and written by ``flushPending()`` once the
/// server answers again; every attempt carries an idempotency key, so a write repeated after a lost
/// answer updates its row instead of adding one. Until then ``isAvailable`` is false.
public final class Journal: Sendable {
    /// The schema version (SQLite: `PRAGMA user_version`; PostgreSQL: the `schema_version` table);
    /// the steps are in ``JournalSchema``.
    public static var schemaVersion: Int64 { JournalSchema.version }

    /// The database file, or the PostgreSQL URL without its password.
    public let path: String
    /// Whether the journal is a PostgreSQL database (shared by several machines).
    public let isShared: Bool
    private let store: any JournalStore
    private let pending = Mutex(Outbox())
    /// `pending`'s count, readable without waiting for a write in progress.
    private let waiting = Atomic<Int>(0)

    /// Where the journal lives: `explicit` (`--journal PATH` or `postgresql://…`), else for root
    /// `/var/lib/piflash/journal.sqlite`, else `$XDG_STATE_HOME/piflash/journal.sqlite`
    /// (`$XDG_STATE_HOME` defaulting to `~/.local/state`).
    public static func defaultPath(
        explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
        isRoot: Bool = geteuid() == 0
    ) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        if isRoot { return "/var/lib/piflash/journal.sqlite" }
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            return state + "/piflash/journal.sqlite"
        }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.local/state/piflash/journal.sqlite"
    }

    /// Whether `location` names a PostgreSQL database (`postgresql://…` or `postgres://…`) rather
    /// than an SQLite file.
    public static func isDatabaseURL(_ location: String) -> Bool { PostgreSQLLocation.isURL(location) }

    /// Checks a `postgresql://` URL without connecting.
    /// - Throws: ``PiflashError`` (exit 2) naming what is missing or wrong.
    public static func checkDatabaseURL(_ url: String) throws {
        _ = try PostgreSQLLocation(url: url, environment: [:])
    }

    /// Opens the journal at `path` — an SQLite file, or a `postgresql://USER@HOST[:PORT]/DB` URL —
    /// and brings its schema up to date. An SQLite file is created with its folder (0755) and
    /// switched to WAL mode.
    ///
    /// - Throws: ``PiflashError`` (exit 1) when the folder or file cannot be created or opened, or
    ///   the server cannot be reached; (exit 2) for a malformed URL, or when the database holds a
    ///   newer schema than this piflash knows.
    public init(path: String) throws {
        if PostgreSQLLocation.isURL(path) {
            let location = try PostgreSQLLocation(url: path)
            self.path = location.description
            isShared = true
            store = PostgreSQLJournalStore(try PostgreSQLConnection(location: location))
        } else {
            self.path = path
            isShared = false
            store = try SQLiteJournalStore(path: path)
        }
        try plain { try store.migrate(Journal.migrate) }
    }

    private static func migrate(_ sql: any JournalSQL, _ dialect: JournalDialect, _ path: String) throws {
        for statement in dialect.prepareMigration { try sql.run(statement, []) }
        let version = try sql.query(dialect.readVersion, []).first?[0].int64 ?? 0
        if version > schemaVersion {
            throw PiflashError.usage(
                "the journal has schema version \(version), newer than this piflash knows (\(schemaVersion))",
                path: path, hint: "use a newer piflash, or another journal with --journal")
        }
        let steps = JournalSchema.migrations.filter { $0.version > version }
        guard !steps.isEmpty else { return }
        for step in steps {
            for statement in step.statements(dialect) { try sql.run(statement, []) }
        }
        for statement in dialect.writeVersion(schemaVersion) { try sql.run(statement, []) }
    }

    /// Runs `body`, turning the store's connection-lost marker back into the plain error.
    private func plain<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let lost as JournalConnectionLost {
            throw lost.error
        }
    }

    /// Runs `body` on the SQLite connection, for maintenance only SQLite has (`VACUUM`, WAL
    /// checkpoints).
    /// - Throws: ``PiflashError`` (exit 2) for a PostgreSQL journal.
    func withDatabase<T: Sendable>(_ body: (SQLiteDatabase) throws -> T) throws -> T {
        guard let sqlite = store as? SQLiteJournalStore else {
            throw PiflashError.usage("this works on an SQLite journal only, not on \(path)")
        }
        return try sqlite.withDatabase(body)
    }

    func read<T: Sendable>(_ body: (any JournalSQL) throws -> T) throws -> T {
        try plain { try store.transaction(write: false, body) }
    }

    // MARK: Attempts

    /// Stores a new attempt as it begins (its `finishedAt` normally nil) and returns its id.
    ///
    /// With PostgreSQL and the connection lost, the row is kept in memory and written when the
    /// server is back (``flushPending()``); the id returned is then a provisional negative number
    /// that ``finish(_:)`` understands.
    public func begin(_ entry: JournalEntry) throws -> Int64 {
        try perform(.begin(entry, attempt: UUID().uuidString.lowercased()))
    }

    /// Stores a whole attempt at once (begun and finished) and returns its id.
    public func record(_ entry: JournalEntry) throws -> Int64 {
        var entry = entry
        if entry.finishedAt == nil { entry.finishedAt = Date() }
        return try begin(entry)
    }

    /// Completes the attempt `entry.id` with everything in `entry` (results, timings, files,
    /// error); sets `finishedAt` to now when it is nil. Kept in memory like ``begin(_:)`` when a
    /// PostgreSQL connection is lost.
    ///
    /// - Throws: ``PiflashError`` when there is no such row or the database fails.
    public func finish(_ entry: JournalEntry) throws {
        guard let id = entry.id else { preconditionFailure("Journal.finish needs the id that begin returned") }
        var entry = entry
        if entry.finishedAt == nil { entry.finishedAt = Date() }
        let attempt = pending.withLock { $0.attempts[id] }
        precondition(id > 0 || attempt != nil, "Journal.finish of a provisional id another Journal returned")
        _ = try perform(.finish(entry, attempt: attempt))
    }

    /// Attempts, newest first, of one host (or all), at most `limit` (or all).
    public func entries(host: String? = nil, limit: Int? = nil) throws -> [JournalEntry] {
        var sql = "SELECT * FROM flashes"
        var parameters: [SQLiteValue] = []
        if let host {
            sql += " WHERE host = ?"
            parameters.append(.text(host))
        }
        sql += " ORDER BY id DESC"
        if let limit {
            sql += " LIMIT ?"
            parameters.append(.integer(Int64(max(0, limit))))
        }
        let query = sql
        let bound = parameters
        return try read { db in try Journal.entries(try db.query(query, bound), db: db) }
    }

    /// The attempt with this id, or nil.
    public func entry(id: Int64) throws -> JournalEntry? {
        try read { db in try Journal.entries(try db.query("SELECT * FROM flashes WHERE id = ?", [.integer(id)]), db: db) }
            .first
    }

    /// The newest successful attempt for a host, or nil when it was never flashed successfully.
    public func lastSuccess(host: String) throws -> JournalEntry? {
        try read { db in
            try Journal.entries(
                try db.query("SELECT * FROM flashes WHERE host = ? AND ok = 1 ORDER BY id DESC LIMIT 1", [.text(host)]),
                db: db)
        }.first
    }

    // MARK: Station claims

    /// Atomically picks the first host of `queue` that has never been flashed successfully and
    /// has no live claim, and claims it for `claimant`. The whole decision holds the claims
    /// table's write lock (SQLite's `BEGIN IMMEDIATE`; PostgreSQL's `LOCK TABLE claims`), so two
    /// stations (or two slots) sharing the journal never get the same host, and a host whose
    /// success was recorded before its claim was released is never handed out again.
    ///
    /// - Parameters:
    ///   - queue: host names, in the order they are handed out.
    ///   - claimant: who claims (e.g. `station@bench-1:A`); shown in the claims table.
    ///   - staleAfter: a claim not renewed (``heartbeat(_:)``) for this many seconds, by the
    ///     database's clock, is dead (its station crashed or lost the database) and is taken over.
    /// - Returns: the claimed host, or nil when every host is done or claimed.
    public func claimNextHost(queue: [String], claimant: String, staleAfter: Double = 6 * 3600) throws -> String? {
        guard !queue.isEmpty else { return nil }
        let dialect = store.dialect
        return try plain {
            try store.transaction(write: true) { db in
                if let lock = dialect.lockClaims { try db.run(lock, []) }
                guard let host = try Journal.queueStatus(queue, staleAfter: staleAfter, db: db, dialect: dialect)
                    .remaining.first else { return nil }
                try db.run(
                    """
                    INSERT INTO claims (host, claimant, claimed_at, claimed_unix) VALUES (?, ?, ?, \(dialect.nowEpoch))
                    ON CONFLICT (host) DO UPDATE SET claimant = excluded.claimant, claimed_at = excluded.claimed_at,
                        claimed_unix = excluded.claimed_unix
                    """,
                    [.text(host), .text(claimant), .text(iso8601UTC(Date()))])
                return host
            }
        }
    }

    /// Where each host of `queue` stands: flashed successfully (`done`), claimed by a live claim
    /// (`claimed`, with the claimant), or to be handed out (`remaining`), each in queue order.
    public func queueStatus(queue: [String], staleAfter: Double = 6 * 3600) throws -> QueueStatus {
        guard !queue.isEmpty else { return QueueStatus(done: [], claimed: [], remaining: []) }
        let dialect = store.dialect
        return try read { db in try Journal.queueStatus(queue, staleAfter: staleAfter, db: db, dialect: dialect) }
    }

    private static func queueStatus(_ queue: [String], staleAfter: Double, db: any JournalSQL, dialect: JournalDialect)
        throws -> QueueStatus
    {
        let marks = Array(repeating: "?", count: queue.count).joined(separator: ", ")
        let hosts = queue.map { SQLiteValue.text($0) }
        let flashed = Set(try db.query(
            "SELECT DISTINCT host FROM flashes WHERE ok = 1 AND host IN (\(marks))", hosts
        ).compactMap { $0[0].string })
        var claimants: [String: String] = [:]
        for row in try db.query(
            "SELECT host, claimant FROM claims WHERE claimed_unix >= \(dialect.nowEpoch) - ? AND host IN (\(marks))",
            [.real(staleAfter)] + hosts)
        {
            if let host = row[0].string { claimants[host] = row[1].string ?? "" }
        }
        return QueueStatus(
            done: queue.filter { flashed.contains($0) },
            claimed: queue.compactMap { host in
                flashed.contains(host) ? nil : claimants[host].map { (host: host, claimant: $0) }
            },
            remaining: queue.filter { !flashed.contains($0) && claimants[$0] == nil })
    }

    /// Releases `claimant`'s claim on `host` (after its flash ended, well or not), so the host can
    /// be handed out again if it still has no successful flash. Releasing a claim that is not
    /// held is not an error. Kept in memory like ``begin(_:)`` when a PostgreSQL connection is
    /// lost, and written after the attempts before it.
    public func releaseClaim(host: String, claimant: String) throws {
        _ = try perform(.release(host: host, claimant: claimant))
    }

    /// Releases every claim of `claimant` (a station starting up again after a crash).
    public func releaseClaims(claimant: String) throws {
        _ = try perform(.release(host: nil, claimant: claimant))
    }

    /// The live claims: host and claimant.
    public func claims() throws -> [(host: String, claimant: String)] {
        let rows = try read { db in try db.query("SELECT host, claimant FROM claims ORDER BY host", []) }
        return rows.map { (host: $0["host"].string ?? "", claimant: $0["claimant"].string ?? "") }
    }

    // MARK: Stations

    /// Records that a station is alive: its row in `stations` (machine, pid, start, its slots'
    /// state as JSON) gets the database's time, and the claims of its `claimants` are renewed,
    /// so they stay live while it heart-beats. Writes what was kept in memory first.
    ///
    /// - Throws: ``PiflashError`` when the database cannot be reached (nothing is kept: the next
    ///   heartbeat says the same, newer).
    public func heartbeat(_ beat: StationHeartbeat, claimants: [String]) throws {
        try flushPending()
        let dialect = store.dialect
        try plain {
            try store.transaction(write: true) { db in
                try db.run(
                    """
                    INSERT INTO stations (name, machine, pid, started_at, heartbeat_at, heartbeat_unix, slots)
                    VALUES (?, ?, ?, ?, ?, \(dialect.nowEpoch), ?)
                    ON CONFLICT (name) DO UPDATE SET machine = excluded.machine, pid = excluded.pid,
                        started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                        heartbeat_unix = excluded.heartbeat_unix, slots = excluded.slots
                    """,
                    [.text(beat.name), .text(beat.machine), .integer(Int64(beat.pid)), .text(iso8601UTC(beat.startedAt)),
                     .text(iso8601UTC(Date())), .text(beat.slots)])
                if !claimants.isEmpty {
                    let marks = Array(repeating: "?", count: claimants.count).joined(separator: ", ")
                    try db.run("UPDATE claims SET claimed_unix = \(dialect.nowEpoch) WHERE claimant IN (\(marks))",
                               claimants.map { .text($0) })
                }
            }
        }
    }

    /// Every station that ever heart-beat into this journal, with the seconds since its last
    /// heartbeat by the database's clock (`age`), by name.
    public func stations() throws -> [(station: StationHeartbeat, heartbeatAt: Date, age: Double)] {
        let dialect = store.dialect
        let rows = try read { db in
            try db.query("SELECT *, \(dialect.nowEpoch) - heartbeat_unix AS age FROM stations ORDER BY name", [])
        }
        return rows.map { row in
            return (StationHeartbeat(name: row["name"].string ?? "", machine: row["machine"].string ?? "",
                                     pid: Int32(truncatingIfNeeded: row["pid"].int64 ?? 0),
                                     startedAt: row["started_at"].string.flatMap(parseISO8601UTC) ?? Date(timeIntervalSince1970: 0),
                                     slots: row["slots"].string ?? "[]"),
                    row["heartbeat_at"].string.flatMap(parseISO8601UTC) ?? Date(timeIntervalSince1970: 0),
                    row["age"].double ?? .infinity)
        }
    }

    // MARK: Writes kept while the database is unreachable

    /// Whether the journal can be written now: always for SQLite; for PostgreSQL, when the last
    /// statement reached the server and nothing waits in memory.
    public var isAvailable: Bool {
        store.isReachable && waiting.load(ordering: .relaxed) == 0
    }

    /// How many writes wait in memory for the database to come back.
    public var pendingWrites: Int { waiting.load(ordering: .relaxed) }

    /// Writes what was kept in memory while the database was unreachable, in order; stops at the
    /// first that still cannot be written. A write the database refuses for another reason (it
    /// can never succeed) is dropped and reported.
    /// - Returns: how many writes still wait.
    /// - Throws: ``PiflashError`` when the database is still unreachable.
    @discardableResult
    public func flushPending() throws -> Int {
        try pending.withLock { outbox in
            var refused: [String] = []
            while let write = outbox.writes.first {
                do {
                    let id = try apply(write)
                    if case .begin(_, let attempt) = write, let id,
                       let provisional = outbox.attempts.first(where: { $0.value == attempt && $0.key < 0 })?.key {
                        outbox.attempts[id] = attempt
                        outbox.attempts[provisional] = attempt
                    }
                } catch let lost as JournalConnectionLost {
                    throw lost.error
                } catch {
                    refused.append("\(error)")
                }
                outbox.writes.removeFirst()
                waiting.store(outbox.writes.count, ordering: .relaxed)
            }
            if !refused.isEmpty {
                throw PiflashError.failure("the journal refused \(refused.count) kept write(s): " + refused.joined(separator: "; "),
                                           path: path)
            }
            return outbox.writes.count
        }
    }

    /// Applies a write now, or keeps it when the connection is lost (or earlier writes wait).
    private func perform(_ write: JournalWrite) throws -> Int64 {
        try pending.withLock { outbox -> Int64 in
            func keep() -> Int64 {
                outbox.writes.append(write)
                waiting.store(outbox.writes.count, ordering: .relaxed)
                guard case .begin(_, let attempt) = write else { return 0 }
                outbox.nextProvisional -= 1
                outbox.attempts[outbox.nextProvisional] = attempt
                return outbox.nextProvisional
            }
            if !outbox.writes.isEmpty { return keep() }
            do {
                let id = try apply(write) ?? 0
                if case .begin(_, let attempt) = write { outbox.attempts[id] = attempt }
                return id
            } catch let lost as JournalConnectionLost {
                guard store.keepsWritesWhenLost else { throw lost.error }
                return keep()
            }
        }
    }

    /// Runs one write; returns the row id for `begin`.
    private func apply(_ write: JournalWrite) throws -> Int64? {
        let path = path
        return try store.transaction(write: true) { db -> Int64? in
            switch write {
            case .begin(let entry, let attempt):
                // Idempotent: a begin repeated after a lost answer finds its row.
                if let id = try db.query("SELECT id FROM flashes WHERE attempt = ?", [.text(attempt)]).first?[0].int64 {
                    return id
                }
                let columns = Journal.columns + ["attempt"]
                let marks = Array(repeating: "?", count: columns.count).joined(separator: ", ")
                guard let id = try db.query(
                    "INSERT INTO flashes (\(columns.joined(separator: ", "))) VALUES (\(marks)) RETURNING id",
                    Journal.values(entry) + [.text(attempt)]
                ).first?[0].int64 else {
                    throw PiflashError.failure("the journal returned no id for a new attempt", path: path)
                }
                try Journal.storeFiles(entry.files, id: id, db: db)
                try Journal.storeBlocks(entry.injectedBlocks, id: id, db: db)
                try Journal.storeRanges(entry.writtenRanges, id: id, db: db)
                return id
            case .finish(let entry, let attempt):
                let assignments = Journal.columns.map { "\($0) = ?" }.joined(separator: ", ")
                let key: SQLiteValue = attempt.map { SQLiteValue.text($0) } ?? SQLiteValue.integer(entry.id)
                let rows = try db.query(
                    "UPDATE flashes SET \(assignments) WHERE \(attempt == nil ? "id" : "attempt") = ? RETURNING id",
                    Journal.values(entry) + [key])
                guard rows.count == 1, let id = rows[0][0].int64 else {
                    throw PiflashError.failure("the journal has no attempt with id \(entry.id ?? 0)", path: path)
                }
                try db.run("DELETE FROM injected_files WHERE flash_id = ?", [.integer(id)])
                try Journal.storeFiles(entry.files, id: id, db: db)
                try db.run("DELETE FROM injected_blocks WHERE flash_id = ?", [.integer(id)])
                try Journal.storeBlocks(entry.injectedBlocks, id: id, db: db)
                try db.run("DELETE FROM written_ranges WHERE flash_id = ?", [.integer(id)])
                try Journal.storeRanges(entry.writtenRanges, id: id, db: db)
                return id
            case .release(let host, let claimant):
                if let host {
                    try db.run("DELETE FROM claims WHERE host = ? AND claimant = ?", [.text(host), .text(claimant)])
                } else {
                    try db.run("DELETE FROM claims WHERE claimant = ?", [.text(claimant)])
                }
                return nil
            }
        }
    }

    // MARK: Rows

    private static let columns = [
        "started_at", "finished_at", "command", "host", "slot", "device_path", "device_model", "device_serial",
        "device_by_path", "device_size", "output_path", "image_path", "image_sha256", "bytes", "write_seconds",
        "verify_seconds", "inject_seconds", "write_rate", "verify_rate", "host_key_fingerprint", "ok", "error",
        "exit_code", "image_bytes", "mapped_bytes", "station",
    ]

    private static func values(_ entry: JournalEntry) -> [SQLiteValue] {
        [
            .text(iso8601UTC(entry.startedAt)), .text(entry.finishedAt.map(iso8601UTC)), .text(entry.command),
            .text(entry.host), .text(entry.slot), .text(entry.devicePath), .text(entry.deviceModel),
            .text(entry.deviceSerial), .text(entry.deviceByPath), .integer(entry.deviceSize.map { Int64(clamping: $0) }),
            .text(entry.outputPath), .text(entry.imagePath), .text(entry.imageSHA256),
            .integer(entry.bytes.map { Int64(clamping: $0) }), .real(entry.writeSeconds), .real(entry.verifySeconds),
            .real(entry.injectSeconds), .real(entry.writeRate), .real(entry.verifyRate), .text(entry.hostKeyFingerprint),
            .integer(entry.ok ? 1 : 0), .text(entry.error), .integer(entry.exitCode.map { Int64($0) }),
            .integer(entry.imageBytes.map { Int64(clamping: $0) }), .integer(entry.mappedBytes.map { Int64(clamping: $0) }),
            .text(entry.station),
        ]
    }

    private static func storeRanges(_ ranges: [WrittenRange], id: Int64, db: any JournalSQL) throws {
        for (position, range) in ranges.enumerated() {
            try db.run(
                "INSERT INTO written_ranges (flash_id, position, byte_offset, length, sha256) VALUES (?, ?, ?, ?, ?)",
                [.integer(id), .integer(Int64(position)), .integer(Int64(clamping: range.offset)),
                 .integer(Int64(clamping: range.length)), .text(range.sha256)])
        }
    }

    private static func storeFiles(_ files: [InjectedFile], id: Int64, db: any JournalSQL) throws {
        for (position, file) in files.enumerated() {
            try db.run(
                "INSERT INTO injected_files (flash_id, position, path, digest, digest_kind, mode, uid, gid)"
                    + " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [.integer(id), .integer(Int64(position)), .text(file.path), .text(file.digest.hex ?? ""),
                 .text(file.digest.storedKind), .integer(Int64(file.mode)), .integer(Int64(file.uid)),
                 .integer(Int64(file.gid))])
        }
    }

    private static func storeBlocks(_ blocks: [InjectedBlock], id: Int64, db: any JournalSQL) throws {
        for (position, block) in blocks.enumerated() {
            // Exactly one of the two columns holds the digest: what it is stays visible to any reader.
            let plain: String?, keyed: String?
            switch block.digest {
            case .hmacSHA256(let hex): (plain, keyed) = (nil, hex)
            default: (plain, keyed) = (block.digest.hex, nil)
            }
            try db.run(
                "INSERT INTO injected_blocks (flash_id, position, byte_offset, length, sha256, hmac_sha256)"
                    + " VALUES (?, ?, ?, ?, ?, ?)",
                [.integer(id), .integer(Int64(position)), .integer(Int64(clamping: block.offset)),
                 .integer(Int64(clamping: block.length)), .text(plain), .text(keyed)])
        }
    }

    /// Rows of `flashes` as entries, with their injected files (one query for all of them).
    private static func entries(_ rows: [SQLiteRow], db: any JournalSQL) throws -> [JournalEntry] {
        guard !rows.isEmpty else { return [] }
        let ids = rows.map { $0["id"].int64 ?? 0 }
        var files: [Int64: [InjectedFile]] = [:]
        let marks = Array(repeating: "?", count: ids.count).joined(separator: ", ")
        for file in try db.query(
            "SELECT flash_id, path, digest, digest_kind, mode, uid, gid FROM injected_files WHERE flash_id IN (\(marks)) "
                + "ORDER BY flash_id, position", ids.map { .integer($0) })
        {
            files[file["flash_id"].int64 ?? 0, default: []].append(InjectedFile(
                path: file["path"].string ?? "",
                digest: ContentDigest(storedKind: file["digest_kind"].string, hex: file["digest"].string ?? ""),
                mode: UInt16(truncatingIfNeeded: file["mode"].int64 ?? 0),
                uid: UInt32(truncatingIfNeeded: file["uid"].int64 ?? 0),
                gid: UInt32(truncatingIfNeeded: file["gid"].int64 ?? 0)))
        }
        var blocks: [Int64: [InjectedBlock]] = [:]
        for block in try db.query(
            "SELECT flash_id, byte_offset, length, sha256, hmac_sha256 FROM injected_blocks WHERE flash_id IN (\(marks)) "
                + "ORDER BY flash_id, position", ids.map { .integer($0) })
        {
            let keyed = block["hmac_sha256"].string
            blocks[block["flash_id"].int64 ?? 0, default: []].append(InjectedBlock(
                offset: UInt64(clamping: block["byte_offset"].int64 ?? 0), length: UInt64(clamping: block["length"].int64 ?? 0),
                digest: keyed.map(ContentDigest.hmacSHA256) ?? .sha256(block["sha256"].string ?? "")))
        }
        var written: [Int64: [WrittenRange]] = [:]
        for range in try db.query(
            "SELECT flash_id, byte_offset, length, sha256 FROM written_ranges WHERE flash_id IN (\(marks)) "
                + "ORDER BY flash_id, position", ids.map { .integer($0) })
        {
            written[range["flash_id"].int64 ?? 0, default: []].append(WrittenRange(
                offset: UInt64(clamping: range["byte_offset"].int64 ?? 0),
                length: UInt64(clamping: range["length"].int64 ?? 0), sha256: range["sha256"].string ?? ""))
        }
        return rows.map { row in
            let id = row["id"].int64 ?? 0
            var entry = JournalEntry(
                id: id,
                startedAt: row["started_at"].string.flatMap(parseISO8601UTC) ?? Date(timeIntervalSince1970: 0),
                finishedAt: row["finished_at"].string.flatMap(parseISO8601UTC),
                command: row["command"].string ?? "",
                host: row["host"].string,
                slot: row["slot"].string,
                devicePath: row["device_path"].string,
                deviceModel: row["device_model"].string,
                deviceSerial: row["device_serial"].string,
                deviceByPath: row["device_by_path"].string,
                deviceSize: row["device_size"].int64.map { UInt64(clamping: $0) },
                outputPath: row["output_path"].string,
                imagePath: row["image_path"].string ?? "",
                imageSHA256: row["image_sha256"].string,
                bytes: row["bytes"].int64.map { UInt64(clamping: $0) },
                writeSeconds: row["write_seconds"].double,
                verifySeconds: row["verify_seconds"].double,
                injectSeconds: row["inject_seconds"].double,
                writeRate: row["write_rate"].double,
                verifyRate: row["verify_rate"].double,
                files: files[id] ?? [],
                hostKeyFingerprint: row["host_key_fingerprint"].string,
                ok: row["ok"].int64 == 1,
                error: row["error"].string,
                exitCode: row["exit_code"].int64.map { Int32(truncatingIfNeeded: $0) },
                injectedBlocks: blocks[id] ?? [])
            entry.imageBytes = row["image_bytes"].int64.map { UInt64(clamping: $0) }
            entry.mappedBytes = row["mapped_bytes"].int64.map { UInt64(clamping: $0) }
            entry.writtenRanges = written[id] ?? []
            entry.station = row["station"].string
            return entry
        }
    }
}

/// Where the hosts of a station's queue stand (``Journal/queueStatus(queue:staleAfter:)``).
public struct QueueStatus: Sendable {
    /// Flashed successfully (never handed out again).
    public var done: [String]
    /// Being flashed: a live claim, and who holds it.
    public var claimed: [(host: String, claimant: String)]
    /// Neither: the next claim takes the first.
    public var remaining: [String]
}

/// A station's heartbeat as the journal keeps it (the `stations` table).
public struct StationHeartbeat: Sendable, Equatable {
    /// The station's name (`station` in the station file; the machine's name by default).
    public var name: String
    /// The machine it runs on.
    public var machine: String
    public var pid: Int32
    public var startedAt: Date
    /// Its slots' state: a JSON array of the `slot` events' objects.
    public var slots: String

    public init(name: String, machine: String, pid: Int32, startedAt: Date, slots: String) {
        self.name = name
        self.machine = machine
        self.pid = pid
        self.startedAt = startedAt
        self.slots = slots
    }
}

/// A journal write that can wait in memory while a PostgreSQL connection is lost. Each is
/// idempotent: applied twice, it leaves what applying it once leaves.
private enum JournalWrite: Sendable {
    /// A new attempt, with its idempotency key.
    case begin(JournalEntry, attempt: String)
    /// An attempt's outcome, by idempotency key (or by id for an attempt another process began).
    case finish(JournalEntry, attempt: String?)
    /// A claim (of `host`, or all of the claimant's) given back.
    case release(host: String?, claimant: String)
}

private struct Outbox: Sendable {
    var writes: [JournalWrite] = []
    /// The idempotency key of every attempt this journal began, by id (provisional ids are negative).
    var attempts: [Int64: String] = [:]
    var nextProvisional: Int64 = 0
}

/// A time as ISO 8601 in UTC with milliseconds: `2026-11-23T17:48:47.123Z`.
public func iso8601UTC(_ date: Date) -> String {
    let seconds = date.timeIntervalSince1970
    var whole = time_t(seconds.rounded(.down))
    var millis = Int(((seconds - Double(whole)) * 1000).rounded())
    if millis == 1000 {
        whole += 1
        millis = 0
    }
    var parts = tm()
    gmtime_r(&whole, &parts)
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
        + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms)Z"
}

/// Parses what ``iso8601UTC(_:)`` writes (milliseconds optional); nil for anything else.
public func parseISO8601UTC(_ text: String) -> Date? {
    let bytes = Array(text.utf8)
    guard bytes.count >= 20, bytes.last == UInt8(ascii: "Z") else { return nil }
    func number(_ range: Range<Int>) -> Int32? {
        guard range.upperBound <= bytes.count else { return nil }
        var value: Int32 = 0
        for byte in bytes[range] {
            guard byte >= 48 && byte <= 57 else { return nil }
            value = value * 10 + Int32(byte - 48)
        }
        return value
    }
    guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
        let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19)
    else { return nil }
    var parts = tm()
    parts.tm_year = year - 1900
    parts.tm_mon = month - 1
    parts.tm_mday = day
    parts.tm_hour = hour
    parts.tm_min = minute
    parts.tm_sec = second
    let whole = timegm(&parts)
    var fraction = 0.0
    if bytes.count > 21, bytes[19] == UInt8(ascii: "."), let digits = number(20..<(bytes.count - 1)) {
        fraction = Double(digits) / pow(10, Double(bytes.count - 21))
    }
    return Date(timeIntervalSince1970: Double(whole) + fraction)
}
