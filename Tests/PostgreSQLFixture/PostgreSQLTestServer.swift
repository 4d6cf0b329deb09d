import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL server (Debian's `postgresql`) for the tests: its own cluster made with
/// `initdb` in a temporary folder, listening on 127.0.0.1 on a free port (and a socket in that
/// folder), trust authentication for the user `piflash`. No global state: nothing outside the
/// folder is touched. As root, the server runs as the unprivileged `postgres` user (`runuser`).
/// `stop()`/`start()`/`restart()` are `pg_ctl`'s; the cluster is stopped and removed in `deinit`,
/// and at exit for the process-wide ``shared`` server.
public final class PostgreSQLTestServer: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The folder with PostgreSQL's programs (`/usr/lib/postgresql/15/bin`), or nil when Debian's
    /// `postgresql` is not installed.
    public static let programs: String? = {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [])
            .compactMap { Int($0) }.sorted(by: >)
        return versions.map { "\(base)/\($0)/bin" }.first {
            FileManager.default.isExecutableFile(atPath: "\($0)/initdb")
                && FileManager.default.isExecutableFile(atPath: "\($0)/pg_ctl")
        }
    }()

    /// Why the tests that need PostgreSQL cannot run here, or nil when they can.
    public static var unavailableReason: String? {
        if programs == nil { return "PostgreSQL is not installed (apt-get install postgresql; `make deps` does it)" }
        if geteuid() == 0 && getpwnam("postgres") == nil { return "there is no `postgres` user to run the server as" }
        return nil
    }

    /// One server for the whole test process, started on first use and stopped at exit.
    public static let shared: PostgreSQLTestServer? = {
        guard unavailableReason == nil, let server = try? PostgreSQLTestServer() else { return nil }
        sharedForExit = server
        atexit { sharedForExit?.stopNow() }
        return server
    }()
    nonisolated(unsafe) private static var sharedForExit: PostgreSQLTestServer?

    public let folder: String
    public let port: Int
    public let user = "piflash"
    private let bin: String

    /// `postgresql://piflash@127.0.0.1:PORT/DATABASE`.
    public func url(_ database: String) -> String { "postgresql://\(user)@127.0.0.1:\(port)/\(database)" }

    /// Makes the cluster and starts the server.
    public init() throws {
        guard let bin = Self.programs else { throw Failure(description: Self.unavailableReason ?? "no PostgreSQL") }
        self.bin = bin
        var template = Array("/tmp/piflash-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure(description: "mkdtemp failed") }
        folder = String(cString: made)
        port = try Self.freePort()
        if geteuid() == 0 {
            try Self.run(["chown", "postgres:postgres", folder])
            try Self.run(["chmod", "0755", folder])
        }
        try asServerUser(["\(bin)/initdb", "-D", "\(folder)/data", "-U", user, "--auth=trust", "-E", "UTF8",
                          "--no-sync", "--no-instructions"])
        try start()
    }

    deinit { stopNow() }

    /// Starts the server and waits until it accepts connections (`pg_ctl -w`).
    public func start() throws {
        let options = "-p \(port) -k \(folder) -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            + "-c full_page_writes=off -c max_connections=50"
        // The server must not inherit any descriptor of this process (another test's pipe would
        // then never see its end): everything above 2 is closed before pg_ctl runs.
        let closeInherited = #"for fd in /proc/self/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; exec "$@""#
        try asServerUser(["bash", "-c", closeInherited, "pg_ctl", "\(bin)/pg_ctl", "-D", "\(folder)/data", "-o", options,
                          "-l", "\(folder)/server.log", "-w", "-t", "60", "start"])
    }

    /// Stops the server (fast shutdown: clients are disconnected), waiting until it is down.
    public func stop() throws {
        try asServerUser(["\(bin)/pg_ctl", "-D", "\(folder)/data", "-m", "fast", "-w", "-t", "60", "stop"])
    }

    /// `pg_ctl restart`: every client loses its connection.
    public func restart() throws {
        try stop()
        try start()
    }

    /// Creates a fresh database and returns its URL.
    public func createDatabase(_ name: String = "j_" + UUID().uuidString.prefix(8).lowercased()) throws -> String {
        _ = try psql("postgres", "CREATE DATABASE \(name)")
        return url(name)
    }

    /// Runs SQL with `psql` (an independent client) and returns its unaligned, tuples-only output.
    public func psql(_ database: String, _ sql: String) throws -> String {
        try Self.run(["\(bin)/psql", "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                      "-p", "\(port)", "-U", user, "-d", database, "-c", sql])
            .trimmingCharacters(in: .newlines)
    }

    /// The server's log, for failure messages.
    public var log: String { (try? String(contentsOfFile: "\(folder)/server.log", encoding: .utf8)) ?? "" }

    private var removed = false

    func stopNow() {
        guard !removed else { return }
        removed = true
        _ = try? asServerUser(["\(bin)/pg_ctl", "-D", "\(folder)/data", "-m", "immediate", "-w", "-t", "30", "stop"])
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func asServerUser(_ arguments: [String]) throws {
        _ = try Self.run(geteuid() == 0 ? ["runuser", "-u", "postgres", "--"] + arguments : arguments)
    }

    /// Runs a program; its output goes through a file, not a pipe: the server that `pg_ctl start`
    /// leaves running must not hold a pipe whose end someone waits for.
    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let base = NSTemporaryDirectory() + "piflash-pg-run-" + UUID().uuidString
        var handles: [FileHandle] = []
        for file in [base + ".out", base + ".err"] {
            guard FileManager.default.createFile(atPath: file, contents: nil),
                  let handle = FileHandle(forWritingAtPath: file) else {
                throw Failure(description: "cannot create \(file)")
            }
            handles.append(handle)
        }
        defer {
            try? FileManager.default.removeItem(atPath: base + ".out")
            try? FileManager.default.removeItem(atPath: base + ".err")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = handles[0]
        process.standardError = handles[1]
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        for handle in handles { try? handle.close() }
        let output = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        guard process.terminationStatus == 0 else {
            let errors = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
            throw Failure(description: "\(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(errors)")
        }
        return output
    }

    /// A TCP port on 127.0.0.1 that nothing listens on now.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(fd, pointer, length) == 0 else { return -1 }
                return getsockname(fd, pointer, &length)
            }
        }
        guard bound == 0 else { throw Failure(description: "cannot bind a port on 127.0.0.1") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
