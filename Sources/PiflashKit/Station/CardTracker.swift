/// Turns a reader's udev events into card arrivals and removals.
///
/// A card reader is a disk that is always there; a card going in shows as a `change` event whose
/// size goes from 0 to N, a card pulled as a `change` to size 0. A disk that appears with a
/// medium (`add`, e.g. a loop device or an SD slot) is an arrival too. Events that keep the size
/// (udev's "watch" after a writer closes the device, a partition-table re-read) are not.
public struct CardTracker: Sendable {
    /// What an event means for the card in that device.
    public enum Change: Sendable, Equatable {
        case arrived(size: UInt64)
        case removed
        case none
    }

    /// The last size seen per device (by sysfs path).
    public private(set) var sizes: [String: UInt64] = [:]

    public init() {}

    /// Records a device as found at start-up, without calling it an arrival.
    public mutating func seed(syspath: String, size: UInt64) {
        sizes[syspath] = size
    }

    /// Interprets one event of a whole disk and remembers its size.
    /// - Parameters:
    ///   - action: the udev action (`add`, `change`, `remove`…).
    ///   - syspath: the disk's sysfs path.
    ///   - size: its size in bytes when the event came (0 when it has no medium or is gone).
    public mutating func observe(action: String, syspath: String, size: UInt64) -> Change {
        let previous = sizes[syspath] ?? 0
        switch action {
        case "remove":
            sizes[syspath] = nil
            return previous > 0 ? .removed : .none
        case "add", "change":
            sizes[syspath] = size
            if size == 0 { return previous > 0 ? .removed : .none }
            // The same size again is the same card (a re-read, or udev's watch after a write).
            return previous == size ? .none : .arrived(size: size)
        default:
            return .none
        }
    }
}
