// libudev at the edge: a context, devices, enumeration of whole block disks and lookups by
// device node. Every libudev handle is a final class that drops its reference in `deinit`; a
// negative errno from libudev is converted into a ``PiflashError`` once, here.
// Used from one thread: libudev objects are not thread-safe.
#if canImport(Glibc)
import Glibc
#endif
import CUdev

/// A block device number, `major:minor`, as `/proc/self/mountinfo`, sysfs `dev` files and
/// `ID_PART_ENTRY_DISK` spell it.
public struct BlockDeviceNumber: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var major: UInt32
    public var minor: UInt32

    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    /// Parses `"8:16"`; nil when the text is not two unsigned numbers separated by a colon.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = UInt32(parts[0]), let minor = UInt32(parts[1]) else { return nil }
        self.init(major: major, minor: minor)
    }

    /// Splits a kernel `dev_t` the way glibc's `major()`/`minor()` macros do.
    public init(rawDevice dev: UInt64) {
        major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff)))
        minor = UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff)))
    }

    /// The kernel `dev_t` (glibc's `makedev()`).
    public var rawDevice: UInt64 {
        let major = UInt64(self.major), minor = UInt64(self.minor)
        return ((major & 0xfff) << 8) | ((major & ~UInt64(0xfff)) << 32) | (minor & 0xff) | ((minor & ~UInt64(0xff)) << 12)
    }

    public var description: String { "\(major):\(minor)" }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }
}

/// Throws when a libudev call returned a negative errno (`udev_enumerate_scan_devices`,
/// `udev_monitor_enable_receiving`…). The one place that convention is converted.
@discardableResult
func checkUdev(_ result: Int32, _ call: String, path: String? = nil) throws -> Int32 {
    if result < 0 {
        throw PiflashError.system(call, errno: -result, path: path, what: "libudev \(call) failed")
    }
    return result
}

/// Walks a `udev_list_entry` list into name/value pairs.
func udevList(_ first: OpaquePointer?) -> [(name: String, value: String?)] {
    var out: [(String, String?)] = []
    var entry = first
    while let current = entry {
        if let name = udev_list_entry_get_name(current) {
            out.append((String(cString: name), udev_list_entry_get_value(current).map { String(cString: $0) }))
        }
        entry = udev_list_entry_get_next(current)
    }
    return out
}

/// A libudev context (`udev_new`). Every device, enumeration and monitor keeps its context alive.
public final class UdevContext {
    let handle: OpaquePointer

    /// Creates a context with `udev_new()`.
    /// - Throws: ``PiflashError`` when libudev cannot be initialised.
    public init() throws {
        guard let handle = udev_new() else {
            throw PiflashError.system("udev_new", errno: errno == 0 ? ENOMEM : errno, what: "cannot initialise libudev")
        }
        self.handle = handle
    }

    deinit { udev_unref(handle) }

    /// Every block device of type `disk` (whole disks, not partitions), in the order libudev lists
    /// them (`udev_enumerate_add_match_subsystem("block")` + `DEVTYPE=disk`, then `scan_devices`).
    /// - Throws: ``PiflashError`` when the enumeration fails.
    public func wholeDisks() throws -> [UdevDevice] {
        guard let enumerate = udev_enumerate_new(handle) else {
            throw PiflashError.system("udev_enumerate_new", errno: ENOMEM, what: "cannot enumerate block devices")
        }
        defer { udev_enumerate_unref(enumerate) }
        try checkUdev(udev_enumerate_add_match_subsystem(enumerate, "block"), "udev_enumerate_add_match_subsystem")
        try checkUdev(udev_enumerate_add_match_property(enumerate, "DEVTYPE", "disk"), "udev_enumerate_add_match_property")
        try checkUdev(udev_enumerate_scan_devices(enumerate), "udev_enumerate_scan_devices")
        return udevList(udev_enumerate_get_list_entry(enumerate)).compactMap { entry in
            try? device(syspath: entry.name)
        }
    }

    /// The device at a sysfs path (`udev_device_new_from_syspath`).
    /// - Throws: ``PiflashError`` when there is no such device.
    public func device(syspath: String) throws -> UdevDevice {
        errno = 0
        guard let handle = udev_device_new_from_syspath(handle, syspath) else {
            throw PiflashError.system("udev_device_new_from_syspath", errno: errno == 0 ? ENODEV : errno, path: syspath,
                                      what: "no such device in sysfs")
        }
        return UdevDevice(handle: handle, context: self)
    }

    /// The block device with this device number (`udev_device_new_from_devnum('b', …)`).
    public func device(blockNumber: BlockDeviceNumber) throws -> UdevDevice {
        errno = 0
        guard let handle = udev_device_new_from_devnum(handle, CChar(UInt8(ascii: "b")), dev_t(blockNumber.rawDevice)) else {
            throw PiflashError.system("udev_device_new_from_devnum", errno: errno == 0 ? ENODEV : errno,
                                      path: "block device \(blockNumber)", what: "no block device \(blockNumber)")
        }
        return UdevDevice(handle: handle, context: self)
    }

    /// The block device behind a device node or any symlink to one (`/dev/sdb`,
    /// `/dev/disk/by-id/usb-…`): `stat(2)` follows the links, then the device number is looked up.
    /// - Throws: ``PiflashError`` (`.usage`) when the path does not exist or is not a block device.
    public func device(devnode path: String) throws -> UdevDevice {
        var info = stat()
        if stat(path, &info) != 0 {
            let code = errno
            throw PiflashError(.usage, "cannot use \(path): \(String(cString: strerror(code)))", path: path, call: "stat",
                               errno: code, hint: "list the cards with `piflash devices`")
        }
        guard (info.st_mode & S_IFMT) == S_IFBLK else {
            throw PiflashError.usage("\(path) is not a block device", path: path,
                                     hint: "give a whole disk such as /dev/sdb or /dev/mmcblk0; list them with `piflash devices`")
        }
        return try device(blockNumber: BlockDeviceNumber(rawDevice: UInt64(info.st_rdev)))
    }
}

/// One device from libudev (`struct udev_device`), with the accessors piflash needs.
public final class UdevDevice {
    let handle: OpaquePointer
    /// Keeps the context alive as long as the device.
    public let context: UdevContext

    init(handle: OpaquePointer, context: UdevContext) {
        self.handle = handle
        self.context = context
    }

    deinit { udev_device_unref(handle) }

    private static func string(_ pointer: UnsafePointer<CChar>?) -> String? {
        pointer.map { String(cString: $0) }
    }

    /// `/sys/devices/…/block/sdb`.
    public var syspath: String { Self.string(udev_device_get_syspath(handle)) ?? "" }
    /// The kernel name: `sdb`, `mmcblk0`, `loop3`.
    public var sysname: String { Self.string(udev_device_get_sysname(handle)) ?? "" }
    /// The sysfs path below `/sys`: `/devices/pci0000:00/…/block/sdb`.
    public var devpath: String { Self.string(udev_device_get_devpath(handle)) ?? "" }
    /// `/dev/sdb`, when the device has a node.
    public var devnode: String? { Self.string(udev_device_get_devnode(handle)) }
    public var subsystem: String? { Self.string(udev_device_get_subsystem(handle)) }
    /// `disk` or `partition` for block devices.
    public var devtype: String? { Self.string(udev_device_get_devtype(handle)) }
    /// The bound driver (`usb-storage`, `mmcblk`…), when there is one.
    public var driver: String? { Self.string(udev_device_get_driver(handle)) }
    /// The event action (`add`, `change`, `remove`) for devices received from a monitor.
    public var action: String? { Self.string(udev_device_get_action(handle)) }
    public var seqnum: UInt64 { UInt64(udev_device_get_seqnum(handle)) }
    /// Whether udev has processed the device (its rules ran and its database entry exists).
    public var isInitialized: Bool { udev_device_get_is_initialized(handle) > 0 }

    /// The device number, nil for devices without one.
    public var deviceNumber: BlockDeviceNumber? {
        let raw = UInt64(udev_device_get_devnum(handle))
        return raw == 0 ? nil : BlockDeviceNumber(rawDevice: raw)
    }

    /// A udev property (`ID_BUS`, `PIFLASH_CANDIDATE`…).
    public func property(_ name: String) -> String? {
        Self.string(udev_device_get_property_value(handle, name))
    }

    /// All udev properties in libudev's order.
    public var properties: [(key: String, value: String)] {
        udevList(udev_device_get_properties_list_entry(handle)).map { ($0.name, $0.value ?? "") }
    }

    /// The symlinks udev made (`/dev/disk/by-id/…`, `/dev/disk/by-path/…`).
    public var devlinks: [String] { udevList(udev_device_get_devlinks_list_entry(handle)).map(\.name) }

    /// The udev tags (`systemd`, `uaccess`…).
    public var tags: [String] { udevList(udev_device_get_tags_list_entry(handle)).map(\.name) }

    /// A sysfs attribute with trailing whitespace removed (`removable`, `ro`, `size`, `loop/backing_file`).
    public func sysattr(_ name: String) -> String? {
        guard let raw = Self.string(udev_device_get_sysattr_value(handle, name)) else { return nil }
        var text = Substring(raw)
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }

    /// The parent device (`udev_device_get_parent`), referenced so it outlives this one.
    public var parent: UdevDevice? {
        guard let parent = udev_device_get_parent(handle) else { return nil }
        return UdevDevice(handle: udev_device_ref(parent), context: context)
    }

    /// Every ancestor from the direct parent up to the root of the device tree.
    public var ancestors: [UdevDevice] {
        var out: [UdevDevice] = []
        var current = parent
        while let device = current {
            out.append(device)
            current = device.parent
        }
        return out
    }
}
