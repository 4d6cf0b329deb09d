import Foundation
import Glibc
import PiflashKit

/// The station on stdout for a person: on a terminal, the ``StationScreen`` redrawn in place
/// (at most four times a second, at least once a second so times and ETAs move); otherwise a log,
/// one line whenever a slot changes state, host or card, and the notes (e.g. for systemd's
/// journal). Warnings go to stderr (on a terminal: into the screen's messages).
public final class ConsoleView: StationObserver, @unchecked Sendable {
    /// How stdout is used.
    public enum Mode: Sendable {
        /// A terminal: the screen, redrawn in place.
        case terminal
        /// Not a terminal: a line per change.
        case log
    }

    private let mode: Mode
    private let source: any StationSnapshotSource
    private let output: Int32
    private struct Shared {
        var changed = true
        var queueStale = true
        var messages: [String] = []
        var logged: [String: String] = [:]
    }
    private let shared = Locked(Shared())
    // Owned by the event loop's thread (ticks and lifecycle events).
    private var drawnLines = 0
    private var lastDraw = 0.0
    private var lastQueueRead = 0.0
    private var queue: QueueSnapshot?

    /// - Parameters:
    ///   - mode: ``Mode/terminal`` when stdout is a TTY.
    ///   - source: where the screen's station and queue come from.
    ///   - output: the file descriptor (stdout).
    public init(mode: Mode, source: any StationSnapshotSource, output: Int32 = STDOUT_FILENO) {
        self.mode = mode
        self.source = source
        self.output = output
    }

    public func station(_ event: StationEvent) {
        switch event {
        case .station(.ready(_, let slots)):
            if mode == .log { line("station ready: \(slots.count) slot(s) (\(slots.joined(separator: ", ")))") }
            draw(force: true)
        case .station(.stopping(let reason, let jobs)):
            note("\(reason): no new cards; waiting for \(jobs) running job(s) to stop safely")
            draw(force: true)
        case .station(.stopped):
            draw(force: true)
        case .slot(let status):
            shared.withLock { state in
                state.changed = true
                state.queueStale = true
            }
            if mode == .log { logSlot(status) }
        case .result:
            shared.withLock { $0.queueStale = true }
        case .note(let message):
            note(message)
        case .warning(let message):
            warning(message)
        case .journal(let reachable, let detail):
            if reachable {
                note("the journal answers again: taking cards")
            } else {
                warning("the journal does not answer (\(detail ?? "")): no new cards; running jobs finish and are "
                        + "recorded when it answers again")
            }
            draw(force: true)
        case .job(let slot, .warning(let message)):
            warning("slot \(slot): \(message)")
        case .job:
            break
        case .tick:
            draw(force: false)
        }
    }

    private func logSlot(_ status: SlotStatus) {
        let key = status.state.name + (status.host ?? "") + (status.device ?? "")
        let changed = shared.withLock { state in
            guard state.logged[status.slot] != key else { return false }
            state.logged[status.slot] = key
            return true
        }
        guard changed else { return }
        var text = status.line
        if let card = status.card, case .flashing = status.state { text += "  (" + card.summary + ")" }
        line(text)
    }

    private func note(_ message: String) {
        switch mode {
        case .log: line(message)
        case .terminal: remember(message)
        }
    }

    private func warning(_ message: String) {
        if mode == .terminal && isatty(STDERR_FILENO) == 1 {
            remember("warning: " + message)
        } else {
            writeAll("warning: " + message + "\n", to: STDERR_FILENO)
        }
    }

    private func remember(_ message: String) {
        shared.withLock { state in
            let stamp = iso8601UTC(Date()).dropFirst(11).prefix(8)
            state.messages.append("\(stamp) \(message)")
            if state.messages.count > 3 { state.messages.removeFirst(state.messages.count - 3) }
            state.changed = true
        }
    }

    private func line(_ text: String) { writeAll(text + "\n", to: output) }

    /// The screen, when on a terminal and something changed (or a second passed).
    private func draw(force: Bool) {
        guard mode == .terminal else { return }
        let now = monotonicSeconds()
        let (changed, queueStale, messages) = shared.withLock { state in
            (state.changed, state.queueStale, state.messages)
        }
        guard force || (changed && now - lastDraw >= 0.25) || now - lastDraw >= 1 else { return }
        lastDraw = now
        shared.withLock { state in
            state.changed = false
        }
        if queue == nil || (queueStale && now - lastQueueRead >= 1) || now - lastQueueRead >= 10 {
            lastQueueRead = now
            shared.withLock { $0.queueStale = false }
            queue = try? source.queue()
        }
        guard let station = try? source.stations().first else { return }
        let lines = StationScreen(width: terminalWidth()).lines(station: station, queue: queue, messages: messages)
        var text = drawnLines > 0 ? "\u{1B}[\(drawnLines)F" : ""
        for line in lines { text += "\u{1B}[2K" + line + "\n" }
        text += "\u{1B}[J"
        drawnLines = lines.count
        writeAll(text, to: output)
    }

    private func terminalWidth() -> Int {
        var size = winsize()
        let read = withUnsafeMutablePointer(to: &size) { ioctl(output, UInt(TIOCGWINSZ), $0) }
        if read == 0, size.ws_col > 0 { return Int(size.ws_col) }
        if let columns = ProcessInfo.processInfo.environment["COLUMNS"].flatMap(Int.init), columns > 0 { return columns }
        return 80
    }
}
