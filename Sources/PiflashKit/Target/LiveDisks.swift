import PiflashPlatform

/// A disk together with the policy's verdict on it.
public struct SurveyedDisk: Sendable, Equatable {
    public var disk: DiskDescription
    public var decision: Decision

    public init(disk: DiskDescription, decision: Decision) {
        self.disk = disk
        self.decision = decision
    }
}

/// The disks of this machine, read from live udev, sysfs, /proc/self/mountinfo and /proc/swaps.
public struct LiveDisks {
    public let context: UdevContext

    /// - Throws: ``PiflashError`` when libudev cannot be initialised.
    public init(context: UdevContext? = nil) throws {
        self.context = try context ?? UdevContext()
    }

    /// Every whole disk, described with its current mounts.
    /// - Throws: ``PiflashError`` when udev enumeration or the mount table fails.
    public func all() throws -> [DiskDescription] {
        let mounts = try MountTable.read()
        return try context.wholeDisks().map { DiskDescription(udev: $0.blockDiskSnapshot(), mounts: mounts) }
    }

    /// The disk behind a device node or a symlink to one (`/dev/sdb`, `/dev/disk/by-id/…`).
    /// A partition is described too (and refused by the policy as not a whole disk).
    /// - Throws: ``PiflashError`` (`.usage`) when the path is missing or not a block device.
    public func describe(path: String) throws -> DiskDescription {
        let device = try context.device(devnode: path)
        return DiskDescription(udev: device.blockDiskSnapshot(), mounts: try MountTable.read())
    }

    /// The disk at a sysfs path (from a udev event).
    public func describe(syspath: String) throws -> DiskDescription {
        let device = try context.device(syspath: syspath)
        return DiskDescription(udev: device.blockDiskSnapshot(), mounts: try MountTable.read())
    }

    /// Every whole disk with the policy's decision, in a stable order (by device name).
    public func survey(_ policy: SafetyPolicy) throws -> [SurveyedDisk] {
        let mounts = try MountTable.read()
        let swaps = SwapTable.read()
        return try context.wholeDisks()
            .map { DiskDescription(udev: $0.blockDiskSnapshot(), mounts: mounts) }
            .sorted { $0.devnode.localizedStandardLess($1.devnode) }
            .map { SurveyedDisk(disk: $0, decision: policy.decide($0, mounts: mounts, swaps: swaps)) }
    }

    /// Decides about one disk with the current mounts and swaps.
    public func decide(_ disk: DiskDescription, policy: SafetyPolicy) throws -> Decision {
        policy.decide(disk, mounts: try MountTable.read(), swaps: SwapTable.read())
    }
}

extension String {
    /// `loop2` before `loop10`: the letters compare as text, the digits as a number.
    func localizedStandardLess(_ other: String) -> Bool {
        func key(_ text: String) -> (String, Int, String) {
            (String(text.filter { !$0.isNumber }), Int(String(text.filter(\.isNumber)).prefix(18)) ?? 0, text)
        }
        return key(self) < key(other)
    }
}
