import Foundation
import PiflashCore
import PostgresNIO  // re-exports NIO, NIOSSL and Logging's Logger

/// Where a PostgreSQL database is: a `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE` URL
/// (`postgres://` too), with the optional query parameters `sslmode=disable|prefer|require` and
/// `host=/run/postgresql` (a unix-socket folder instead of TCP). The password may also come from
/// `$PGPASSWORD`.
public struct PostgreSQLLocation: Sendable, Equatable {
    public var user: String
    public var password: String?
    /// The TCP host; ignored when ``socketFolder`` is set.
    public var host: String
    public var port: Int
    public var database: String
    /// A folder holding `.s.PGSQL.PORT` (the `host=/…` parameter).
    public var socketFolder: String?
    /// `disable` (the default), `prefer` or `require`.
    public var sslMode: String

    /// Whether `text` names a PostgreSQL database rather than a file.
    public static func isURL(_ text: String) -> Bool {
        text.hasPrefix("postgresql://") || text.hasPrefix("postgres://")
    }

    /// Parses a `postgresql://` URL.
    /// - Throws: ``PiflashError`` (exit 2) naming what is missing or wrong.
    public init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        func bad(_ why: String) -> PiflashError {
            PiflashError.usage("the journal URL \(Self.redact(url)) is not usable: \(why)",
                               hint: "write it as postgresql://USER@HOST[:PORT]/DATABASE")
        }
        guard Self.isURL(url), let components = URLComponents(string: url) else { throw bad("it is not a URL") }
        guard let user = components.user, !user.isEmpty else { throw bad("it names no user (USER@HOST)") }
        self.user = user
        password = components.password ?? environment["PGPASSWORD"]
        host = components.host ?? ""
        port = components.port ?? 5432
        let name = String(components.path.drop { $0 == "/" })
        guard !name.isEmpty, !name.contains("/") else { throw bad("it names no database (/DATABASE)") }
        database = name
        sslMode = "disable"
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let value = item.value, ["disable", "prefer", "require"].contains(value) else {
                    throw bad("sslmode must be disable, prefer or require")
                }
                sslMode = value
            case "host":
                guard let value = item.value, value.hasPrefix("/") else { throw bad("host= must be a socket folder") }
                socketFolder = value
            default:
                throw bad("unknown parameter `\(item.name)` (known: sslmode, host)")
            }
        }
        if host.isEmpty && socketFolder == nil { throw bad("it names no host") }
    }

    /// The URL without its password, for messages.
    public var description: String {
        let place = socketFolder.map { "[\($0)]" } ?? "\(host.contains(":") ? "[\(host)]" : host):\(port)"
        return "postgresql://\(user)@\(place)/\(database)"
    }

    /// `text` with any password replaced by `***`.
    public static func redact(_ text: String) -> String {
        guard var components = URLComponents(string: text), components.password != nil else { return text }
        components.password = "***"
        return components.string ?? text
    }
}

/// One connection to a PostgreSQL server (postgres-nio), used through blocking calls.
///
/// postgres-nio is asynchronous; piflash's journal is called from plain threads (the station's
/// jobs, the commands). Every call here starts the work on a dedicated, process-wide event loop
/// (never the Swift concurrency pool) and waits for its future: the waiting thread is never the
/// one that must make progress, so nothing can deadlock. Do not call from an event loop thread.
///
/// Statements are written with `?` placeholders, as for ``SQLiteDatabase``; they are numbered
/// (`$1`, `$2`…) here. Values and rows are the same ``SQLiteValue``/``SQLiteRow`` types.
///
/// Not thread-safe: use it from one thread at a time (callers wrap it in a lock). A connection
/// that fails at the connection level (refused, reset, the server shutting down) is dropped and
/// ``isConnected`` turns false; the next call connects again.
public final class PostgreSQLConnection {
    /// The event loop every PostgreSQL connection of the process runs on: one thread, started on
    /// first use, living as long as the process.
    private static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    public let location: PostgreSQLLocation
    private var connection: PostgresConnection?
    private var nextID = 1
    private let logger: Logger
    /// How long a connection attempt may take.
    public var connectTimeout: Double = 5
    /// How long one statement may take before the connection is given up as lost (a statement
    /// written to a connection the server already closed is never answered).
    public var statementTimeout: Double = 30
    private var inTransaction = false

    /// Whether the last call found the server reachable (a connection is open).
    public var isConnected: Bool { connection.map { !$0.isClosed } ?? false }

    /// Opens a connection to `location` at once, so a wrong URL, user or database fails now.
    /// - Throws: ``PiflashError`` (exit 1) when the server cannot be reached or refuses.
    public init(location: PostgreSQLLocation) throws {
        self.location = location
        var logger = Logger(label: "piflash.postgresql")
        logger.logLevel = .critical
        self.logger = logger
        try connect()
    }

    deinit {
        disconnect()
    }

    /// Connects when not connected (or when the server closed the connection).
    public func connect() throws {
        if let connection {
            if !connection.isClosed { return }
            self.connection = nil
        }
        let tls: PostgresConnection.Configuration.TLS
        do {
            switch location.sslMode {
            case "require": tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            case "prefer": tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            default: tls = .disable
            }
        } catch {
            throw PiflashError.failure("cannot set up TLS for \(location.description): \(error)")
        }
        var configuration: PostgresConnection.Configuration
        if let folder = location.socketFolder {
            configuration = .init(unixSocketPath: "\(folder)/.s.PGSQL.\(location.port)", username: location.user,
                                  password: location.password, database: location.database)
        } else {
            configuration = .init(host: location.host, port: location.port, username: location.user,
                                  password: location.password, database: location.database, tls: tls)
        }
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeout * 1000))
        nextID += 1
        do {
            connection = try bounded(
                PostgresConnection.connect(on: Self.group.next(), configuration: configuration, id: nextID, logger: logger),
                seconds: connectTimeout + 1)
        } catch {
            throw convert(error, "cannot connect to \(location.description)")
        }
    }

    /// Closes the connection (the next call reconnects).
    public func disconnect() {
        if let connection { _ = try? bounded(connection.close(), seconds: 5) }
        connection = nil
    }

    /// Thrown when the server does not answer in time.
    struct Timeout: Error, CustomStringConvertible {
        let seconds: Double
        var description: String { "no answer within \(Int(seconds)) s" }
    }

    /// Waits (from a thread that is not the event loop's) for `future`, at most `seconds`.
    private func bounded<T: Sendable>(_ future: EventLoopFuture<T>, seconds: Double) throws -> T {
        let promise = future.eventLoop.makePromise(of: T.self)
        future.cascade(to: promise)
        let timer = future.eventLoop.scheduleTask(in: .milliseconds(Int64(seconds * 1000))) {
            promise.fail(Timeout(seconds: seconds))
        }
        defer { timer.cancel() }
        return try promise.futureResult.wait()
    }

    /// Runs one statement and returns its rows.
    /// - Throws: ``PiflashError`` (exit 1) with the server's message and SQLSTATE.
    public func query(_ sql: String, _ parameters: [SQLiteValue] = []) throws -> [SQLiteRow] {
        try execute(sql, parameters).rows
    }

    /// Runs one statement and returns how many rows it changed.
    @discardableResult
    public func run(_ sql: String, _ parameters: [SQLiteValue] = []) throws -> Int {
        try execute(sql, parameters).changed
    }

    /// Runs `body` between `BEGIN` and `COMMIT` (`ROLLBACK` when it throws).
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try run("BEGIN")
        inTransaction = true
        defer { inTransaction = false }
        let result: T
        do {
            result = try body()
        } catch {
            if isConnected { _ = try? run("ROLLBACK") }
            throw error
        }
        try run("COMMIT")
        return result
    }

    private func execute(_ sql: String, _ parameters: [SQLiteValue]) throws -> (rows: [SQLiteRow], changed: Int) {
        if inTransaction, !isConnected {
            // Never reconnect in the middle of a transaction: its first statements are gone.
            disconnect()
            throw PiflashError(.failure, "the connection to \(location.description) was lost during a transaction",
                               path: location.description, call: "postgresql")
        }
        try connect()
        guard let connection else { preconditionFailure("connect() leaves a connection or throws") }
        var bindings = PostgresBindings(capacity: parameters.count)
        for value in parameters {
            switch value {
            case .null: bindings.appendNull()
            case .integer(let number): try bindings.append(number)
            case .real(let number): try bindings.append(number)
            case .text(let text): try bindings.append(text)
            case .blob(let bytes): try bindings.append(ByteBuffer(bytes: bytes))
            }
        }
        let query = PostgresQuery(unsafeSQL: Self.numberPlaceholders(sql), binds: bindings)
        let result: PostgresQueryResult
        do {
            result = try bounded(connection.query(query, logger: logger), seconds: statementTimeout)
        } catch {
            throw convert(error, "PostgreSQL statement failed")
        }
        var rows: [SQLiteRow] = []
        for row in result.rows {
            var columns: [String] = []
            var values: [SQLiteValue] = []
            for cell in row {
                columns.append(cell.columnName)
                values.append(try Self.value(cell))
            }
            rows.append(SQLiteRow(columns: columns, values: values))
        }
        return (rows, result.metadata.rows ?? 0)
    }

    /// `?` → `$1`, `$2`…, leaving quoted literals and identifiers alone.
    static func numberPlaceholders(_ sql: String) -> String {
        var output = ""
        var number = 0
        var quote: Character?
        for character in sql {
            if let open = quote {
                if character == open { quote = nil }
                output.append(character)
            } else if character == "'" || character == "\"" {
                quote = character
                output.append(character)
            } else if character == "?" {
                number += 1
                output += "$\(number)"
            } else {
                output.append(character)
            }
        }
        return output
    }

    private static func value(_ cell: PostgresCell) throws -> SQLiteValue {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
        case .float4, .float8: return .real(try cell.decode(Double.self))
        case .bool: return .integer(try cell.decode(Bool.self) ? 1 : 0)
        case .bytea:
            var buffer = try cell.decode(ByteBuffer.self)
            return .blob(buffer.readBytes(length: buffer.readableBytes) ?? [])
        case .text, .varchar, .name, .bpchar: return .text(try cell.decode(String.self))
        default:
            // Types the journal never reads (`void` from pg_advisory_xact_lock…): their text, if any.
            return (try? cell.decode(String.self)).map { .text($0) } ?? .null
        }
    }

    /// A postgres-nio error as a ``PiflashError``; a connection-level failure also drops the connection.
    private func convert(_ error: Error, _ what: String) -> PiflashError {
        var message = "\(error)"
        var lost = true
        if let psql = error as? PSQLError {
            if psql.code == .server, let info = psql.serverInfo {
                let state = info[.sqlState] ?? ""
                message = (info[.message] ?? "server error") + " (SQLSTATE \(state))"
                // 08: connection exception; 57P0x: the server is shutting down or starting up.
                lost = state.hasPrefix("08") || state.hasPrefix("57P")
            } else {
                message = "\(psql.code)" + (psql.underlying.map { ": \($0)" } ?? "")
                lost = psql.code != .queryCancelled && psql.code != .tooManyParameters && psql.code != .invalidCommandTag
            }
        }
        if lost { disconnect() }
        return PiflashError(
            .failure, "\(what): \(message)", path: location.description, call: "postgresql",
            hint: lost ? "check that the PostgreSQL server at \(location.description) runs and accepts this user" : nil)
    }
}
