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

/// Keeps the state file current from the station's stream: written at start, at most every half
/// second while slots change (on the event loop's ticks, so always from one thread), and a last
/// time with `running: false` when the station stops.
public final class StationStateFileObserver: StationObserver, @unchecked Sendable {
    private let file: StationStatusFile
    private let board: SlotBoard
    private let config: String
    private let startedAt: Date
    private let warn: @Sendable (String) -> Void
    private let dirty = Locked(true)
    private var lastWrite = 0.0

    /// - Parameters:
    ///   - warn: how a failed forced write (start, stop) is told to the operator.
    public init(file: StationStatusFile, board: SlotBoard, config: String, startedAt: Date,
                warn: @escaping @Sendable (String) -> Void) {
        self.file = file
        self.board = board
        self.config = config
        self.startedAt = startedAt
        self.warn = warn
    }

    public func station(_ event: StationEvent) {
        switch event {
        case .slot: dirty.withLock { $0 = true }
        case .tick: write(force: false, running: true)
        case .station(.ready): write(force: true, running: true)
        case .station(.stopped): write(force: true, running: false)
        default: break
        }
    }

    private func write(force: Bool, running: Bool) {
        guard force || dirty.withLock({ $0 }) else { return }
        let now = monotonicSeconds()
        guard force || now - lastWrite >= 0.5 else { return }
        lastWrite = now
        dirty.withLock { $0 = false }
        let snapshot = StationStatusFile.Snapshot(pid: getpid(), config: config, startedAt: startedAt, updatedAt: Date(),
                                                  running: running, slots: board.statuses)
        do {
            try file.write(snapshot)
        } catch {
            if force { warn("\(error)") }
        }
    }
}
