import PiflashPlatform

/// Why a disk may not be written. Several can hold at once; each has a stable `code` (for
/// `--json` and tests) and a sentence for people.
public enum RefusalReason: Sendable, Equatable, CustomStringConvertible {
    /// A partition was named, not a whole disk.
    case notWholeDisk
    /// Built-in eMMC storage (or one of its boot/RPMB areas), even when udisks flags it as SD.
    case builtInEMMC(detail: String)
    /// The disk, a partition or a stacked device backs a mounted system path (`/`, `/boot`, `/nix`…).
    case systemMount(device: String, mountPoint: String)
    /// Mounted somewhere that is not an auto-mount location (`/media`, `/run/media`, `/mnt`):
    /// someone mounted it on purpose.
    case mounted(device: String, mountPoint: String)
    /// The disk, a partition or a stacked device is active swap.
    case swap(device: String)
    /// A device-mapper or RAID device sits on it (unlocked LUKS, active LVM, an md member).
    case heldBy(device: String, holder: String)
    /// Not removable media, not on USB or MMC, and not tagged `PIFLASH_CANDIDATE=1`.
    case notCandidate(bus: DiskBus)
    /// A server BMC's virtual medium (AMI "Virtual SD0", iDRAC "Virtual Floppy"): USB, but not a card.
    case virtualMedium(model: String)
    /// sysfs `ro` is 1: the write-protect switch, or a read-only loop device.
    case readOnly(bus: DiskBus)
    /// Size 0: a card reader without a card, or a detached loop device.
    case noMedium(bus: DiskBus)
    case tooSmall(size: UInt64, needed: UInt64)
    case tooLarge(size: UInt64, limit: UInt64)

    /// A stable identifier: `system_mount`, `read_only`, `too_small`…
    public var code: String {
        switch self {
        case .notWholeDisk: "not_whole_disk"
        case .builtInEMMC: "builtin_emmc"
        case .systemMount: "system_mount"
        case .mounted: "mounted"
        case .swap: "swap"
        case .heldBy: "held"
        case .notCandidate: "not_removable"
        case .virtualMedium: "virtual_medium"
        case .readOnly: "read_only"
        case .noMedium: "no_medium"
        case .tooSmall: "too_small"
        case .tooLarge: "too_large"
        }
    }

    public var description: String {
        switch self {
        case .notWholeDisk:
            "is a partition, not a whole disk: name the disk it belongs to"
        case .builtInEMMC(let detail):
            "is built-in eMMC storage (\(detail)), not a removable card"
        case .systemMount(let device, let mountPoint):
            "backs the system path \(mountPoint) (\(device) is mounted there)"
        case .mounted(let device, let mountPoint):
            "\(device) is mounted at \(mountPoint), which is not an automatic mount: unmount it first"
        case .swap(let device):
            "\(device) is in use as swap"
        case .heldBy(let device, let holder):
            "\(device) is in use by \(holder) (device-mapper/RAID): close or stop it first"
        case .notCandidate(let bus):
            "is not removable media, not on USB or MMC (bus: \(bus.rawValue)) and not tagged PIFLASH_CANDIDATE=1"
        case .virtualMedium(let model):
            "is a server management controller's virtual medium (\(model)), not a card"
        case .readOnly(let bus):
            bus == .loop ? "is read-only (attached with losetup -r)" : "is read-only (is the card's write-protect switch on LOCK?)"
        case .noMedium(let bus):
            switch bus {
            case .loop: "has no backing file (a detached loop device)"
            case .usb, .mmc, .scsi, .unknown: "has no medium: no card in the reader"
            default: "is empty (size 0)"
            }
        case .tooSmall(let size, let needed):
            "is too small: \(formatBytes(size)) for an image of \(formatBytes(needed))"
        case .tooLarge(let size, let limit):
            "is larger (\(formatBytes(size))) than --max-size \(formatBytes(limit)): probably not an SD card"
        }
    }
}

/// The verdict on one disk.
public struct Decision: Sendable, Equatable {
    /// Why it would be a candidate: `removable`, `usb`, `mmc`, `tagged` (empty when none applies).
    public var candidateBecause: [String]
    /// Why it is refused; empty for a candidate.
    public var reasons: [RefusalReason]
    /// Auto-mounted filesystems on it (under `/media`, `/run/media`, `/mnt`) that will be
    /// unmounted before writing, deepest first.
    public var autoMounts: [MountEntry]

    public init(candidateBecause: [String], reasons: [RefusalReason], autoMounts: [MountEntry]) {
        self.candidateBecause = candidateBecause
        self.reasons = reasons
        self.autoMounts = autoMounts
    }

    /// A candidate: nothing refuses it.
    public var isCandidate: Bool { reasons.isEmpty }

    /// The reasons as one sentence: `"is read-only; has no medium: no card in the reader"`.
    public var summary: String {
        isCandidate ? "candidate (\(candidateBecause.joined(separator: ", ")))" : reasons.map(\.description).joined(separator: "; ")
    }
}

/// SPEC step 2: which disks piflash may write. A disk is a candidate when it is removable media,
/// on the USB or MMC bus, or tagged `PIFLASH_CANDIDATE=1` by a udev rule; it is never one when it
/// or any partition or stacked device backs a mounted system path, is swap, is read-only, is
/// smaller than the image, is larger than `maxSize`, or has no medium. Built-in eMMC and BMC
/// virtual media are refused whatever their flags.
public struct SafetyPolicy: Sendable, Equatable {
    /// 256 GiB: larger disks are not SD cards.
    public static let defaultMaxSize: UInt64 = 256 << 30

    /// Disks larger than this are refused.
    public var maxSize: UInt64
    /// The uncompressed image size, when known: smaller disks are refused.
    public var imageSize: UInt64?

    public init(maxSize: UInt64 = SafetyPolicy.defaultMaxSize, imageSize: UInt64? = nil) {
        self.maxSize = maxSize
        self.imageSize = imageSize
    }

    /// Mount points under these are automatic mounts of removable media (udisks, desktop
    /// environments) or the conventional temporary place: they are unmounted before writing.
    public static let autoMountRoots = ["/media", "/run/media", "/mnt"]
    /// Mount points at or under these belong to the running system.
    public static let systemRoots = [
        "/boot", "/efi", "/usr", "/var", "/home", "/nix", "/gnu", "/etc", "/opt", "/srv", "/root", "/snap", "/bin", "/sbin",
        "/lib", "/lib64", "/run", "/persist", "/writable",
    ]

    static func isUnder(_ path: String, _ root: String) -> Bool {
        path == root || path.hasPrefix(root + "/")
    }

    /// Whether a mount point is an automatic mount that piflash may undo.
    public static func isAutoMount(_ mountPoint: String) -> Bool {
        autoMountRoots.contains { isUnder(mountPoint, $0) }
    }

    /// Whether a mount point belongs to the running system (`/`, `/boot/efi`, `/var/lib/…`, `/tmp`).
    public static func isSystemPath(_ mountPoint: String) -> Bool {
        if isAutoMount(mountPoint) { return false }
        return mountPoint == "/" || mountPoint == "/tmp" || systemRoots.contains { isUnder(mountPoint, $0) }
    }

    /// Decides about one disk.
    /// - Parameters:
    ///   - disk: the description (live or recorded).
    ///   - mounts: the mount table of the machine the disk is in.
    ///   - swaps: its active swap areas.
    /// - Returns: a candidate decision (with the auto-mounts to undo), or the reasons it is refused.
    public func decide(_ disk: DiskDescription, mounts: MountTable, swaps: [SwapEntry] = []) -> Decision {
        var reasons: [RefusalReason] = []
        var because: [String] = []
        if disk.removable { because.append("removable") }
        if disk.bus == .usb { because.append("usb") }
        if disk.bus == .mmc { because.append("mmc") }
        if disk.isTagged { because.append("tagged") }

        if !disk.isWholeDisk { reasons.append(.notWholeDisk) }
        if let detail = emmcEvidence(disk) { reasons.append(.builtInEMMC(detail: detail)) }

        // Everything on the disk: the disk itself, its partitions, and what is stacked on them.
        var members: [(name: String, number: BlockDeviceNumber?)] = [(disk.sysname, disk.deviceNumber)]
        members += disk.partitions.map { ($0.sysname, $0.deviceNumber) }
        members += disk.holders.map { holder in
            (holder.mapperName.map { "\(holder.sysname) (\($0))" } ?? holder.sysname, holder.deviceNumber)
        }
        let memberNumbers = Set(members.compactMap(\.number))

        var autoMounts: [MountEntry] = []
        for entry in mounts.entries {
            guard let name = owner(of: entry, disk: disk, members: members) else { continue }
            if Self.isAutoMount(entry.mountPoint) {
                autoMounts.append(entry)
            } else if Self.isSystemPath(entry.mountPoint) {
                reasons.append(.systemMount(device: name, mountPoint: entry.mountPoint))
            } else {
                reasons.append(.mounted(device: name, mountPoint: entry.mountPoint))
            }
        }
        for swap in swaps {
            if swap.type == "partition", let number = swap.device, memberNumbers.contains(number) {
                reasons.append(.swap(device: swap.path))
            } else if isPartitionName(swap.path, of: disk.sysname) || swap.path == disk.devnode {
                reasons.append(.swap(device: swap.path))
            }
        }
        for holder in disk.holders {
            let holderName = holder.mapperName.map { "\(holder.sysname) (\($0))" } ?? holder.sysname
            reasons.append(.heldBy(device: holder.holds, holder: holderName))
        }

        if because.isEmpty { reasons.append(.notCandidate(bus: disk.bus)) }
        if let model = virtualMedium(disk) { reasons.append(.virtualMedium(model: model)) }
        if disk.readOnly { reasons.append(.readOnly(bus: disk.bus)) }
        if disk.size == 0 {
            reasons.append(.noMedium(bus: disk.bus))
        } else {
            if let imageSize, disk.size < imageSize { reasons.append(.tooSmall(size: disk.size, needed: imageSize)) }
            if disk.size > maxSize { reasons.append(.tooLarge(size: disk.size, limit: maxSize)) }
        }
        // Unmount the deepest mount first (a bind or nested mount before its parent).
        autoMounts.sort { $0.mountPoint.count > $1.mountPoint.count }
        return Decision(candidateBecause: because, reasons: reasons, autoMounts: autoMounts)
    }

    /// Which member of the disk a mount belongs to (by device number; for recorded disks whose
    /// partitions were not recorded, by the mount source's partition name).
    func owner(of entry: MountEntry, disk: DiskDescription, members: [(name: String, number: BlockDeviceNumber?)]) -> String? {
        if let member = members.first(where: { $0.number == entry.device }) { return member.name }
        let source = entry.source
        if source == disk.devnode { return disk.sysname }
        if source.hasPrefix("/dev/"), isPartitionName(source, of: disk.sysname),
           !disk.partitions.contains(where: { $0.devnode == source && $0.deviceNumber != nil })
        {
            return String(source.dropFirst(5))
        }
        return nil
    }

    /// `/dev/sdb1` of `sdb`, `/dev/mmcblk0p2` of `mmcblk0`, `/dev/nvme0n1p3` of `nvme0n1`.
    func isPartitionName(_ path: String, of disk: String) -> Bool {
        let name = path.hasPrefix("/dev/") ? Substring(path.dropFirst(5)) : Substring(path)
        guard name.hasPrefix(disk) else { return false }
        var rest = name.dropFirst(disk.count)
        if disk.last?.isNumber == true {
            guard rest.first == "p" else { return false }
            rest = rest.dropFirst()
        }
        return !rest.isEmpty && rest.allSatisfy(\.isNumber)
    }

    /// Evidence that an MMC disk is soldered-on eMMC: the card type `MMC`, or eMMC boot/RPMB
    /// areas next to it, or being one of those areas.
    func emmcEvidence(_ disk: DiskDescription) -> String? {
        let name = disk.sysname
        if name.hasPrefix("mmcblk"), let range = name.range(of: "boot") ?? name.range(of: "rpmb"), range.lowerBound > name.startIndex {
            return name.contains("rpmb") ? "its replay-protected memory block" : "one of its hardware boot areas"
        }
        if disk.bus == .mmc || name.hasPrefix("mmcblk") {
            if disk.mmcType == "MMC" { return "the MMC card type says eMMC" }
            if !disk.emmcAreas.isEmpty { return "it has \(disk.emmcAreas.joined(separator: ", "))" }
        }
        return nil
    }

    /// BMC virtual media: USB mass storage that a server's management controller emulates.
    /// (Only on USB: a hypervisor's "Virtual disk" on SCSI is refused for not being removable.)
    func virtualMedium(_ disk: DiskDescription) -> String? {
        guard disk.bus == .usb else { return nil }
        let model = disk.model ?? ""
        let vendor = disk.vendor ?? ""
        let bmcVendors = ["AMI", "iDRAC", "HP iLO", "iLO", "Avocent", "Supermicro", "Lenovo XCC", "Cisco CIMC"]
        if model.lowercased().hasPrefix("virtual") || bmcVendors.contains(vendor) {
            return [vendor, model].filter { !$0.isEmpty }.joined(separator: " ")
        }
        return nil
    }
}
