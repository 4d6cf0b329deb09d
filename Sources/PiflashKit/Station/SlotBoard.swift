import Foundation

/// The slots' state machine: every slot's ``SlotStatus``, changed only through the transitions
/// below (from the event loop or a job's thread), each change published on the station's
/// ``StationStream``.
///
/// ```
/// idle ──card described──► idle+card ──job──► flashing(phase…) ──► verified | failed
///   ▲                                                                 │
///   └───────────────────────── card pulled ◄──────────────────────────┘
/// ```
/// A state change is published at once; progress within one phase at most every half second
/// per slot.
public final class SlotBoard: Sendable {
    private struct Shared {
        var statuses: [String: SlotStatus] = [:]
        var lastProgressEvent: [String: Double] = [:]
    }
    private let order: [String]
    private let shared: Locked<Shared>
    private let stream: StationStream

    /// - Parameters:
    ///   - slots: the slot names, in station-file order; each starts idle.
    ///   - stream: where every change is published.
    public init(slots: [String], stream: StationStream) {
        order = slots
        var statuses: [String: SlotStatus] = [:]
        for slot in slots { statuses[slot] = SlotStatus(slot: slot) }
        shared = Locked(Shared(statuses: statuses))
        self.stream = stream
    }

    /// Every slot's status, in station-file order.
    public var statuses: [SlotStatus] {
        shared.withLock { state in order.compactMap { state.statuses[$0] } }
    }

    /// How many slots are flashing now.
    public var flashingCount: Int {
        statuses.filter { if case .flashing = $0.state { true } else { false } }.count
    }

    // MARK: Transitions

    /// The card was pulled from an idle or finished slot: nothing in it any more.
    func cardRemoved(_ slot: String) {
        update(slot) { status in
            status.state = .idle
            status.device = nil
            status.card = nil
            status.host = nil
        }
    }

    /// A verified card was pulled before its job was reaped: the slot is idle again. A failed one
    /// keeps showing why it failed until the next card.
    func verifiedCardGone(_ slot: String) {
        update(slot) { status in
            if case .verified = status.state {
                status.state = .idle
                status.device = nil
                status.card = nil
                status.host = nil
            }
        }
    }

    /// A card was described and its job is about to start.
    func cardTaken(_ slot: String, disk: DiskDescription, host: String?) {
        update(slot) { status in
            status.device = disk.devnode
            status.card = SlotCard(model: disk.model, serial: disk.serial, size: disk.size, reader: disk.byPath)
            status.host = host
        }
    }

    /// The job began preparing (claiming a host, reading the image and secrets).
    func preparing(_ slot: String) {
        update(slot) { $0.state = .flashing(phase: "prepare", done: 0, total: nil, rate: 0) }
    }

    /// The host the card gets is known.
    func hostAssigned(_ slot: String, host: String) {
        update(slot) { $0.host = host }
    }

    /// A phase of the job progressed.
    func progress(_ slot: String, phase: String, done: UInt64, total: UInt64?, rate: Double) {
        update(slot) { $0.state = .flashing(phase: phase, done: done, total: total, rate: rate) }
    }

    /// The card holds its host, proven by reading it back (or, `alreadyProvisioned`, it did so
    /// already and was left alone).
    func verified(_ slot: String, host: String?, journalID: Int64?, alreadyProvisioned: Bool) {
        update(slot) { status in
            status.state = .verified(alreadyProvisioned: alreadyProvisioned)
            if let host { status.host = host }
            status.journalID = journalID
        }
    }

    /// The card waits in its slot: the journal does not answer, or every host left in the queue is
    /// being flashed elsewhere. It is taken again once that changes.
    func waiting(_ slot: String, reason: String, device: String? = nil) {
        update(slot) { status in
            status.state = .waiting(reason: reason)
            if let device { status.device = device }
        }
    }

    /// The job ended without a valid card.
    func failed(_ slot: String, reason: String, host: String?? = .none, journalID: Int64?? = .none) {
        update(slot) { status in
            status.state = .failed(reason: reason)
            if case .some(let host) = host { status.host = host }
            if case .some(let journalID) = journalID { status.journalID = journalID }
        }
    }

    // MARK: Publishing

    private func update(_ slot: String, _ change: (inout SlotStatus) -> Void) {
        let now = monotonicSeconds()
        let published = shared.withLock { state -> SlotStatus? in
            guard var status = state.statuses[slot] else { return nil }
            let before = status
            change(&status)
            if status.state.name != before.state.name { status.since = Date() }
            state.statuses[slot] = status
            guard status != before else { return nil }
            if case .flashing(let phase, _, _, _) = status.state, case .flashing(let old, _, _, _) = before.state,
               phase == old, status.host == before.host {
                // Progress only: at most every half second.
                if now - (state.lastProgressEvent[slot] ?? 0) < 0.5 { return nil }
            }
            state.lastProgressEvent[slot] = now
            return status
        }
        if let published { stream.send(.slot(published)) }
    }
}
