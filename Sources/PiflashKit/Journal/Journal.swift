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
    /// `SHA256:…` of the pinned host key.
    public var hostKeyFingerprint: String?
    public var ok: Bool
    public var error: String?
    public var exitCode: Int32?

    public init(
        id: Int64? = nil, startedAt: Date = Date(), finishedAt: Date? = nil, command: String, host: String? = nil,
        slot: String? = nil, devicePath: String? = nil, deviceModel: String? = nil, deviceSerial: String? = nil,
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
            ("host_key_fingerprint", .string(hostKeyFingerprint)),
            ("ok", .bool(ok)),
            ("result", .string(outcome)),
            ("error", .string(error)),
            ("exit_code", exitCode.map { .int(Int64($0)) } ?? .null),
        ])
    }
}

/// The flash journal: an SQLite database (WAL mode) of every attempt, and the station's host
/// claims. Safe to share between threads (one connection behind a lock) and between processes
/// (SQLite locking with a busy timeout).
public final class Journal: Sendable {
    /// The schema version stored in `PRAGMA user_version`: 1 the attempts, their files and the
    /// station's claims; 2 adds `injected_blocks` (the card map); 3 gives injected files a digest
    /// kind (`digest`, `digest_kind`: keyed `hmac_sha256` for secret-derived content, `sha256` for
    /// public content; NULL marks the plain digests of older versions). Older journals are migrated
    /// forward when opened.
    public static let schemaVersion: Int64 = 3

    /// The database file.
    public let path: String
    private let connection: Mutex<SQLiteDatabase>

    /// Where the journal lives: `explicit` (`--journal PATH`), else for root
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

    /// Opens the journal at `path`, creating its folder (0755) and the schema when missing, and
    /// switches it to WAL mode.
    ///
    /// - Throws: ``PiflashError`` (exit 1) when the folder or file cannot be created or opened,
    ///   (exit 2) when the file holds a newer schema than this piflash knows.
    public init(path: String) throws {
        self.path = path
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty && !FileManager.default.fileExists(atPath: folder) {
            do {
                try FileManager.default.createDirectory(
                    atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            } catch {
                throw PiflashError.failure(
                    "cannot create the journal's folder \(folder)", path: path,
                    hint: "choose another file with --journal PATH")
            }
        }
        let db = try SQLiteDatabase(path: path)
        try Journal.migrate(db)
        connection = Mutex(db)
    }

    private static func migrate(_ db: SQLiteDatabase) throws {
        // Several processes may open a fresh journal at once (the station's slots, a concurrent
        // `piflash history`): the switch to WAL and the schema wait for each other.
        try db.retryingWhileBusy { try db.query("PRAGMA journal_mode=WAL") }
        try db.execute("PRAGMA foreign_keys=ON")
        // Deleted and overwritten content (a scrubbed plain digest, rewritten file rows) is zeroed
        // in the file rather than left in free space.
        try db.execute("PRAGMA secure_delete=ON")
        try db.retryingWhileBusy { try migrateSchema(db) }
    }

    private static func migrateSchema(_ db: SQLiteDatabase) throws {
        try db.transaction {
            let version = try db.query("PRAGMA user_version").first?[0].int64 ?? 0
            if version > schemaVersion {
                throw PiflashError.usage(
                    "the journal has schema version \(version), newer than this piflash knows (\(schemaVersion))",
                    path: db.path, hint: "use a newer piflash, or another file with --journal PATH")
            }
            if version < 1 {
                try db.execute(
                    """
                    CREATE TABLE IF NOT EXISTS flashes (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        started_at TEXT NOT NULL,
                        finished_at TEXT,
                        command TEXT NOT NULL,
                        host TEXT,
                        slot TEXT,
                        device_path TEXT,
                        device_model TEXT,
                        device_serial TEXT,
                        device_by_path TEXT,
                        device_size INTEGER,
                        output_path TEXT,
                        image_path TEXT NOT NULL,
                        image_sha256 TEXT,
                        bytes INTEGER,
                        write_seconds REAL,
                        verify_seconds REAL,
                        inject_seconds REAL,
                        write_rate REAL,
                        verify_rate REAL,
                        host_key_fingerprint TEXT,
                        ok INTEGER NOT NULL DEFAULT 0,
                        error TEXT,
                        exit_code INTEGER
                    );
                    CREATE INDEX IF NOT EXISTS flashes_by_host ON flashes(host, ok, id);
                    CREATE TABLE IF NOT EXISTS injected_files (
                        flash_id INTEGER NOT NULL REFERENCES flashes(id) ON DELETE CASCADE,
                        position INTEGER NOT NULL,
                        path TEXT NOT NULL,
                        sha256 TEXT NOT NULL,
                        mode INTEGER NOT NULL,
                        uid INTEGER NOT NULL,
                        gid INTEGER NOT NULL,
                        PRIMARY KEY (flash_id, position)
                    );
                    CREATE TABLE IF NOT EXISTS claims (
                        host TEXT PRIMARY KEY,
                        claimant TEXT NOT NULL,
                        claimed_at TEXT NOT NULL,
                        claimed_unix REAL NOT NULL
                    );
                    PRAGMA user_version = 1;
                    """)
            }
            if version < 2 {
                // The card map: every range an injection wrote, keyed by the attempt. Exactly one of
                // sha256 (a host without secrets) and hmac_sha256 (keyed with the host's digest key) is set.
                try db.execute(
                    """
                    CREATE TABLE IF NOT EXISTS injected_blocks (
                        flash_id INTEGER NOT NULL REFERENCES flashes(id) ON DELETE CASCADE,
                        position INTEGER NOT NULL,
                        byte_offset INTEGER NOT NULL,
                        length INTEGER NOT NULL,
                        sha256 TEXT,
                        hmac_sha256 TEXT,
                        PRIMARY KEY (flash_id, position)
                    );
                    PRAGMA user_version = 2;
                    """)
            }
            if version < 3 {
                // Keyed digests (issue 14): the column says what the digest is. Rows written before
                // keep their plain SHA-256 with digest_kind NULL: read and shown, never written again.
                try db.execute(
                    """
                    ALTER TABLE injected_files RENAME COLUMN sha256 TO digest;
                    ALTER TABLE injected_files ADD COLUMN digest_kind TEXT;
                    PRAGMA user_version = 3;
                    """)
            }
        }
    }

    func withDatabase<T: Sendable>(_ body: (SQLiteDatabase) throws -> T) throws -> T {
        try connection.withLock { db in try body(db) }
    }

    // MARK: Attempts

    /// Stores a new attempt as it begins (its `finishedAt` normally nil) and returns its id.
    public func begin(_ entry: JournalEntry) throws -> Int64 {
        try withDatabase { db in
            try db.transaction {
                try db.run(
                    "INSERT INTO flashes (\(Journal.columns.joined(separator: ", "))) VALUES (\(Journal.placeholders))",
                    Journal.values(entry))
                let id = db.lastInsertRowID
                try Journal.storeFiles(entry.files, id: id, db: db)
                try Journal.storeBlocks(entry.injectedBlocks, id: id, db: db)
                return id
            }
        }
    }

    /// Stores a whole attempt at once (begun and finished) and returns its id.
    public func record(_ entry: JournalEntry) throws -> Int64 {
        var entry = entry
        if entry.finishedAt == nil { entry.finishedAt = Date() }
        return try begin(entry)
    }

    /// Completes the attempt `entry.id` with everything in `entry` (results, timings, files,
    /// error); sets `finishedAt` to now when it is nil.
    ///
    /// - Throws: ``PiflashError`` when there is no such row or the database fails.
    public func finish(_ entry: JournalEntry) throws {
        guard let id = entry.id else { preconditionFailure("Journal.finish needs the id that begin returned") }
        var entry = entry
        if entry.finishedAt == nil { entry.finishedAt = Date() }
        let updated = entry
        try withDatabase { db in
            try db.transaction {
                let assignments = Journal.columns.map { "\($0) = ?" }.joined(separator: ", ")
                let changed = try db.run(
                    "UPDATE flashes SET \(assignments) WHERE id = ?", Journal.values(updated) + [.integer(id)])
                if changed != 1 {
                    throw PiflashError.failure("the journal has no attempt with id \(id)", path: db.path)
                }
                try db.run("DELETE FROM injected_files WHERE flash_id = ?", [.integer(id)])
                try Journal.storeFiles(updated.files, id: id, db: db)
                try db.run("DELETE FROM injected_blocks WHERE flash_id = ?", [.integer(id)])
                try Journal.storeBlocks(updated.injectedBlocks, id: id, db: db)
            }
        }
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
        return try withDatabase { db in
            try db.transaction(immediate: false) {
                try db.query(query, bound).map { row in try Journal.entry(row, db: db) }
            }
        }
    }

    /// The attempt with this id, or nil.
    public func entry(id: Int64) throws -> JournalEntry? {
        try withDatabase { db in
            try db.query("SELECT * FROM flashes WHERE id = ?", [.integer(id)]).first.map { try Journal.entry($0, db: db) }
        }
    }

    /// The newest successful attempt for a host, or nil when it was never flashed successfully.
    public func lastSuccess(host: String) throws -> JournalEntry? {
        try withDatabase { db in
            try db.query(
                "SELECT * FROM flashes WHERE host = ? AND ok = 1 ORDER BY id DESC LIMIT 1", [.text(host)]
            ).first.map { try Journal.entry($0, db: db) }
        }
    }

    // MARK: Station claims

    /// Atomically picks the first host of `queue` that has never been flashed successfully and
    /// has no live claim, and claims it for `claimant`. Runs in a `BEGIN IMMEDIATE` transaction,
    /// so two stations (or two slots) sharing the journal never get the same host.
    ///
    /// - Parameters:
    ///   - queue: host names, in the order they are handed out.
    ///   - claimant: who claims (e.g. `station@machine:slot-A`); shown in the claims table.
    ///   - staleAfter: a claim older than this many seconds is considered dead (its station
    ///     crashed) and is taken over.
    /// - Returns: the claimed host, or nil when every host is done or claimed.
    public func claimNextHost(queue: [String], claimant: String, staleAfter: Double = 6 * 3600) throws -> String? {
        try withDatabase { db in
            try db.transaction(immediate: true) {
                let now = Date()
                let cutoff = now.timeIntervalSince1970 - staleAfter
                for host in queue {
                    let flashed = try db.query(
                        "SELECT 1 FROM flashes WHERE host = ? AND ok = 1 LIMIT 1", [.text(host)])
                    if !flashed.isEmpty { continue }
                    let claim = try db.query("SELECT claimed_unix FROM claims WHERE host = ?", [.text(host)])
                    if let claimedAt = claim.first?[0].double, claimedAt >= cutoff { continue }
                    try db.run(
                        "INSERT OR REPLACE INTO claims (host, claimant, claimed_at, claimed_unix) VALUES (?, ?, ?, ?)",
                        [.text(host), .text(claimant), .text(iso8601UTC(now)), .real(now.timeIntervalSince1970)])
                    return host
                }
                return nil
            }
        }
    }

    /// Releases `claimant`'s claim on `host` (after its flash ended, well or not), so the host can
    /// be handed out again if it still has no successful flash. Releasing a claim that is not
    /// held is not an error.
    public func releaseClaim(host: String, claimant: String) throws {
        try withDatabase { db in
            _ = try db.run("DELETE FROM claims WHERE host = ? AND claimant = ?", [.text(host), .text(claimant)])
        }
    }

    /// Releases every claim of `claimant` (a station starting up again after a crash).
    public func releaseClaims(claimant: String) throws {
        try withDatabase { db in
            _ = try db.run("DELETE FROM claims WHERE claimant = ?", [.text(claimant)])
        }
    }

    /// The live claims: host and claimant.
    public func claims() throws -> [(host: String, claimant: String)] {
        let rows = try withDatabase { db in try db.query("SELECT host, claimant FROM claims ORDER BY host") }
        return rows.map { (host: $0["host"].string ?? "", claimant: $0["claimant"].string ?? "") }
    }

    // MARK: Rows

    private static let columns = [
        "started_at", "finished_at", "command", "host", "slot", "device_path", "device_model", "device_serial",
        "device_by_path", "device_size", "output_path", "image_path", "image_sha256", "bytes", "write_seconds",
        "verify_seconds", "inject_seconds", "write_rate", "verify_rate", "host_key_fingerprint", "ok", "error",
        "exit_code",
    ]
    private static let placeholders = Array(repeating: "?", count: columns.count).joined(separator: ", ")

    private static func values(_ entry: JournalEntry) -> [SQLiteValue] {
        [
            .text(iso8601UTC(entry.startedAt)), .text(entry.finishedAt.map(iso8601UTC)), .text(entry.command),
            .text(entry.host), .text(entry.slot), .text(entry.devicePath), .text(entry.deviceModel),
            .text(entry.deviceSerial), .text(entry.deviceByPath), .integer(entry.deviceSize.map { Int64(clamping: $0) }),
            .text(entry.outputPath), .text(entry.imagePath), .text(entry.imageSHA256),
            .integer(entry.bytes.map { Int64(clamping: $0) }), .real(entry.writeSeconds), .real(entry.verifySeconds),
            .real(entry.injectSeconds), .real(entry.writeRate), .real(entry.verifyRate), .text(entry.hostKeyFingerprint),
            .integer(entry.ok ? 1 : 0), .text(entry.error), .integer(entry.exitCode.map { Int64($0) }),
        ]
    }

    private static func storeFiles(_ files: [InjectedFile], id: Int64, db: SQLiteDatabase) throws {
        let insert = try db.prepare(
            "INSERT INTO injected_files (flash_id, position, path, digest, digest_kind, mode, uid, gid)"
                + " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        for (position, file) in files.enumerated() {
            try insert.bind([
                .integer(id), .integer(Int64(position)), .text(file.path), .text(file.digest.hex ?? ""),
                .text(file.digest.storedKind), .integer(Int64(file.mode)), .integer(Int64(file.uid)),
                .integer(Int64(file.gid)),
            ])
            _ = try insert.nextRow()
        }
    }

    private static func storeBlocks(_ blocks: [InjectedBlock], id: Int64, db: SQLiteDatabase) throws {
        guard !blocks.isEmpty else { return }
        let insert = try db.prepare(
            "INSERT INTO injected_blocks (flash_id, position, byte_offset, length, sha256, hmac_sha256) VALUES (?, ?, ?, ?, ?, ?)")
        for (position, block) in blocks.enumerated() {
            try insert.bind([
                .integer(id), .integer(Int64(position)), .integer(Int64(clamping: block.offset)),
                .integer(Int64(clamping: block.length)), .text(block.keyed ? nil : block.digest),
                .text(block.keyed ? block.digest : nil),
            ])
            _ = try insert.nextRow()
        }
    }

    private static func entry(_ row: SQLiteRow, db: SQLiteDatabase) throws -> JournalEntry {
        let id = row["id"].int64 ?? 0
        let files = try db.query(
            "SELECT path, digest, digest_kind, mode, uid, gid FROM injected_files WHERE flash_id = ? ORDER BY position",
            [.integer(id)]
        ).map { file in
            InjectedFile(
                path: file["path"].string ?? "",
                digest: ContentDigest(storedKind: file["digest_kind"].string, hex: file["digest"].string ?? ""),
                mode: UInt16(truncatingIfNeeded: file["mode"].int64 ?? 0),
                uid: UInt32(truncatingIfNeeded: file["uid"].int64 ?? 0),
                gid: UInt32(truncatingIfNeeded: file["gid"].int64 ?? 0))
        }
        let blocks = try db.query(
            "SELECT byte_offset, length, sha256, hmac_sha256 FROM injected_blocks WHERE flash_id = ? ORDER BY position",
            [.integer(id)]
        ).map { block in
            let keyed = block["hmac_sha256"].string
            return InjectedBlock(
                offset: UInt64(clamping: block["byte_offset"].int64 ?? 0), length: UInt64(clamping: block["length"].int64 ?? 0),
                digest: keyed ?? block["sha256"].string ?? "", keyed: keyed != nil)
        }
        return JournalEntry(
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
            files: files,
            hostKeyFingerprint: row["host_key_fingerprint"].string,
            ok: row["ok"].int64 == 1,
            error: row["error"].string,
            exitCode: row["exit_code"].int64.map { Int32(truncatingIfNeeded: $0) },
            injectedBlocks: blocks)
    }
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
