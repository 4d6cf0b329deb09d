import Foundation
import PiflashKit

/// The station's terminal view as text: a header (station, hosts folder, queue), two lines per
/// slot (host and card; a progress bar with rate and ETA, or how long ago the last result came and
/// why it failed), and the newest messages; every line fitted to the terminal's width.
public struct StationScreen: Sendable {
    /// The terminal's width in columns.
    public var width: Int
    /// The clock the "ago" times are measured on.
    public var now: Date

    public init(width: Int, now: Date = Date()) {
        self.width = max(40, width)
        self.now = now
    }

    /// The screen's lines, none wider than ``width`` - 1 (so no line wraps).
    public func lines(station: StationSnapshot, queue: QueueSnapshot?, messages: [String]) -> [String] {
        var lines = ["piflash station \(station.machine) · hosts \(station.hosts ?? "?")"]
        if let queue, !queue.hosts.isEmpty {
            lines.append("queue: \(queue.count(.done)) done, \(queue.count(.claimed)) flashing, "
                         + "\(queue.count(.remaining)) remaining of \(queue.hosts.count)")
        } else {
            lines.append("queue: none (every slot has a fixed host)")
        }
        for status in station.slots {
            lines.append(headline(status))
            lines.append("   " + detail(status))
        }
        for message in messages.suffix(3) { lines.append(message) }
        return lines.map(fit)
    }

    /// `A  flashing  pi-01  SC64G 59.5 GiB #1234  /dev/sdb`.
    func headline(_ status: SlotStatus) -> String {
        var parts = [status.slot, status.state.name]
        if let host = status.host { parts.append(host) }
        if let card = status.card { parts.append(card.summary) }
        if let device = status.device { parts.append(device) }
        return parts.joined(separator: "  ")
    }

    /// The slot's second line: what it is doing or how it ended.
    func detail(_ status: SlotStatus) -> String {
        let ago = formatDuration(max(0, now.timeIntervalSince(status.since))) + " ago"
        switch status.state {
        case .idle:
            return status.card == nil ? "insert a card" : "card in the reader (pull it to free the slot)"
        case .flashing(let phase, let done, let total, let rate):
            var tail = ""
            if let total, total > 0 {
                tail += "  " + "\(Int((status.state.fraction ?? 0) * 100))%".leftPadded(to: 4)
                tail += "  " + formatBytes(done) + " / " + formatBytes(total)
            } else if done > 0 {
                tail += "  " + formatBytes(done)
            }
            if rate > 0 { tail += "  " + formatBytes(UInt64(rate)) + "/s" }
            if let eta = status.state.etaSeconds, eta > 0 { tail += "  ETA " + formatDuration(eta) }
            let label = phase.padding(to: 7)
            let room = width - 1 - 3 - label.count - 3 - tail.count
            guard status.state.fraction != nil, room >= 10 else { return label + tail }
            let barWidth = min(50, room)
            let filled = Int((status.state.fraction ?? 0) * Double(barWidth))
            return label + " [" + String(repeating: "#", count: filled) + String(repeating: "-", count: barWidth - filled)
                + "]" + tail
        case .verified(let already):
            let entry = status.journalID.map { " (journal #\($0))" } ?? ""
            return already ? "✓ already provisioned \(ago), not flashed again" + entry : "✓ verified \(ago)" + entry
        case .failed(let reason):
            return "✗ failed \(ago): " + reason.replacingOccurrences(of: "\n", with: " ")
        case .waiting(let reason):
            return "… waiting \(ago): " + reason.replacingOccurrences(of: "\n", with: " ")
        }
    }

    private func fit(_ line: String) -> String {
        let limit = width - 1
        guard line.count > limit else { return line }
        return String(line.prefix(limit - 1)) + "…"
    }
}

extension String {
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }

    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
