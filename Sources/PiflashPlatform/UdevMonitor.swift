// The udev monitor: block-device events after udev's rules ran (`udev_monitor_new_from_netlink(udev,
// "udev")`), with a timeout-based wait on poll(2) that never spins.
#if canImport(Glibc)
import Glibc
#endif
import CUdev

/// One block-device event from udevd.
public struct UdevEvent: Sendable {
    /// `add`, `change`, `remove`, `bind`…
    public var action: String
    public var sysname: String
    /// `/devices/…/block/sdb` (`DEVPATH`). Kernel bugs can produce bogus ones such as `/sdb`.
    public var devpath: String
    public var syspath: String
    public var devnode: String?
    /// `disk` or `partition`.
    public var devtype: String?
    public var deviceNumber: BlockDeviceNumber?
    public var seqnum: UInt64
    /// The event's properties (`DISK_MEDIA_CHANGE`, `ID_PATH`, `PIFLASH_SLOT`…).
    public var properties: [String: String]
    /// sysfs `size` in 512-byte sectors, read when the event was received; nil when the device
    /// is already gone.
    public var sizeSectors: UInt64?

    public init(action: String, sysname: String, devpath: String, syspath: String, devnode: String?, devtype: String?,
                deviceNumber: BlockDeviceNumber?, seqnum: UInt64, properties: [String: String], sizeSectors: UInt64?) {
        self.action = action
        self.sysname = sysname
        self.devpath = devpath
        self.syspath = syspath
        self.devnode = devnode
        self.devtype = devtype
        self.deviceNumber = deviceNumber
        self.seqnum = seqnum
        self.properties = properties
        self.sizeSectors = sizeSectors
    }

    /// Size in bytes (`sizeSectors × 512`), 0 when unknown.
    public var sizeBytes: UInt64 { (sizeSectors ?? 0) * 512 }
}

/// A udev monitor filtered to the `block` subsystem. Create it *before* enumerating, so a card
/// inserted in between is not missed.
public final class UdevMonitor {
    private let handle: OpaquePointer
    /// Keeps the context alive as long as the monitor.
    public let context: UdevContext

    /// Connects to udevd's event stream (`udev_monitor_new_from_netlink(udev, "udev")`), filters
    /// the `block` subsystem and enables receiving.
    /// - Throws: ``PiflashError`` when the netlink socket cannot be opened or bound.
    public init(context: UdevContext) throws {
        errno = 0
        guard let handle = udev_monitor_new_from_netlink(context.handle, "udev") else {
            throw PiflashError.system("udev_monitor_new_from_netlink", errno: errno == 0 ? EPERM : errno,
                                      what: "cannot listen to udev events")
        }
        self.handle = handle
        self.context = context
        try checkUdev(udev_monitor_filter_add_match_subsystem_devtype(handle, "block", nil),
                      "udev_monitor_filter_add_match_subsystem_devtype")
        try checkUdev(udev_monitor_enable_receiving(handle), "udev_monitor_enable_receiving")
        // A burst of events (a multi-LUN reader, a flood of media changes) must not overflow the socket.
        _ = udev_monitor_set_receive_buffer_size(handle, 4 * 1024 * 1024)
    }

    deinit { udev_monitor_unref(handle) }

    /// The monitor's socket, for `poll(2)` together with other descriptors.
    public var fileDescriptor: Int32 { udev_monitor_get_fd(handle) }

    /// One pending event, without blocking; nil when none is queued (`udev_monitor_receive_device`).
    public func receive() -> UdevEvent? {
        guard let raw = udev_monitor_receive_device(handle) else { return nil }
        let device = UdevDevice(handle: raw, context: context)
        return UdevEvent(
            action: device.action ?? "", sysname: device.sysname, devpath: device.devpath, syspath: device.syspath,
            devnode: device.devnode, devtype: device.devtype, deviceNumber: device.deviceNumber, seqnum: device.seqnum,
            properties: Dictionary(device.properties.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 }),
            sizeSectors: device.sysattr("size").flatMap { UInt64($0) })
    }

    /// Waits until an event arrives, `timeout` seconds pass, or `wake` becomes readable (poll(2)
    /// on both; EINTR is retried with the remaining time).
    /// - Parameters:
    ///   - timeout: the longest wait in seconds; nil or infinity waits without limit.
    ///   - wake: another descriptor that ends the wait when readable (``Interrupts/descriptor``,
    ///     so Ctrl-C ends an unlimited wait); -1 for none.
    /// - Returns: the event, or nil when the time ran out or `wake` became readable.
    /// - Throws: ``PiflashError`` when poll fails.
    public func next(timeout: Double?, wake: Int32 = -1) throws -> UdevEvent? {
        let limit = timeout.map { max(0, $0) } ?? .infinity
        let deadline = monotonicSeconds() + limit
        while true {
            if let event = receive() { return event }
            let remaining = deadline - monotonicSeconds()
            if remaining <= 0 { return nil }
            var descriptors = [
                pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0),
                pollfd(fd: wake, events: Int16(POLLIN), revents: 0),  // poll ignores a negative fd
            ]
            let millis = remaining.isFinite ? Int32(min(remaining * 1000, Double(Int32.max)).rounded(.up)) : -1
            let ready = poll(&descriptors, 2, millis)
            if ready < 0 {
                if errno == EINTR { continue }
                throw PiflashError.system("poll", errno: errno, what: "waiting for udev events failed")
            }
            if ready == 0 { return nil }
            if descriptors[1].revents != 0 { return nil }
            // Readable: the loop receives it. A datagram libudev drops (a filtered or foreign
            // message) leaves the socket empty again, and poll blocks on the next round.
        }
    }
}
