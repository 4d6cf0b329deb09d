import Foundation

/// What a slot is doing, as the state lines, the `slot` events and the state file show it.
public enum SlotState: Sendable, Equatable {
    /// No card, or a card that was handled and is still in the reader.
    case idle
    /// A card is being flashed: the phase (`write`, `verify`, `inject`…), bytes done of total,
    /// and the phase's rate in bytes per second.
    case flashing(phase: String, done: UInt64, total: UInt64?, rate: Double)
    /// The card was written, read back and its files verified (or, with `alreadyProvisioned`,
    /// the journal and the card showed it was provisioned before, so it was left alone).
    case verified(alreadyProvisioned: Bool)
    /// The job ended without a valid card: the reason.
    case failed(reason: String)
    /// A card is in the slot but is not taken yet: the reason (the shared journal's database is
    /// unreachable). It is taken when the reason goes away.
    case waiting(reason: String)

    /// `idle`, `flashing`, `verified`, `failed` or `waiting`.
    public var name: String {
        switch self {
        case .idle: "idle"
        case .flashing: "flashing"
        case .verified: "verified"
        case .failed: "failed"
        case .waiting: "waiting"
        }
    }
}

/// One slot's published status: its state plus the card and host it concerns.
public struct SlotStatus: Sendable, Equatable {
    public var slot: String
    public var state: SlotState
    /// The card's device node, while there is one.
    public var device: String?
    /// The host being (or last) flashed in this slot.
    public var host: String?
    /// The journal row of the current or last job.
    public var journalID: Int64?
    /// When the state last changed.
    public var since: Date

    public init(slot: String, state: SlotState = .idle, device: String? = nil, host: String? = nil,
                journalID: Int64? = nil, since: Date = Date()) {
        self.slot = slot
        self.state = state
        self.device = device
        self.host = host
        self.journalID = journalID
        self.since = since
    }

    /// The fields of a `slot` event and of the state file's entries: `slot`, `state`, `device`,
    /// `host`, and per state `phase`/`bytes`/`total`/`percent`/`rate`, `already_provisioned` or `reason`.
    public var jsonFields: [(String, JSONValue)] {
        var fields: [(String, JSONValue)] = [
            ("slot", .string(slot)), ("state", .string(state.name)), ("device", .string(device)), ("host", .string(host)),
        ]
        switch state {
        case .idle: break
        case .flashing(let phase, let done, let total, let rate):
            fields += [("phase", .string(phase)), ("bytes", .uint(done)), ("total", total.map { .uint($0) } ?? .null),
                       ("percent", total.map { $0 > 0 ? .int(Int64(min(100, done * 100 / $0))) : .null } ?? .null),
                       ("rate", .double(rate))]
        case .verified(let already): fields.append(("already_provisioned", .bool(already)))
        case .failed(let reason), .waiting(let reason): fields.append(("reason", .string(reason)))
        }
        fields += [("journal_id", journalID.map { .int($0) } ?? .null), ("since", .string(iso8601UTC(since)))]
        return fields
    }

    /// The status back from ``jsonFields`` as `JSONSerialization` reads it (the state file), or
    /// nil when it is not one.
    public init?(jsonObject fields: [String: Any]) {
        guard let slot = fields["slot"] as? String, let name = fields["state"] as? String else { return nil }
        func number(_ key: String) -> Double? { (fields[key] as? NSNumber)?.doubleValue }
        let state: SlotState
        switch name {
        case "flashing":
            state = .flashing(phase: fields["phase"] as? String ?? "?", done: UInt64(number("bytes") ?? 0),
                              total: number("total").map { UInt64($0) }, rate: number("rate") ?? 0)
        case "verified": state = .verified(alreadyProvisioned: fields["already_provisioned"] as? Bool ?? false)
        case "failed": state = .failed(reason: fields["reason"] as? String ?? "unknown")
        case "waiting": state = .waiting(reason: fields["reason"] as? String ?? "unknown")
        default: state = .idle
        }
        self.init(slot: slot, state: state, device: fields["device"] as? String, host: fields["host"] as? String,
                  journalID: number("journal_id").map { Int64($0) },
                  since: (fields["since"] as? String).flatMap(parseISO8601UTC) ?? Date(timeIntervalSince1970: 0))
    }

    /// One line for a person: `A  flashing pi-01  42%  19.8 MiB/s  /dev/sdb`.
    public var line: String {
        var parts = [slot]
        switch state {
        case .idle:
            parts.append("idle")
        case .flashing(let phase, let done, let total, let rate):
            parts.append("flashing \(host ?? "?")")
            if let total, total > 0 {
                parts.append("\(phase) \(min(100, done * 100 / total))%")
            } else {
                parts.append(phase)
            }
            if rate > 0 { parts.append(formatBytes(UInt64(rate)) + "/s") }
        case .verified(let already):
            parts.append("verified ✓ \(host ?? "")" + (already ? " (already provisioned, not flashed again)" : ""))
        case .failed(let reason):
            parts.append("failed ✗" + (host.map { " \($0)" } ?? "") + ": " + reason)
        case .waiting(let reason):
            parts.append("waiting: " + reason)
        }
        if let device { parts.append(device) }
        return parts.joined(separator: "  ")
    }
}
