// A whole block disk as udev and sysfs see it right now: plain values, no libudev handles, so
// the domain above can decide about it and tests can build the same thing from recorded dumps.
#if canImport(Glibc)
import Glibc
#endif

/// An ancestor of a block device in the sysfs device tree (the USB interface, the MMC card, the
/// SCSI target, the PCI function…).
public struct UdevAncestor: Sendable, Equatable {
    /// `usb`, `mmc`, `scsi`, `pci`, `platform`, `virtio`, `nvme`…
    public var subsystem: String?
    public var devtype: String?
    public var sysname: String
    public var driver: String?
    /// For MMC cards, the sysfs `type` attribute: `SD`, `MMC` (eMMC) or `SDIO`.
    public var mmcType: String?

    public init(subsystem: String?, devtype: String? = nil, sysname: String, driver: String? = nil, mmcType: String? = nil) {
        self.subsystem = subsystem
        self.devtype = devtype
        self.sysname = sysname
        self.driver = driver
        self.mmcType = mmcType
    }
}

/// A partition of a whole disk (`/sys/class/block/sdb/sdb1`).
public struct UdevPartition: Sendable, Equatable {
    public var sysname: String
    public var devnode: String?
    public var deviceNumber: BlockDeviceNumber?
    /// The partition's udev properties (`ID_FS_TYPE`, `ID_FS_LABEL_ENC`, `PARTN`…).
    public var properties: [String: String]
    /// sysfs `size`, in 512-byte sectors.
    public var sizeSectors: UInt64?

    public init(sysname: String, devnode: String?, deviceNumber: BlockDeviceNumber?, properties: [String: String],
                sizeSectors: UInt64?) {
        self.sysname = sysname
        self.devnode = devnode
        self.deviceNumber = deviceNumber
        self.properties = properties
        self.sizeSectors = sizeSectors
    }
}

/// A device stacked on the disk or one of its partitions (`holders/`): device-mapper (LUKS,
/// LVM), md RAID, … Holders of holders are listed too.
public struct UdevHolder: Sendable, Equatable {
    /// `dm-0`, `md127`.
    public var sysname: String
    public var deviceNumber: BlockDeviceNumber?
    /// The disk or partition it sits on (`sdb2`), or the holder below it.
    public var holds: String
    /// The device-mapper name (`/sys/class/block/dm-0/dm/name`), when it is one.
    public var mapperName: String?

    public init(sysname: String, deviceNumber: BlockDeviceNumber?, holds: String, mapperName: String? = nil) {
        self.sysname = sysname
        self.deviceNumber = deviceNumber
        self.holds = holds
        self.mapperName = mapperName
    }
}

/// Everything piflash reads about one whole disk from udev and sysfs.
public struct UdevBlockDisk: Sendable {
    /// `/sys/devices/…/block/sdb`.
    public var syspath: String
    /// `/devices/…/block/sdb` (`DEVPATH`).
    public var devpath: String
    public var sysname: String
    public var devnode: String
    public var devtype: String?
    public var deviceNumber: BlockDeviceNumber?
    /// All udev properties, in libudev's order.
    public var properties: [(key: String, value: String)]
    public var devlinks: [String]
    public var tags: [String]
    /// sysfs `removable`.
    public var removable: Bool?
    /// sysfs `ro`: the only place write protection shows (udev properties never carry it).
    public var readOnly: Bool?
    /// sysfs `size`, in 512-byte sectors whatever the logical block size.
    public var sizeSectors: UInt64?
    /// For loop devices, sysfs `loop/backing_file`.
    public var loopBackingFile: String?
    /// Ancestors from the direct parent upwards.
    public var ancestors: [UdevAncestor]
    public var partitions: [UdevPartition]
    public var holders: [UdevHolder]
    /// Names of other block devices that sit below this one in sysfs and are not partitions
    /// (eMMC `mmcblk0boot0`, `mmcblk0boot1`, `mmcblk0rpmb`).
    public var siblingAreas: [String]

    /// Whether an ancestor belongs to this subsystem (`usb`, `mmc`, `scsi`, `nvme`, `virtio`…).
    public func hasAncestor(subsystem: String) -> Bool {
        ancestors.contains { $0.subsystem == subsystem }
    }

    /// Whether the disk hangs on USB somewhere up its device tree (also behind SAT bridges that
    /// make udev say `ID_BUS=ata`).
    public var hasUSBAncestor: Bool { hasAncestor(subsystem: "usb") }
    /// Whether the disk is an MMC/SD card (or eMMC) in an MMC host.
    public var hasMMCAncestor: Bool { hasAncestor(subsystem: "mmc") }
    /// Whether a SCSI device sits between the disk and its host (USB mass storage, SATA, SAS).
    public var hasSCSIAncestor: Bool { hasAncestor(subsystem: "scsi") }
}

extension UdevDevice {
    /// Reads a snapshot of this whole disk: properties, sysfs attributes, ancestors, partitions
    /// (the block children with `DEVTYPE=partition`) and holders (of the disk and of each
    /// partition, recursively).
    public func blockDiskSnapshot() -> UdevBlockDisk {
        let ancestors = self.ancestors.map { device in
            UdevAncestor(
                subsystem: device.subsystem, devtype: device.devtype, sysname: device.sysname, driver: device.driver,
                mmcType: device.subsystem == "mmc" ? device.sysattr("type") : nil)
        }
        var partitions: [UdevPartition] = []
        var areas: [String] = []
        let mine = syspath
        for child in Sysfs.directoryEntries("\(mine)").sorted() {
            guard Sysfs.exists("\(mine)/\(child)/dev"), let device = try? context.device(syspath: "\(mine)/\(child)") else {
                continue
            }
            if device.devtype == "partition" {
                partitions.append(UdevPartition(
                    sysname: device.sysname, devnode: device.devnode, deviceNumber: device.deviceNumber,
                    properties: Dictionary(device.properties.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 }),
                    sizeSectors: device.sysattr("size").flatMap { UInt64($0) }))
            } else {
                areas.append(device.sysname)
            }
        }
        partitions.sort { (Int($0.properties["PARTN"] ?? "") ?? 0, $0.sysname) < (Int($1.properties["PARTN"] ?? "") ?? 0, $1.sysname) }
        var holders = Sysfs.holders(of: "\(mine)", name: sysname)
        for partition in partitions {
            holders += Sysfs.holders(of: "\(mine)/\(partition.sysname)", name: partition.sysname)
        }
        // eMMC boot areas are siblings in /sys/class/block on some kernels rather than children.
        for suffix in ["boot0", "boot1", "rpmb"] where !areas.contains(sysname + suffix) {
            if Sysfs.exists("/sys/class/block/\(sysname)\(suffix)") { areas.append(sysname + suffix) }
        }
        return UdevBlockDisk(
            syspath: syspath, devpath: devpath, sysname: sysname, devnode: devnode ?? "/dev/\(sysname)", devtype: devtype,
            deviceNumber: deviceNumber, properties: properties, devlinks: devlinks, tags: tags,
            removable: sysattr("removable").map { $0 == "1" }, readOnly: sysattr("ro").map { $0 == "1" },
            sizeSectors: sysattr("size").flatMap { UInt64($0) },
            loopBackingFile: sysattr("loop/backing_file"),
            ancestors: ancestors, partitions: partitions, holders: holders, siblingAreas: areas)
    }
}

/// Small sysfs readers (plain files and directories under `/sys`).
public enum Sysfs {
    /// The names in a directory, without `.` and `..`; empty when it cannot be read.
    public static func directoryEntries(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// A small text file's content without the trailing newline; nil when it cannot be read.
    public static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            bytes += buffer[0..<n]
        }
        var text = Substring(String(decoding: bytes, as: UTF8.self))
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }

    /// The holders of a block device (`<syspath>/holders/*`) and, recursively, theirs.
    static func holders(of syspath: String, name: String, depth: Int = 0) -> [UdevHolder] {
        guard depth < 8 else { return [] }
        var out: [UdevHolder] = []
        for holder in directoryEntries("\(syspath)/holders").sorted() {
            let base = "/sys/class/block/\(holder)"
            out.append(UdevHolder(
                sysname: holder, deviceNumber: read("\(base)/dev").flatMap { BlockDeviceNumber($0) }, holds: name,
                mapperName: read("\(base)/dm/name")))
            out += holders(of: base, name: holder, depth: depth + 1)
        }
        return out
    }
}
