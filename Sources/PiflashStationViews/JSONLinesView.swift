import Foundation
import PiflashKit

/// `piflash station --json`: the station's stream as one JSON object per line on stdout —
/// `station` (ready/stopping/stopped), `slot`, the jobs' own events with `slot`, a `result` per
/// job, `info` and `warning`.
public final class JSONLinesView: StationObserver, Sendable {
    private let events = JSONLinesReporter(interval: 0.5)
    private let jobs = Locked<[String: JSONLinesReporter]>([:])
    private let board: SlotBoard

    /// - Parameter board: the slots, listed once the station is ready.
    public init(board: SlotBoard) {
        self.board = board
    }

    public func station(_ event: StationEvent) {
        switch event {
        case .station(.ready(let config, let slots)):
            events.event("station", [("state", "ready"), ("config", .string(config)),
                                     ("slots", .array(slots.map { .string($0) }))])
            for status in board.statuses { events.event("slot", status.jsonFields) }
        case .station(.stopping(let reason, let jobs)):
            events.event("station", [("state", "stopping"), ("signal", .string(reason)),
                                     ("running_jobs", .int(Int64(jobs)))])
        case .station(.stopped):
            events.event("station", [("state", "stopped")])
        case .slot(let status):
            events.event("slot", status.jsonFields)
        case .job(let slot, let report):
            let reporter = jobs.withLock { jobs in
                if let reporter = jobs[slot] { return reporter }
                let reporter = JSONLinesReporter(interval: 0.5, context: [("slot", .string(slot))])
                jobs[slot] = reporter
                return reporter
            }
            switch report {
            case .begin(let phase, let total): reporter.begin(phase, total: total)
            case .progress(let phase, let done, let total): reporter.progress(phase, done: done, total: total)
            case .end(let phase, let bytes, let seconds): reporter.end(phase, bytes: bytes, seconds: seconds)
            case .note(let message): reporter.note(message)
            case .warning(let message): reporter.warning(message)
            case .event(let name, let fields): reporter.event(name, fields)
            }
        case .result(let slot, let result):
            var fields: [(String, JSONValue)] = []
            if case .object(let pairs) = result.json { fields = pairs.filter { $0.0 != "event" } }
            events.event("result", [("slot", .string(slot))] + fields)
        case .note(let message):
            events.note(message)
        case .warning(let message):
            events.warning(message)
        case .journal(let reachable, let detail):
            events.event("journal", [("state", .string(reachable ? "reachable" : "unreachable")), ("detail", .string(detail))])
            if reachable {
                events.note("the journal answers again: taking cards")
            } else {
                events.warning("the journal does not answer (\(detail ?? "")): no new cards; running jobs finish and are "
                               + "recorded when it answers again")
            }
        case .tick:
            break
        }
    }
}
