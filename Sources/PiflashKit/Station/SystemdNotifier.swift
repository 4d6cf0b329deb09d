import Foundation
import Glibc

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

/// Tells systemd (`Type=notify`) about the station from its stream: `READY=1` once the cards
/// present at start-up are taken, `STATUS=` as slots change, `STOPPING=1` on the way out.
public final class SystemdStatusObserver: StationObserver, Sendable {
    private let notifier: SystemdNotifier
    private let board: SlotBoard
    private let slotCount: Int
    private let changed = Locked(true)

    public init(notifier: SystemdNotifier = SystemdNotifier(), board: SlotBoard, slotCount: Int) {
        self.notifier = notifier
        self.board = board
        self.slotCount = slotCount
    }

    public func station(_ event: StationEvent) {
        guard notifier.isActive else { return }
        switch event {
        case .station(.ready):
            notifier.notify("READY=1")
            status()
        case .station(.stopping(let reason, let jobs)):
            notifier.notify("STOPPING=1")
            notifier.notify("STATUS=stopping on \(reason): \(jobs) job(s) winding down")
        case .slot:
            changed.withLock { $0 = true }
        case .tick:
            if changed.withLock({ flag in defer { flag = false }; return flag }) { status() }
        default:
            break
        }
    }

    private func status() {
        notifier.notify("STATUS=\(board.flashingCount) of \(slotCount) slot(s) flashing")
    }
}
