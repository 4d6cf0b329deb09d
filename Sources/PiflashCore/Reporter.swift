#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Where a long job tells the user what it is doing: phases with progress, notes, warnings and
/// structured events. Called from worker threads; implementations are thread-safe.
public protocol Reporter: Sendable {
    /// A phase begins (`"write"`, `"verify"`, `"inject"`…), with its size in bytes when known.
    func begin(_ phase: String, total: UInt64?)
    /// Progress within the current phase. Cheap to call often: implementations throttle.
    func progress(_ phase: String, done: UInt64, total: UInt64?)
    /// A phase ended after `seconds`, having handled `bytes`.
    func end(_ phase: String, bytes: UInt64, seconds: Double)
    /// A line for the human (a TTY summary) or an `info` event in JSON.
    func note(_ message: String)
    /// Something the user must see even when all goes well (a path under /etc…).
    func warning(_ message: String)
    /// A structured event, printed as one JSON object in `--json` mode; may be ignored otherwise.
    func event(_ name: String, _ fields: [(String, JSONValue)])
}

extension Reporter {
    public func event(_ name: String, _ fields: [(String, JSONValue)]) {}
}

/// Says nothing. For tests and for jobs whose caller reports by itself.
public struct SilentReporter: Reporter {
    public init() {}
    public func begin(_ phase: String, total: UInt64?) {}
    public func progress(_ phase: String, done: UInt64, total: UInt64?) {}
    public func end(_ phase: String, bytes: UInt64, seconds: Double) {}
    public func note(_ message: String) {}
    public func warning(_ message: String) {}
}

/// A monotonic clock reading in seconds.
public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Writes a whole string to a file descriptor (stdout or stderr), unbuffered.
public func writeAll(_ text: String, to fd: Int32) {
    var text = text
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
    }
}

/// `--json`: one JSON object per line on stdout; progress at most a few times a second.
public final class JSONLinesReporter: Reporter {
    private struct State {
        var lastProgress: [String: Double] = [:]
        var started: [String: Double] = [:]
    }
    private let state = Mutex(State())
    private let interval: Double
    private let context: [(String, JSONValue)]

    /// - Parameters:
    ///   - interval: the least time between two progress events of one phase.
    ///   - context: fields added to every event (the station adds `slot`).
    public init(interval: Double = 0.5, context: [(String, JSONValue)] = []) {
        self.interval = interval
        self.context = context
    }

    public func begin(_ phase: String, total: UInt64?) {
        state.withLock { $0.started[phase] = monotonicSeconds() }
        event("phase", [("phase", .string(phase)), ("total", total.map { .uint($0) } ?? .null)])
    }

    public func progress(_ phase: String, done: UInt64, total: UInt64?) {
        let now = monotonicSeconds()
        let (due, started): (Bool, Double) = state.withLock { state in
            let last = state.lastProgress[phase] ?? 0
            let begun = state.started[phase] ?? now
            if now - last < interval && done != total { return (false, begun) }
            state.lastProgress[phase] = now
            return (true, begun)
        }
        guard due else { return }
        let elapsed = max(now - started, 1e-6)
        event("progress", [
            ("phase", .string(phase)), ("bytes", .uint(done)), ("total", total.map { .uint($0) } ?? .null),
            ("rate", .double(Double(done) / elapsed)),
        ])
    }

    public func end(_ phase: String, bytes: UInt64, seconds: Double) {
        event("phase_done", [("phase", .string(phase)), ("bytes", .uint(bytes)), ("seconds", .double(seconds))])
    }

    public func note(_ message: String) { event("info", [("message", .string(message))]) }
    public func warning(_ message: String) { event("warning", [("message", .string(message))]) }

    public func event(_ name: String, _ fields: [(String, JSONValue)]) {
        let object = JSONValue.object([("event", .string(name))] + context + fields)
        state.withLock { _ in writeAll(object.serialized() + "\n", to: STDOUT_FILENO) }
    }
}

/// A human on a terminal: a progress bar per phase on stderr (bytes, rate, ETA) when stderr is
/// a TTY, plain lines otherwise.
///
/// A phase that began without a size and ends having counted no bytes is a *step* (a check, not
/// a transfer): it ends with what was done in words (``stepWording``), never "0 B".
public final class TerminalReporter: Reporter {
    private struct State {
        var lastDraw: Double = 0
        var started: [String: Double] = [:]
        /// The phases that began without a size: when they end with no bytes, they were steps.
        var unsized: Set<String> = []
        var barShown = false
    }

    /// How a step reads when it is done, by phase name. A step not listed here reads
    /// "PHASE done".
    public static let stepWording: [String: String] = [
        "capacity": "card capacity checked (last MiB read back)",
    ]

    /// Steps quicker than this end without their time: "in 0.0s" says nothing to a person.
    static let stepTimeShownFrom = 0.5
    private let state = Mutex(State())
    private let isTTY: Bool

    public init() {
        isTTY = isatty(STDERR_FILENO) == 1
    }

    public func begin(_ phase: String, total: UInt64?) {
        state.withLock { state in
            state.started[phase] = monotonicSeconds()
            if total == nil { state.unsized.insert(phase) } else { state.unsized.remove(phase) }
        }
        if !isTTY {
            writeAll("\(phase)…\n", to: STDERR_FILENO)
        }
    }

    public func progress(_ phase: String, done: UInt64, total: UInt64?) {
        guard isTTY else { return }
        let now = monotonicSeconds()
        state.withLock { state in
            guard now - state.lastDraw >= 0.2 || done == total else { return }
            state.lastDraw = now
            state.barShown = true
            let elapsed = max(now - (state.started[phase] ?? now), 1e-6)
            let rate = Double(done) / elapsed
            var line = "\r\u{1B}[2K" + phase.padding(to: 8) + " "
            if let total, total > 0 {
                let fraction = min(1, Double(done) / Double(total))
                let width = 28
                let filled = Int(fraction * Double(width))
                line += "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] "
                line += "\(Int(fraction * 100))% ".leftPadded(to: 5)
                line += formatBytes(done) + " / " + formatBytes(total)
                line += "  " + formatBytes(UInt64(rate)) + "/s"
                if rate > 0 && done < total {
                    line += "  ETA " + formatDuration(Double(total - done) / rate)
                }
            } else {
                line += formatBytes(done) + "  " + formatBytes(UInt64(rate)) + "/s"
            }
            writeAll(line, to: STDERR_FILENO)
        }
    }

    public func end(_ phase: String, bytes: UInt64, seconds: Double) {
        state.withLock { state in
            let isStep = bytes == 0 && state.unsized.remove(phase) != nil
            let line = isStep
                ? Self.stepLine(phase, seconds: seconds)
                : phase.padding(to: 8) + " done: " + formatBytes(bytes) + " in " + formatDuration(seconds)
                    + (seconds > 0 && bytes > 0 ? " (" + formatBytes(UInt64(Double(bytes) / seconds)) + "/s)" : "")
            let prefix = state.barShown && isTTY ? "\r\u{1B}[2K" : ""
            state.barShown = false
            writeAll(prefix + line + "\n", to: STDERR_FILENO)
        }
    }

    /// The line a finished step prints: its wording, and its time when that is worth reading.
    static func stepLine(_ phase: String, seconds: Double) -> String {
        (stepWording[phase] ?? "\(phase) done") + (seconds >= stepTimeShownFrom ? " in " + formatDuration(seconds) : "")
    }

    public func note(_ message: String) { line(message) }
    public func warning(_ message: String) { line("warning: " + message) }

    private func line(_ text: String) {
        state.withLock { state in
            let prefix = state.barShown && isTTY ? "\r\u{1B}[2K" : ""
            state.barShown = false
            writeAll(prefix + text + "\n", to: STDERR_FILENO)
        }
    }
}

/// Bytes in binary units, as people read card sizes: `1.5 GiB`.
public func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let tenths = (value * 10).rounded() / 10
    return "\(tenths) \(units[unit])"
}

/// A duration as `1m05s` or `12.3s`.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    if seconds < 60 { return "\((seconds * 10).rounded() / 10)s" }
    let total = Int(seconds.rounded())
    let (minutes, secs) = (total / 60, total % 60)
    if minutes < 60 { return "\(minutes)m" + (secs < 10 ? "0" : "") + "\(secs)s" }
    return "\(minutes / 60)h" + (minutes % 60 < 10 ? "0" : "") + "\(minutes % 60)m"
}

extension String {
    fileprivate func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
