import Foundation
import Glibc

/// The station's published state (`state_file`, default `/run/piflash/station.json`): one JSON
/// object rewritten atomically (a temporary file renamed over it) whenever a slot changes, read
/// by `piflash station --status`.
///
/// ```json
/// {"pid":1234,"config":"/etc/piflash/station.toml","started_at":"…","updated_at":"…",
///  "running":true,"slots":[{"slot":"A","state":"flashing","host":"pi-01","percent":42,…}]}
/// ```
public struct StationStatusFile: Sendable {
    /// The file.
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// What the file holds.
    public struct Snapshot: Sendable {
        public var pid: Int32
        public var config: String
        public var startedAt: Date
        public var updatedAt: Date
        /// False once the station has stopped (it says so as it exits).
        public var running: Bool
        public var slots: [SlotStatus]

        public init(pid: Int32, config: String, startedAt: Date, updatedAt: Date, running: Bool, slots: [SlotStatus]) {
            self.pid = pid
            self.config = config
            self.startedAt = startedAt
            self.updatedAt = updatedAt
            self.running = running
            self.slots = slots
        }

        /// The file's JSON object.
        public var json: JSONValue {
            .object([
                ("pid", .int(Int64(pid))), ("config", .string(config)), ("started_at", .string(iso8601UTC(startedAt))),
                ("updated_at", .string(iso8601UTC(updatedAt))), ("running", .bool(running)),
                ("slots", .array(slots.map { .object($0.jsonFields) })),
            ])
        }

        /// Whether the process that wrote it is still alive (`kill(pid, 0)`).
        public var processAlive: Bool {
            pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)
        }

        /// The lines `piflash station --status` prints.
        public var lines: [String] {
            let alive = running && processAlive
            var header = alive ? "station running (pid \(pid)), " : "station not running; last state "
            header += "updated \(iso8601UTC(updatedAt)), config \(config)"
            return [header] + slots.map { "  " + $0.line }
        }
    }

    /// Writes the snapshot atomically, creating the folder (0755) when needed.
    /// - Throws: ``PiflashError`` (exit 1) when the folder or file cannot be written.
    public func write(_ snapshot: Snapshot) throws {
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty && !FileManager.default.fileExists(atPath: folder) {
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                     attributes: [.posixPermissions: 0o755])
        }
        let temporary = path + ".tmp-\(getpid())"
        let data = Data((snapshot.json.serialized() + "\n").utf8)
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o644]) else {
            throw PiflashError.failure("cannot write the station state file \(temporary)", path: path,
                                       hint: "set state_file in the station file to a writable place")
        }
        if rename(temporary, path) != 0 {
            let code = errno
            unlink(temporary)
            throw PiflashError.system("rename", errno: code, path: path)
        }
    }

    /// Reads the snapshot.
    /// - Throws: ``PiflashError`` (exit 1) when the file is missing (no station ran) or unreadable.
    public func read() throws -> Snapshot {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PiflashError.failure("no station state at \(path)", path: path,
                                       hint: "is the station running? (systemctl status piflash-station)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PiflashError.failure("the station state file \(path) is not a state object", path: path)
        }
        let slots = (object["slots"] as? [[String: Any]] ?? []).compactMap { SlotStatus(jsonObject: $0) }
        return Snapshot(
            pid: (object["pid"] as? NSNumber)?.int32Value ?? 0, config: object["config"] as? String ?? "?",
            startedAt: (object["started_at"] as? String).flatMap(parseISO8601UTC) ?? Date(timeIntervalSince1970: 0),
            updatedAt: (object["updated_at"] as? String).flatMap(parseISO8601UTC) ?? Date(timeIntervalSince1970: 0),
            running: object["running"] as? Bool ?? false, slots: slots)
    }

    /// The raw file text (for `--status --json`).
    public func text() throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PiflashError.failure("no station state at \(path)", path: path,
                                       hint: "is the station running? (systemctl status piflash-station)")
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// systemd's readiness protocol without libsystemd: datagrams such as `READY=1`, `STOPPING=1`
/// and `STATUS=…` sent to the unix socket named by `$NOTIFY_SOCKET` (`@` for the abstract
/// namespace). Does nothing when the variable is absent (not run by systemd with `Type=notify`).
public final class SystemdNotifier: Sendable {
    private let socketPath: String?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether systemd listens.
    public var isActive: Bool { socketPath != nil }

    /// Sends one message (`READY=1`, `STATUS=2 slots idle`…); failures are ignored, as sd_notify's are.
    /// - Returns: whether the datagram was sent.
    @discardableResult
    public func notify(_ message: String) -> Bool {
        guard let socketPath else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(socketPath.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let sent = message.utf8CString.withUnsafeBufferPointer { text in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    sendto(fd, text.baseAddress, text.count - 1, Int32(MSG_NOSIGNAL), socketAddress, length)
                }
            }
        }
        return sent >= 0
    }
}
