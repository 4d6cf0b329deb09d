import CSQLite
import Glibc

// A small wrapper over the sqlite3 C API: one connection, prepared statements, transactions.
// Every SQLite result code is turned into a ``PiflashError`` here, once.

/// A value in an SQLite column or a bound parameter.
public enum SQLiteValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    /// An optional string as text or `NULL`.
    public static func text(_ value: String?) -> SQLiteValue { value.map { .text($0) } ?? .null }
    /// An optional integer as an integer or `NULL`.
    public static func integer(_ value: Int64?) -> SQLiteValue { value.map { .integer($0) } ?? .null }
    /// An optional double as a real or `NULL`.
    public static func real(_ value: Double?) -> SQLiteValue { value.map { .real($0) } ?? .null }

    /// The value as a string, when it is text.
    public var string: String? {
        if case .text(let value) = self { return value }
        return nil
    }

    /// The value as an integer, when it is one (reals are truncated).
    public var int64: Int64? {
        switch self {
        case .integer(let value): return value
        case .real(let value): return Int64(value)
        default: return nil
        }
    }

    /// The value as a double, when it is numeric.
    public var double: Double? {
        switch self {
        case .integer(let value): return Double(value)
        case .real(let value): return value
        default: return nil
        }
    }
}

/// One result row: its values by column index and by column name.
public struct SQLiteRow: Sendable {
    public let columns: [String]
    public let values: [SQLiteValue]

    /// The value of the named column, or `.null` when there is no such column.
    public subscript(name: String) -> SQLiteValue {
        guard let index = columns.firstIndex(of: name) else { return .null }
        return values[index]
    }

    public subscript(index: Int) -> SQLiteValue { values[index] }
}

/// The `SQLITE_TRANSIENT` destructor: SQLite copies bound text and blobs before returning.
private let transientDestructor = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// An open SQLite database connection (`sqlite3_open_v2`), closed in `deinit`.
///
/// Not thread-safe: use it from one thread at a time (callers wrap it in a lock).
/// Concurrency between processes or connections is handled by SQLite's locking and the busy
/// timeout given at open.
public final class SQLiteDatabase {
    private var handle: OpaquePointer?
    /// The database file.
    public let path: String

    /// Opens (and creates) the database at `path` (`sqlite3_open_v2` with
    /// `SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE`) and sets `sqlite3_busy_timeout`.
    ///
    /// - Parameters:
    ///   - path: the database file; its folder must exist.
    ///   - busyTimeoutMilliseconds: how long a statement waits for another connection's lock.
    /// - Throws: ``PiflashError`` (exit 1) when the file cannot be opened.
    public init(path: String, busyTimeoutMilliseconds: Int32 = 10_000) throws {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(db)
            throw PiflashError.failure(
                "cannot open the database: \(message)", path: path,
                hint: "check that the folder exists and is writable, or choose another file with --journal"
            )
        }
        handle = db
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
        sqlite3_extended_result_codes(db, 1)
    }

    deinit {
        sqlite3_close_v2(handle)
    }

    var db: OpaquePointer { handle! }

    /// Turns an SQLite result code into a ``PiflashError`` naming the operation.
    func error(_ rc: Int32, _ what: String) -> PiflashError {
        let message = String(cString: sqlite3_errmsg(db))
        let busy = rc & 0xff == SQLITE_BUSY || rc & 0xff == SQLITE_LOCKED
        return PiflashError(
            .failure, "\(what): \(message) (SQLite code \(rc))", path: path, call: "sqlite3",
            hint: busy ? "another piflash holds the journal locked; try again" : nil
        )
    }

    /// Runs one or more SQL statements without parameters or results (`sqlite3_exec`).
    public func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_free(message)
            let busy = rc & 0xff == SQLITE_BUSY
            throw PiflashError(
                .failure, "SQLite statement failed: \(text) (SQLite code \(rc))", path: path, call: "sqlite3_exec",
                hint: busy ? "another piflash holds the journal locked; try again" : nil
            )
        }
    }

    /// Compiles one statement (`sqlite3_prepare_v2`).
    public func prepare(_ sql: String) throws -> SQLiteStatement {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v2(db, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc, "cannot prepare SQL") }
        return SQLiteStatement(database: self, statement: statement)
    }

    /// Runs a statement with parameters (`?` placeholders, in order) and returns every row.
    @discardableResult
    public func query(_ sql: String, _ parameters: [SQLiteValue] = []) throws -> [SQLiteRow] {
        let statement = try prepare(sql)
        try statement.bind(parameters)
        var rows: [SQLiteRow] = []
        while let row = try statement.nextRow() { rows.append(row) }
        return rows
    }

    /// Runs a statement with parameters and no result rows; returns the number of changed rows.
    @discardableResult
    public func run(_ sql: String, _ parameters: [SQLiteValue] = []) throws -> Int {
        try query(sql, parameters)
        return Int(sqlite3_changes(db))
    }

    /// The rowid of the last `INSERT` on this connection (`sqlite3_last_insert_rowid`).
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(db) }

    /// Runs `body` again while it fails because another connection holds the database
    /// (`SQLITE_BUSY`/`SQLITE_LOCKED`), for the steps SQLite does not wait on by itself, such as
    /// switching a fresh file to WAL while another process creates it. Bounded by `seconds`.
    public func retryingWhileBusy<T>(seconds: Double = 10, _ body: () throws -> T) throws -> T {
        let deadline = monotonicSeconds() + seconds
        var pause: UInt32 = 5_000
        while true {
            do {
                return try body()
            } catch {
                let code = sqlite3_errcode(db) & 0xff
                guard code == SQLITE_BUSY || code == SQLITE_LOCKED, monotonicSeconds() < deadline else { throw error }
                usleep(pause)
                pause = min(pause * 2, 200_000)
            }
        }
    }

    /// Runs `body` in a transaction: `BEGIN IMMEDIATE` (takes the write lock at once, so two
    /// connections reading then writing never deadlock) or `BEGIN DEFERRED`; commits when it
    /// returns, rolls back when it throws.
    public func transaction<T>(immediate: Bool = true, _ body: () throws -> T) throws -> T {
        try execute(immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED")
        let result: T
        do {
            result = try body()
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
        do {
            try execute("COMMIT")
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
        return result
    }
}

/// A prepared statement (`sqlite3_stmt`), finalized in `deinit`. Keeps its database alive.
public final class SQLiteStatement {
    private let database: SQLiteDatabase
    private let statement: OpaquePointer

    init(database: SQLiteDatabase, statement: OpaquePointer) {
        self.database = database
        self.statement = statement
    }

    deinit {
        sqlite3_finalize(statement)
    }

    /// Resets the statement and binds `parameters` to its `?` placeholders, in order
    /// (`sqlite3_bind_*`).
    public func bind(_ parameters: [SQLiteValue]) throws {
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
        let expected = Int(sqlite3_bind_parameter_count(statement))
        precondition(expected == parameters.count, "SQL has \(expected) parameters, \(parameters.count) given")
        for (offset, value) in parameters.enumerated() {
            let index = Int32(offset + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(statement, index)
            case .integer(let value): rc = sqlite3_bind_int64(statement, index, value)
            case .real(let value): rc = sqlite3_bind_double(statement, index, value)
            case .text(let value): rc = sqlite3_bind_text(statement, index, value, -1, transientDestructor)
            case .blob(let value):
                rc = value.withUnsafeBytes { bytes in
                    sqlite3_bind_blob(statement, index, bytes.baseAddress, Int32(bytes.count), transientDestructor)
                }
            }
            if rc != SQLITE_OK { throw database.error(rc, "cannot bind SQL parameter \(index)") }
        }
    }

    /// Steps once (`sqlite3_step`): the next row, or nil when the statement is done.
    public func nextRow() throws -> SQLiteRow? {
        let rc = sqlite3_step(statement)
        switch rc {
        case SQLITE_ROW:
            let count = sqlite3_column_count(statement)
            var columns: [String] = []
            var values: [SQLiteValue] = []
            for column in 0..<count {
                columns.append(String(cString: sqlite3_column_name(statement, column)))
                values.append(value(column))
            }
            return SQLiteRow(columns: columns, values: values)
        case SQLITE_DONE:
            return nil
        default:
            throw database.error(rc, "SQL statement failed")
        }
    }

    private func value(_ column: Int32) -> SQLiteValue {
        switch sqlite3_column_type(statement, column) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(statement, column))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(statement, column))
        case SQLITE_TEXT:
            guard let text = sqlite3_column_text(statement, column) else { return .text("") }
            return .text(String(cString: text))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(statement, column))
            guard count > 0, let bytes = sqlite3_column_blob(statement, column) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: bytes, count: count)))
        default: return .null
        }
    }
}
