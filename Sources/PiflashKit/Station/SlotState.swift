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

    /// While flashing with a known total and rate: the seconds the phase still needs.
    public var etaSeconds: Double? {
        guard case .flashing(_, let done, let total?, let rate) = self, rate > 0, total >= done else { return nil }
        return Double(total - done) / rate
    }

    /// While flashing with a known total: the phase's fraction done (0…1).
    public var fraction: Double? {
        guard case .flashing(_, let done, let total?, _) = self, total > 0 else { return nil }
        return min(1, Double(done) / Double(total))
    }
}

/// The card in a slot, as udev describes it: what the operator reads on its label and the reader.
public struct SlotCard: Sendable, Equatable {
    /// The product name (`SD Card Reader`, `SC64G`).
    public var model: String?
    /// The device serial (`ID_SERIAL_SHORT`).
    public var serial: String?
    /// Size in bytes.
    public var size: UInt64
    /// The reader's physical port (`ID_PATH`).
    public var reader: String?

    public init(model: String?, serial: String?, size: UInt64, reader: String?) {
        self.model = model
        self.serial = serial
        self.size = size
        self.reader = reader
    }

    /// `SC64G 59.5 GiB #0x1234abcd`: model, size and serial, as far as known.
    public var summary: String {
        var parts: [String] = []
        if let model, !model.isEmpty { parts.append(model) }
        parts.append(formatBytes(size))
        if let serial, !serial.isEmpty { parts.append("#" + serial) }
        return parts.joined(separator: " ")
    }
}

/// One slot's published status: its state plus the card and host it concerns.
public struct SlotStatus: Sendable, Equatable {
    public var slot: String
    public var state: SlotState
    /// The card's device node, while there is one.
    public var device: String?
    /// The card's model, serial, size and reader, while there is one.
    public var card: SlotCard?
    /// The host being (or last) flashed in this slot.
    public var host: String?
    /// The journal row of the current or last job.
    public var journalID: Int64?
    /// When the state last changed.
    public var since: Date

    public init(slot: String, state: SlotState = .idle, device: String? = nil, card: SlotCard? = nil, host: String? = nil,
                journalID: Int64? = nil, since: Date = Date()) {
        self.slot = slot
        self.state = state
        self.device = device
        self.card = card
        self.host = host
        self.journalID = journalID
        self.since = since
    }

    /// The fields of a `slot` event and of the state file's entries: `slot`, `state`, `device`,
    /// `host`, the card's `card_model`/`card_serial`/`card_size`/`reader`, and per state
    /// `phase`/`bytes`/`total`/`percent`/`rate`/`eta_seconds`, `already_provisioned` or `reason`.
    public var jsonFields: [(String, JSONValue)] {
        var fields: [(String, JSONValue)] = [
            ("slot", .string(slot)), ("state", .string(state.name)), ("device", .string(device)), ("host", .string(host)),
        ]
        if let card {
            fields += [("card_model", .string(card.model)), ("card_serial", .string(card.serial)),
                       ("card_size", .uint(card.size)), ("reader", .string(card.reader))]
        }
        switch state {
        case .idle: break
        case .flashing(let phase, let done, let total, let rate):
            fields += [("phase", .string(phase)), ("bytes", .uint(done)), ("total", total.map { .uint($0) } ?? .null),
                       ("percent", total.map { $0 > 0 ? .int(Int64(min(100, done * 100 / $0))) : .null } ?? .null),
                       ("rate", .double(rate)), ("eta_seconds", state.etaSeconds.map { .double($0) } ?? .null)]
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
        let card = number("card_size").map {
            SlotCard(model: fields["card_model"] as? String, serial: fields["card_serial"] as? String, size: UInt64($0),
                     reader: fields["reader"] as? String)
        }
        self.init(slot: slot, state: state, device: fields["device"] as? String, card: card, host: fields["host"] as? String,
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
