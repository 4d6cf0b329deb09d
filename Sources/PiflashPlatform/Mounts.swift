// What is mounted and what is swap, by device number: /proc/self/mountinfo and /proc/swaps.
// And umount2(2) for the auto-mounted partitions of a card about to be written.
#if canImport(Glibc)
import Glibc
#endif

/// One line of `/proc/self/mountinfo`.
public struct MountEntry: Sendable, Equatable {
    public var mountID: Int
    public var parentID: Int
    /// `major:minor` of the mounted filesystem's device (field 3).
    public var device: BlockDeviceNumber
    /// The directory it is mounted on, with the kernel's `\040`-style escapes decoded.
    public var mountPoint: String
    public var fsType: String
    /// The mount source (`/dev/sdb1`, `/dev/root`, `tmpfs`…), escapes decoded.
    public var source: String

    public init(mountID: Int = 0, parentID: Int = 0, device: BlockDeviceNumber, mountPoint: String, fsType: String,
                source: String) {
        self.mountID = mountID
        self.parentID = parentID
        self.device = device
        self.mountPoint = mountPoint
        self.fsType = fsType
        self.source = source
    }
}

/// The mount table (`/proc/self/mountinfo`).
public struct MountTable: Sendable, Equatable {
    public var entries: [MountEntry]

    public init(entries: [MountEntry] = []) {
        self.entries = entries
    }

    /// Parses mountinfo text (see proc(5)): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`.
    /// Lines that do not parse are skipped.
    public init(mountinfo text: String) {
        var entries: [MountEntry] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 7, let id = Int(fields[0]), let parent = Int(fields[1]),
                  let device = BlockDeviceNumber(fields[2]),
                  let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 2 < fields.count
            else { continue }
            entries.append(MountEntry(
                mountID: id, parentID: parent, device: device, mountPoint: Self.unescape(fields[4]),
                fsType: String(fields[dash + 1]), source: Self.unescape(fields[dash + 2])))
        }
        self.entries = entries
    }

    /// Reads `/proc/self/mountinfo` (or another file in that format).
    /// - Throws: ``PiflashError`` when the file cannot be read.
    public static func read(path: String = "/proc/self/mountinfo") throws -> MountTable {
        guard let text = Sysfs.read(path) else {
            throw PiflashError.system("open", errno: errno == 0 ? EIO : errno, path: path, what: "cannot read the mount table")
        }
        return MountTable(mountinfo: text)
    }

    /// The mounts of a device number.
    public func mounts(of device: BlockDeviceNumber) -> [MountEntry] {
        entries.filter { $0.device == device }
    }

    /// Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash) the
    /// kernel uses in mountinfo and /proc/swaps.
    public static func unescape(_ text: some StringProtocol) -> String {
        guard text.contains("\\") else { return String(text) }
        var bytes: [UInt8] = []
        let source = Array(text.utf8)
        var index = 0
        while index < source.count {
            if source[index] == UInt8(ascii: "\\"), index + 3 < source.count {
                let digits = source[(index + 1)...(index + 3)]
                if digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") }) {
                    let value = digits.reduce(0) { $0 * 8 + Int($1 - UInt8(ascii: "0")) }
                    if value < 256 {
                        bytes.append(UInt8(value))
                        index += 4
                        continue
                    }
                }
            }
            bytes.append(source[index])
            index += 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// One active swap area from `/proc/swaps`.
public struct SwapEntry: Sendable, Equatable {
    /// The swap device or file, escapes decoded.
    public var path: String
    /// `partition` or `file`.
    public var type: String
    /// For a swap device, its device number; for a swap file, the device of the filesystem that
    /// holds it. Nil when the path could not be examined.
    public var device: BlockDeviceNumber?

    public init(path: String, type: String, device: BlockDeviceNumber?) {
        self.path = path
        self.type = type
        self.device = device
    }
}

/// The active swap areas.
public enum SwapTable {
    /// Parses `/proc/swaps` text. `resolve` turns each path into a device number (by default
    /// `stat(2)`: `st_rdev` for a device, `st_dev` for a file).
    public static func parse(_ text: String, resolve: (String, String) -> BlockDeviceNumber? = SwapTable.deviceNumber)
        -> [SwapEntry]
    {
        text.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2 else { return nil }
            let path = MountTable.unescape(fields[0])
            let type = String(fields[1])
            return SwapEntry(path: path, type: type, device: resolve(path, type))
        }
    }

    /// Reads `/proc/swaps`; an unreadable file (no swap support) is an empty list.
    public static func read(path: String = "/proc/swaps") -> [SwapEntry] {
        Sysfs.read(path).map { parse($0) } ?? []
    }

    /// The device number behind a swap path: the device itself for a block device, the
    /// filesystem's device for a file.
    public static func deviceNumber(path: String, type: String) -> BlockDeviceNumber? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        if (info.st_mode & S_IFMT) == S_IFBLK { return BlockDeviceNumber(rawDevice: UInt64(info.st_rdev)) }
        return BlockDeviceNumber(rawDevice: UInt64(info.st_dev))
    }
}

/// Unmounts a filesystem (`umount2(path, 0)`: no lazy or forced unmount, so a busy filesystem
/// is reported rather than detached behind its users' backs). A path that is no longer a mount
/// point (`EINVAL`: an automounter got there first) is not an error; callers check the mount
/// table afterwards.
/// - Throws: ``PiflashError`` (`.refused` for `EBUSY`) when the kernel refuses.
public func unmountFilesystem(at path: String) throws {
    while umount2(path, 0) != 0 {
        let code = errno
        if code == EINTR { continue }
        if code == EINVAL { return }
        if code == EBUSY {
            throw PiflashError(.refused, "cannot unmount \(path): it is in use", path: path, call: "umount2", errno: code,
                               hint: "close the programs using it (see `fuser -vm \(path)`) and try again")
        }
        throw PiflashError.system("umount2", errno: code, path: path, what: "cannot unmount \(path)")
    }
}
