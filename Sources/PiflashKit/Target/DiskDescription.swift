import PiflashPlatform

/// The transport a disk hangs on, worked out from its sysfs device path and ancestors, not only
/// from `ID_BUS` (USB-SATA bridges report `ID_BUS=ata`; USB SD readers driven by rtsx_usb_sdmmc
/// appear as `mmcblk`).
public enum DiskBus: String, Sendable, Equatable, CaseIterable {
    case usb, mmc, ata, nvme, scsi, virtio, loop, xen, nbd, zram, ram, dm, md, unknown
}

/// A partition of a disk, for showing and for the safety policy.
public struct PartitionDescription: Sendable, Equatable {
    /// `/dev/sdb1`.
    public var devnode: String
    public var sysname: String
    /// The partition number (`PARTN`), when known.
    public var number: Int?
    public var deviceNumber: BlockDeviceNumber?
    /// Size in bytes, 0 when unknown.
    public var size: UInt64
    /// `ID_FS_TYPE` (`vfat`, `ext4`…), nil when udev found no filesystem.
    public var fsType: String?
    /// `ID_FS_LABEL_ENC` decoded, else `ID_FS_LABEL`.
    public var label: String?
    /// Where it is mounted now (filled by ``DiskDescription/attachMounts(_:)``).
    public var mountPoints: [String]

    public init(devnode: String, sysname: String, number: Int? = nil, deviceNumber: BlockDeviceNumber? = nil,
                size: UInt64 = 0, fsType: String? = nil, label: String? = nil, mountPoints: [String] = []) {
        self.devnode = devnode
        self.sysname = sysname
        self.number = number
        self.deviceNumber = deviceNumber
        self.size = size
        self.fsType = fsType
        self.label = label
        self.mountPoints = mountPoints
    }

    /// Builds a partition from its udev properties.
    public init(sysname: String, devnode: String?, deviceNumber: BlockDeviceNumber?, sizeSectors: UInt64?,
                properties: [String: String]) {
        self.init(
            devnode: devnode ?? properties["DEVNAME"] ?? "/dev/\(sysname)", sysname: sysname,
            number: (properties["PARTN"] ?? properties["ID_PART_ENTRY_NUMBER"]).flatMap { Int($0) },
            deviceNumber: deviceNumber ?? Self.number(properties),
            size: (sizeSectors ?? properties["ID_PART_ENTRY_SIZE"].flatMap { UInt64($0) } ?? 0) * 512,
            fsType: properties["ID_FS_TYPE"].flatMap { $0.isEmpty ? nil : $0 },
            label: DiskDescription.text(encoded: properties["ID_FS_LABEL_ENC"], plain: properties["ID_FS_LABEL"]))
    }

    static func number(_ properties: [String: String]) -> BlockDeviceNumber? {
        guard let major = properties["MAJOR"].flatMap({ UInt32($0) }), let minor = properties["MINOR"].flatMap({ UInt32($0) })
        else { return nil }
        return BlockDeviceNumber(major: major, minor: minor)
    }
}

/// One disk as piflash sees it: identity (model, vendor, serial, by-path), size, transport,
/// write protection, partitions with their filesystems and mount points, stacked devices, and
/// the raw udev properties. Built from live udev (``DiskDescription/init(udev:mounts:)``) or
/// from recorded `udevadm` output (``DiskDescription/fromRecords(_:mounts:)``).
public struct DiskDescription: Sendable, Equatable {
    /// `/dev/sdb`.
    public var devnode: String
    /// `sdb`.
    public var sysname: String
    /// `/devices/…/block/sdb`; nil when the record did not carry it.
    public var devpath: String?
    public var deviceNumber: BlockDeviceNumber?
    /// `DEVTYPE`: `disk` for a whole disk, `partition` for a partition.
    public var devtype: String?
    /// The product name (`ID_MODEL_ENC` decoded and trimmed, else `ID_MODEL`, else the MMC `ID_NAME`).
    public var model: String?
    public var vendor: String?
    /// `ID_SERIAL_SHORT`, else `ID_SERIAL`.
    public var serial: String?
    /// Size in bytes; 0 when the reader has no medium (or the size is unknown).
    public var size: UInt64
    public var bus: DiskBus
    /// `ID_PATH`: the physical port, stable across cards (`pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0`).
    public var byPath: String?
    /// The `/dev/disk/by-path/…` link, when udev made one.
    public var byPathLink: String?
    /// sysfs `removable`.
    public var removable: Bool
    /// sysfs `ro` (write-protect switch, read-only loop). udev properties never show it.
    public var readOnly: Bool
    /// For MMC devices, the card type from sysfs (`SD`, `MMC` for eMMC, `SDIO`) or `MMC_TYPE`.
    public var mmcType: String?
    /// eMMC hardware areas found next to the disk (`mmcblk0boot0`, `mmcblk0rpmb`): proof of eMMC.
    public var emmcAreas: [String]
    /// For a loop device, the file behind it.
    public var loopBackingFile: String?
    /// Where the whole disk itself is mounted (a filesystem without a partition table).
    public var mountPoints: [String]
    public var partitions: [PartitionDescription]
    /// Devices stacked on the disk or its partitions (LUKS, LVM, RAID).
    public var holders: [UdevHolder]
    /// The udev properties as udev has them (escapes not decoded).
    public var properties: [String: String]

    public init(devnode: String, sysname: String, devpath: String? = nil, deviceNumber: BlockDeviceNumber? = nil,
                devtype: String? = "disk", model: String? = nil, vendor: String? = nil, serial: String? = nil,
                size: UInt64 = 0, bus: DiskBus = .unknown, byPath: String? = nil, byPathLink: String? = nil,
                removable: Bool = false, readOnly: Bool = false, mmcType: String? = nil, emmcAreas: [String] = [],
                loopBackingFile: String? = nil, mountPoints: [String] = [], partitions: [PartitionDescription] = [],
                holders: [UdevHolder] = [], properties: [String: String] = [:]) {
        self.devnode = devnode
        self.sysname = sysname
        self.devpath = devpath
        self.deviceNumber = deviceNumber
        self.devtype = devtype
        self.model = model
        self.vendor = vendor
        self.serial = serial
        self.size = size
        self.bus = bus
        self.byPath = byPath
        self.byPathLink = byPathLink
        self.removable = removable
        self.readOnly = readOnly
        self.mmcType = mmcType
        self.emmcAreas = emmcAreas
        self.loopBackingFile = loopBackingFile
        self.mountPoints = mountPoints
        self.partitions = partitions
        self.holders = holders
        self.properties = properties
    }

    /// Whether `PIFLASH_CANDIDATE=1` was set by a udev rule (udev-rules/60-piflash.rules).
    public var isTagged: Bool { properties["PIFLASH_CANDIDATE"] == "1" }

    /// Whether this is a whole disk rather than a partition.
    public var isWholeDisk: Bool { devtype == nil || devtype == "disk" }

    /// A one-line name for people: `SanDisk Ultra USB 3.0` or `/dev/sdb`.
    public var displayName: String {
        let words = [vendor, model].compactMap { $0 }.filter { !$0.isEmpty }
        return words.isEmpty ? devnode : words.joined(separator: " ")
    }

    /// A virtual disk with nothing behind it — a detached loop device, an empty zram device, an
    /// unconnected nbd device — that no one could mean as a target. `piflash devices --all`
    /// counts these instead of listing them (unless `--verbose`). A card reader without a card is
    /// not one: it is hardware the user may be looking for.
    public var isUnusedVirtualDisk: Bool {
        size == 0 && [.loop, .zram, .nbd].contains(bus)
    }

    // MARK: Building

    /// Describes a disk read from live udev and sysfs, with its current mounts.
    public init(udev disk: UdevBlockDisk, mounts: MountTable = MountTable()) {
        let properties = Dictionary(disk.properties.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
        let subsystems = disk.ancestors.compactMap(\.subsystem)
        self.init(
            properties: properties, devnode: disk.devnode, sysname: disk.sysname, devpath: disk.devpath,
            deviceNumber: disk.deviceNumber, devtype: disk.devtype, devlinks: disk.devlinks, ancestorSubsystems: subsystems)
        size = (disk.sizeSectors ?? 0) * 512
        removable = disk.removable ?? false
        readOnly = disk.readOnly ?? false
        if let type = disk.ancestors.first(where: { $0.subsystem == "mmc" })?.mmcType { mmcType = type }
        emmcAreas = disk.siblingAreas.filter { $0.hasPrefix(disk.sysname) }
        loopBackingFile = disk.loopBackingFile
        partitions = disk.partitions.map {
            PartitionDescription(sysname: $0.sysname, devnode: $0.devnode, deviceNumber: $0.deviceNumber,
                                 sizeSectors: $0.sizeSectors, properties: $0.properties)
        }
        holders = disk.holders
        attachMounts(mounts)
    }

    /// The common part: everything that comes from properties and the device path.
    init(properties: [String: String], devnode: String?, sysname: String?, devpath: String?,
         deviceNumber: BlockDeviceNumber?, devtype: String?, devlinks: [String], ancestorSubsystems: [String]) {
        let name = sysname ?? devnode.map { String($0.split(separator: "/").last ?? "") } ?? "unknown"
        let idPath = properties["ID_PATH"]
        self.init(
            devnode: devnode ?? properties["DEVNAME"] ?? "/dev/\(name)", sysname: name, devpath: devpath,
            deviceNumber: deviceNumber ?? PartitionDescription.number(properties), devtype: devtype ?? properties["DEVTYPE"],
            model: Self.text(encoded: properties["ID_MODEL_ENC"], plain: properties["ID_MODEL"]) ?? Self.nonEmpty(properties["ID_NAME"]),
            vendor: Self.text(encoded: properties["ID_VENDOR_ENC"], plain: properties["ID_VENDOR"]),
            serial: Self.nonEmpty(properties["ID_SERIAL_SHORT"]) ?? Self.nonEmpty(properties["ID_SERIAL"]),
            bus: Self.bus(sysname: name, devpath: devpath, ancestorSubsystems: ancestorSubsystems, properties: properties),
            byPath: idPath,
            byPathLink: Self.byPathLink(devlinks, idPath: idPath),
            mmcType: properties["MMC_TYPE"],
            loopBackingFile: properties["ID_LOOP_BACKING_FILENAME"],
            properties: properties)
    }

    /// Builds descriptions from parsed `udevadm` records (one file may hold a disk, its
    /// partitions and eMMC boot areas). Partition records are attached to their disk; a lone
    /// partition record becomes a description of its own (which the policy refuses). Size,
    /// `removable` and `ro` are not in udev records: set them on the result from what the
    /// machine had (lsblk, sysfs).
    /// - Parameter assumedName: the kernel name to use for a record without `DEVNAME`, `DEVPATH`
    ///   or `N:` (a `grep ID_` excerpt).
    public static func fromRecords(_ records: [UdevRecord], mounts: MountTable = MountTable(), assumedName: String? = nil)
        -> [DiskDescription]
    {
        func describe(_ record: UdevRecord) -> DiskDescription {
            let links = record.symlinks.map { "/dev/" + $0 }
                + (record["DEVLINKS"].map { $0.split(separator: " ").map(String.init) } ?? [])
            return DiskDescription(
                properties: record.propertyMap, devnode: record["DEVNAME"] ?? record.name.map { "/dev/" + $0 },
                sysname: record.sysname ?? assumedName, devpath: record.devpath, deviceNumber: nil, devtype: record["DEVTYPE"],
                devlinks: links, ancestorSubsystems: [])
        }
        let all = records.map(describe)
        var disks: [DiskDescription] = []
        for (index, description) in all.enumerated() {
            if description.devtype == "partition" {
                let owner = disks.lastIndex { disk in
                    if let path = records[index].devpath, let diskPath = disk.devpath, path.hasPrefix(diskPath + "/") { return true }
                    if let entryDisk = description.properties["ID_PART_ENTRY_DISK"], let number = disk.deviceNumber {
                        return entryDisk == number.description
                    }
                    return false
                }
                if let owner {
                    let partition = PartitionDescription(sysname: description.sysname, devnode: description.devnode,
                                                         deviceNumber: description.deviceNumber, sizeSectors: nil,
                                                         properties: description.properties)
                    disks[owner].partitions.append(partition)
                    continue
                }
                disks.append(description)
                continue
            }
            if let owner = disks.firstIndex(where: { Self.isEMMCArea(description.sysname, of: $0.sysname) }) {
                disks[owner].emmcAreas.append(description.sysname)
                continue
            }
            disks.append(description)
        }
        return disks.map { disk in
            var disk = disk
            disk.attachMounts(mounts)
            return disk
        }
    }

    /// Fills the mount points of the disk and its partitions from a mount table.
    public mutating func attachMounts(_ table: MountTable) {
        mountPoints = table.entries.filter { owns(entry: $0, name: sysname, number: deviceNumber) }.map(\.mountPoint)
        for index in partitions.indices {
            let partition = partitions[index]
            partitions[index].mountPoints = table.entries
                .filter { owns(entry: $0, name: partition.sysname, number: partition.deviceNumber) }.map(\.mountPoint)
        }
    }

    /// The mounts that a device (by number, else by the mount source's name) backs.
    func owns(entry: MountEntry, name: String, number: BlockDeviceNumber?) -> Bool {
        if let number { return entry.device == number }
        return entry.source == "/dev/\(name)"
    }

    // MARK: Deriving fields

    static func nonEmpty(_ text: String?) -> String? {
        guard let text else { return nil }
        let trimmed = text.trimmingSpaces()
        return trimmed.isEmpty ? nil : trimmed
    }

    /// A `_ENC` value decoded and trimmed, else the plain value; nil when both are blank.
    static func text(encoded: String?, plain: String?) -> String? {
        nonEmpty(encoded.map(UdevRecord.decodeEscapes)) ?? nonEmpty(plain)
    }

    static func byPathLink(_ links: [String], idPath: String?) -> String? {
        let byPath = links.filter { $0.hasPrefix("/dev/disk/by-path/") }
        if let idPath, let exact = byPath.first(where: { $0 == "/dev/disk/by-path/" + idPath }) { return exact }
        return byPath.first { !$0.contains("-usbv") } ?? byPath.first
    }

    /// `mmcblk0boot0`, `mmcblk0boot1`, `mmcblk0rpmb`: the eMMC hardware areas of `mmcblk0`.
    static func isEMMCArea(_ name: String, of disk: String) -> Bool {
        guard name.hasPrefix(disk) else { return false }
        let rest = name.dropFirst(disk.count)
        return rest == "rpmb" || (rest.hasPrefix("boot") && rest.dropFirst(4).allSatisfy(\.isNumber) && rest.count > 4)
    }

    /// Works the transport out from the strongest evidence first: the device path (a `usbN`
    /// component means USB whatever `ID_BUS` says), the ancestors' subsystems, `ID_PATH`, the
    /// kernel name, and only then `ID_BUS`.
    public static func bus(sysname: String, devpath: String?, ancestorSubsystems: [String], properties: [String: String])
        -> DiskBus
    {
        let components = (devpath ?? "").split(separator: "/")
        func component(_ prefix: String) -> Bool {
            components.contains { $0.hasPrefix(prefix) && $0.count > prefix.count && $0.dropFirst(prefix.count).allSatisfy(\.isNumber) }
        }
        let idPath = properties["ID_PATH"] ?? ""
        let idBus = properties["ID_BUS"]
        if sysname.hasPrefix("loop") || (devpath ?? "").hasPrefix("/devices/virtual/block/loop") { return .loop }
        if component("usb") || ancestorSubsystems.contains("usb") || idPath.contains("-usb-") || idPath.contains("-usbv")
            || properties["ID_USB_DRIVER"] != nil || idBus == "usb"
        {
            return .usb
        }
        if ancestorSubsystems.contains("mmc") || components.contains("mmc_host") || sysname.hasPrefix("mmcblk") { return .mmc }
        if ancestorSubsystems.contains("nvme") || components.contains("nvme") || sysname.hasPrefix("nvme") { return .nvme }
        if ancestorSubsystems.contains("virtio") || component("virtio") || sysname.hasPrefix("vd") { return .virtio }
        if component("ata") || idBus == "ata" || properties["ID_ATA"] == "1" { return .ata }
        if sysname.hasPrefix("xvd") || ancestorSubsystems.contains("xen") { return .xen }
        if sysname.hasPrefix("nbd") { return .nbd }
        if sysname.hasPrefix("zram") { return .zram }
        if sysname.hasPrefix("ram") { return .ram }
        if sysname.hasPrefix("dm-") { return .dm }
        if sysname.hasPrefix("md") { return .md }
        if ancestorSubsystems.contains("scsi") || components.contains(where: { $0.hasPrefix("target") }) || idBus == "scsi"
            || sysname.hasPrefix("sd") || sysname.hasPrefix("sr")
        {
            return .scsi
        }
        return .unknown
    }
}

extension String {
    func trimmingSpaces() -> String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}
