import Foundation
import PiflashPlatform
import Synchronization

/// The statements a journal operation runs: what both database connections offer.
protocol JournalSQL {
    /// Runs one statement (`?` placeholders) and returns its rows.
    func query(_ sql: String, _ parameters: [SQLiteValue]) throws -> [SQLiteRow]
    /// Runs one statement and returns how many rows it changed.
    @discardableResult
    func run(_ sql: String, _ parameters: [SQLiteValue]) throws -> Int
}

extension SQLiteDatabase: JournalSQL {}
extension PostgreSQLConnection: JournalSQL {}

/// Thrown by a store when the database could not be reached: the journal may keep the write.
struct JournalConnectionLost: Error {
    let error: Error
}

/// One journal database behind a lock: SQLite or PostgreSQL.
protocol JournalStore: Sendable {
    var dialect: JournalDialect { get }
    /// Whether the last statement reached the database (always true for SQLite).
    var isReachable: Bool { get }
    /// Whether writes that find the connection lost are kept for later (PostgreSQL).
    var keepsWritesWhenLost: Bool { get }
    /// Runs `body` in one transaction, serialized with this journal's other callers; `write`
    /// takes the write lock at once where the database has one.
    /// - Throws: ``JournalConnectionLost`` when the database cannot be reached, else what failed.
    func transaction<T: Sendable>(write: Bool, _ body: (any JournalSQL) throws -> T) throws -> T
    /// Runs the schema migration (given the statements runner, the dialect and the location).
    func migrate(_ body: (any JournalSQL, JournalDialect, String) throws -> Void) throws
}

/// An SQLite journal file in WAL mode.
final class SQLiteJournalStore: JournalStore {
    private let database: ConnectionLock<SQLiteDatabase>
    private let path: String
    var dialect: JournalDialect { .sqlite }
    var isReachable: Bool { true }
    var keepsWritesWhenLost: Bool { false }

    /// Opens the file, creating its folder (0755).
    init(path: String) throws {
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
        database = ConnectionLock(try SQLiteDatabase(path: path))
    }

    func transaction<T: Sendable>(write: Bool, _ body: (any JournalSQL) throws -> T) throws -> T {
        try database.withLock { db in try db.transaction(immediate: write) { try body(db) } }
    }

    /// The SQLite connection itself, for what only SQLite has (`VACUUM`, WAL checkpoints).
    func withDatabase<T: Sendable>(_ body: (SQLiteDatabase) throws -> T) throws -> T {
        try database.withLock { db in try body(db) }
    }

    func migrate(_ body: (any JournalSQL, JournalDialect, String) throws -> Void) throws {
        let path = path
        try database.withLock { db in
            // Several processes may open a fresh journal at once (the station's slots, a concurrent
            // `piflash history`): the switch to WAL and the schema wait for each other.
            _ = try db.retryingWhileBusy { try db.query("PRAGMA journal_mode=WAL") }
            try db.execute("PRAGMA foreign_keys=ON")
            // Deleted and overwritten content (a scrubbed plain digest, rewritten file rows) is
            // zeroed in the file rather than left in free space.
            try db.execute("PRAGMA secure_delete=ON")
            try db.retryingWhileBusy { try db.transaction { try body(db, .sqlite, path) } }
        }
    }
}

/// A PostgreSQL journal: one connection, reconnected on the next call after it was lost.
final class PostgreSQLJournalStore: JournalStore {
    private let connection: ConnectionLock<PostgreSQLConnection>
    private let reachable = Atomic<Bool>(true)
    private let location: String
    var dialect: JournalDialect { .postgresql }
    var isReachable: Bool { reachable.load(ordering: .relaxed) }
    var keepsWritesWhenLost: Bool { true }

    init(_ connection: PostgreSQLConnection) {
        location = connection.location.description
        self.connection = ConnectionLock(connection)
    }

    func transaction<T: Sendable>(write: Bool, _ body: (any JournalSQL) throws -> T) throws -> T {
        try connection.withLock { db in
            do {
                let result = try db.transaction { try body(db) }
                reachable.store(true, ordering: .relaxed)
                return result
            } catch {
                if db.isConnected { throw error }
                reachable.store(false, ordering: .relaxed)
                throw JournalConnectionLost(error: error)
            }
        }
    }

    func migrate(_ body: (any JournalSQL, JournalDialect, String) throws -> Void) throws {
        let location = location
        try transaction(write: true) { db in try body(db, .postgresql, location) }
    }
}
