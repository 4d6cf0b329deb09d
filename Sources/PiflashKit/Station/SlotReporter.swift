import Foundation

/// A job's reporter inside the station: turns its phases and progress into the slot's state on
/// the ``SlotBoard``, and passes every call on to the ``StationStream`` tagged with the slot.
final class SlotReporter: Reporter, @unchecked Sendable {
    private let slot: String
    private let board: SlotBoard
    private let stream: StationStream
    private let started = Locked<[String: Double]>([:])

    init(slot: String, board: SlotBoard, stream: StationStream) {
        self.slot = slot
        self.board = board
        self.stream = stream
    }

    func begin(_ phase: String, total: UInt64?) {
        started.withLock { $0[phase] = monotonicSeconds() }
        board.progress(slot, phase: phase, done: 0, total: total, rate: 0)
        stream.send(.job(slot: slot, .begin(phase: phase, total: total)))
    }

    func progress(_ phase: String, done: UInt64, total: UInt64?) {
        let begun = started.withLock { $0[phase] } ?? monotonicSeconds()
        let rate = Double(done) / max(monotonicSeconds() - begun, 1e-6)
        board.progress(slot, phase: phase, done: done, total: total, rate: rate)
        stream.send(.job(slot: slot, .progress(phase: phase, done: done, total: total)))
    }

    func end(_ phase: String, bytes: UInt64, seconds: Double) {
        stream.send(.job(slot: slot, .end(phase: phase, bytes: bytes, seconds: seconds)))
    }

    func note(_ message: String) { stream.send(.job(slot: slot, .note(message))) }

    func warning(_ message: String) { stream.send(.job(slot: slot, .warning(message))) }

    func event(_ name: String, _ fields: [(String, JSONValue)]) {
        stream.send(.job(slot: slot, .event(name: name, fields: fields)))
    }
}
