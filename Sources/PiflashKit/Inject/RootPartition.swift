import PiflashPlatform

/// The card's (or image file's) root partition: where the ext4 filesystem that receives the
/// bootstrap files lives, found from the partition table on the medium itself.
public struct RootPartition: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The partition number (`2` on a NixOS sdImage).
    public var number: Int
    /// Byte offset of the partition (and its filesystem) on the disk.
    public var offset: UInt64
    /// Size of the partition in bytes.
    public var size: UInt64
    /// The filesystem label (`NIXOS_SD`), when it has one.
    public var label: String?
    /// The filesystem type libblkid found: `ext4` (or `ext3`, `ext2`).
    public var fstype: String
    /// The filesystem UUID, when it has one.
    public var uuid: String?
    /// The partition table type: `dos` or `gpt`.
    public var tableType: String

    public init(
        number: Int, offset: UInt64, size: UInt64, label: String?, fstype: String, uuid: String?, tableType: String
    ) {
        self.number = number
        self.offset = offset
        self.size = size
        self.label = label
        self.fstype = fstype
        self.uuid = uuid
        self.tableType = tableType
    }

    public var description: String {
        "partition \(number) (\(fstype)\(label.map { " \"\($0)\"" } ?? ""), \(formatBytes(size)) at byte \(offset))"
    }

    /// The filesystem types the patcher writes into (libext2fs handles all three the same way).
    public static let writableTypes: Set<String> = ["ext4", "ext3", "ext2"]

    /// Finds the root partition on a block device or image file by reading its partition table (MBR
    /// or GPT) with libblkid and probing each partition's filesystem; never uses kernel partition nodes.
    ///
    /// `.label(L)` matches the filesystem label, or, when no filesystem has it, a GPT partition name;
    /// `.number(N)` matches the partition number.
    ///
    /// - Throws: ``PiflashError``, exit 2 (the image does not fit its host file, or is damaged): no
    ///   partition table; no partition with that label or number (the message lists the partitions
    ///   there are); several partitions with that label; the partition's filesystem is not
    ///   ext2/3/4 (the message says what it is). Exit 1 when the medium cannot be read.
    public static func locate(on path: String, selector: RootSelector) throws -> RootPartition {
        // A card's buffer cache may still hold what udev probed before the image was written; drop
        // it (best effort: BLKFLSBUF needs CAP_SYS_ADMIN) so the table read is the one on the card.
        if Ext2Filesystem.isBlockDevice(path) { try? Ext2Filesystem.dropCachedBlocks(of: path) }
        return try choose(from: PartitionTable.read(from: path), selector: selector, path: path)
    }

    /// Finds the root partition from the image's own partition table held in memory (the head a
    /// flash writes last), probing each partition's filesystem on the open card or file `fd`.
    /// Same rules and errors as ``locate(on:selector:)``.
    public static func locate(
        head: UnsafeRawBufferPointer, diskSize: UInt64, fd: Int32, path: String, selector: RootSelector
    ) throws -> RootPartition {
        try choose(
            from: PartitionTable.read(head: head, diskSize: diskSize, fd: fd, path: path), selector: selector, path: path)
    }

    private static func choose(from table: PartitionTable, selector: RootSelector, path: String) throws -> RootPartition {
        let matches: [PartitionEntry]
        switch selector {
        case .label(let label):
            let byFilesystem = table.partitions.filter { $0.filesystem?.label == label }
            matches = byFilesystem.isEmpty ? table.partitions.filter { $0.name == label } : byFilesystem
        case .number(let number):
            matches = table.partitions.filter { $0.number == number }
        }
        let existing = table.partitions.isEmpty
            ? "it has no partitions"
            : "it has " + table.partitions.map(\.summary).joined(separator: "; ")
        guard let entry = matches.first else {
            let wanted: String
            switch selector {
            case .label(let label): wanted = "no partition labelled \(label)"
            case .number(let number): wanted = "no partition \(number)"
            }
            throw PiflashError.usage(
                "\(wanted) on \(path): \(existing)", path: path,
                hint: "check [root] in the host file (label = \"…\" or partition = N) against the image")
        }
        guard matches.count == 1 else {
            throw PiflashError.usage(
                "\(matches.count) partitions match \(selector) on \(path): "
                    + matches.map(\.summary).joined(separator: "; "),
                path: path, hint: "select the root by number instead: partition = N under [root]")
        }
        guard let filesystem = entry.filesystem else {
            throw PiflashError.usage(
                "the root \(entry.summary) on \(path) holds no filesystem libblkid recognises, not ext4", path: path,
                hint: "the image may be damaged or select another partition under [root]")
        }
        guard writableTypes.contains(filesystem.type) else {
            throw PiflashError.usage(
                "the root \(entry.summary) on \(path) is \(filesystem.type), not ext4", path: path,
                hint: "select the ext4 root partition under [root] (label = \"…\" or partition = N)")
        }
        return RootPartition(
            number: entry.number, offset: entry.offset, size: entry.size, label: filesystem.label,
            fstype: filesystem.type, uuid: filesystem.uuid, tableType: table.type)
    }
}
