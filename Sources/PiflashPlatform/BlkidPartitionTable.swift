#if canImport(Glibc)
import Glibc
#endif
import CBlkid
import CPiflashShim

/// What libblkid found in a superblock: the filesystem type, label and UUID.
public struct ProbedFilesystem: Sendable, Equatable {
    /// `TYPE`, e.g. `ext4`, `vfat`, `swap`.
    public var type: String
    /// `LABEL`, when the filesystem has one.
    public var label: String?
    /// `UUID`, when the filesystem has one.
    public var uuid: String?

    public init(type: String, label: String?, uuid: String?) {
        self.type = type
        self.label = label
        self.uuid = uuid
    }
}

/// One entry of a partition table, with what its first bytes hold.
public struct PartitionEntry: Sendable, Equatable {
    /// The partition number as the kernel would name it (`1` for `sda1`).
    public var number: Int
    /// Byte offset of the partition's first byte on the disk.
    public var offset: UInt64
    /// Size in bytes.
    public var size: UInt64
    /// The MBR partition type (e.g. `0x83`), or 0 on GPT.
    public var type: Int
    /// The GPT partition type GUID (or MBR type as text, e.g. `0x83`), as libblkid gives it.
    public var typeString: String?
    /// The GPT partition name (MBR has none).
    public var name: String?
    /// The GPT partition GUID, or the MBR `<disk id>-<number>` id.
    public var uuid: String?
    /// The filesystem found at the partition's offset, or nil when libblkid recognised none.
    public var filesystem: ProbedFilesystem?

    public init(
        number: Int, offset: UInt64, size: UInt64, type: Int, typeString: String?, name: String?, uuid: String?,
        filesystem: ProbedFilesystem?
    ) {
        self.number = number
        self.offset = offset
        self.size = size
        self.type = type
        self.typeString = typeString
        self.name = name
        self.uuid = uuid
        self.filesystem = filesystem
    }

    /// A short human description: `partition 2 (ext4 "NIXOS_SD", 20 MiB at byte 39845888)`.
    public var summary: String {
        var what = filesystem.map { fs in fs.type + (fs.label.map { " \"\($0)\"" } ?? "") } ?? "no filesystem"
        if let name, filesystem?.label != name { what += ", name \"\(name)\"" }
        return "partition \(number) (\(what), \(formatBytes(size)) at byte \(offset))"
    }
}

/// A disk's partition table as libblkid reads it from the disk itself (never from kernel
/// partition nodes, which loop devices here do not have).
public struct PartitionTable: Sendable, Equatable {
    /// `dos` (MBR) or `gpt`.
    public var type: String
    /// The MBR disk identifier (`0x2178694e`) or the GPT disk GUID.
    public var id: String?
    /// The partitions in table order.
    public var partitions: [PartitionEntry]

    public init(type: String, id: String?, partitions: [PartitionEntry]) {
        self.type = type
        self.id = id
        self.partitions = partitions
    }

    /// Reads the partition table of a block device or image file, then probes the filesystem at
    /// each partition's offset.
    ///
    /// Wraps `blkid_new_probe_from_filename`, `blkid_probe_enable_partitions`,
    /// `blkid_probe_get_partitions` and the `blkid_partition_get_*` accessors; each partition is
    /// probed by a second probe over `[offset, offset + size)` of the same file
    /// (`blkid_probe_set_device`, superblocks enabled: `TYPE`, `LABEL`, `UUID`).
    ///
    /// - Throws: ``PiflashError`` with exit 2 when the disk has no partition table (or the path does
    ///   not exist), exit 1 when reading fails.
    public static func read(from path: String) throws -> PartitionTable {
        let probe = try BlkidProbe(path: path)
        let (tableType, tableID, partitions) = try readTable(probe, path: path)
        // Probe each partition's filesystem through one descriptor of the whole disk.
        let fd = try retryingEINTR("open", path: path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var entries = partitions
        for index in entries.indices where entries[index].size > 0 {
            entries[index].filesystem = try probeFilesystem(
                fd: fd, offset: entries[index].offset, size: entries[index].size, path: path)
        }
        return PartitionTable(type: tableType, id: tableID, partitions: entries)
    }

    /// Reads the partition table from a disk's first bytes held in memory (the head a flash keeps
    /// back until every other phase passed, so the card itself has no table yet), then probes each
    /// partition's filesystem on the card through the open descriptor `fd`.
    ///
    /// The head goes into an anonymous memory file (`memfd_create`, sized like the disk and
    /// sparse beyond the head) that libblkid reads as the disk (`blkid_probe_set_device`).
    ///
    /// - Parameters:
    ///   - head: the disk's first bytes (at least the partition tables: 64 KiB covers MBR and GPT).
    ///   - diskSize: the disk's (or the image's) size, for a GPT's last-LBA checks.
    ///   - fd: the card or image file, open for reading.
    ///   - path: for messages.
    /// - Throws: as ``read(from:)``.
    public static func read(head: UnsafeRawBufferPointer, diskSize: UInt64, fd: Int32, path: String) throws -> PartitionTable {
        let memory = try retryingEINTR("memfd_create", path: path) { piflash_memfd("piflash-head") }
        defer { close(memory) }
        try retryingEINTR("ftruncate", path: path) { ftruncate(memory, off_t(max(diskSize, UInt64(head.count)))) }
        var done = 0
        while done < head.count {
            let n = pwrite(memory, head.baseAddress! + done, head.count - done, off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw PiflashError.system("pwrite", errno: errno, path: path, what: "cannot hold the partition table in memory")
            }
            done += n
        }
        let probe = try BlkidProbe(fd: memory, offset: 0, size: max(diskSize, UInt64(head.count)), path: path)
        let (tableType, tableID, partitions) = try readTable(probe, path: path)
        var entries = partitions
        // libblkid reads with unaligned buffers: the borrowed descriptor does buffered I/O meanwhile.
        try DeviceFile.withBufferedIO(fd, path: path) {
            for index in entries.indices where entries[index].size > 0 {
                entries[index].filesystem = try probeFilesystem(
                    fd: fd, offset: entries[index].offset, size: entries[index].size, path: path)
            }
        }
        return PartitionTable(type: tableType, id: tableID, partitions: entries)
    }

    /// The table type, its id and its partitions (without filesystems) as `probe` reads them.
    private static func readTable(_ probe: BlkidProbe, path: String) throws -> (String, String?, [PartitionEntry]) {
        errno = 0
        try probe.check(blkid_probe_enable_partitions(probe.handle, 1), "blkid_probe_enable_partitions")
        try probe.check(
            blkid_probe_set_partitions_flags(probe.handle, Int32(BLKID_PARTS_ENTRY_DETAILS)),
            "blkid_probe_set_partitions_flags")
        // Whole-disk superblocks are not what we want here: a partition table is.
        try probe.check(blkid_probe_enable_superblocks(probe.handle, 0), "blkid_probe_enable_superblocks")
        errno = 0
        guard let list = blkid_probe_get_partitions(probe.handle) else {
            if errno != 0 && errno != EINVAL {
                throw PiflashError.system(
                    "blkid_probe_get_partitions", errno: errno, path: path, what: "cannot read the partition table")
            }
            throw noTable(path)
        }
        guard let table = blkid_partlist_get_table(list) else { throw noTable(path) }
        let tableType = blkidString(blkid_parttable_get_type(table)) ?? "unknown"
        let tableID = blkidString(blkid_parttable_get_id(table))
        let count = try probe.check(blkid_partlist_numof_partitions(list), "blkid_partlist_numof_partitions")

        var entries: [PartitionEntry] = []
        for index in 0..<count {
            guard let partition = blkid_partlist_get_partition(list, index) else { continue }
            let start = blkid_partition_get_start(partition)
            let size = blkid_partition_get_size(partition)
            guard start >= 0, size >= 0 else {
                throw PiflashError.usage("partition \(index + 1) has a negative start or size: corrupt table", path: path)
            }
            entries.append(
                PartitionEntry(
                    number: Int(blkid_partition_get_partno(partition)),
                    offset: UInt64(start) * 512,
                    size: UInt64(size) * 512,
                    type: Int(blkid_partition_get_type(partition)),
                    typeString: blkidString(blkid_partition_get_type_string(partition)),
                    name: blkidString(blkid_partition_get_name(partition)),
                    uuid: blkidString(blkid_partition_get_uuid(partition)),
                    filesystem: nil))
        }
        return (tableType, tableID, entries)
    }

    /// Probes the filesystem in `[offset, offset + size)` of an open file (`blkid_do_safeprobe`
    /// with superblocks enabled). Returns nil when nothing is recognised.
    ///
    /// - Throws: ``PiflashError`` when probing fails, or when two filesystems claim the range
    ///   (libblkid's "ambivalent" result: a disk that was reformatted without wiping).
    public static func probeFilesystem(fd: Int32, offset: UInt64, size: UInt64, path: String) throws -> ProbedFilesystem? {
        let probe = try BlkidProbe(fd: fd, offset: offset, size: size, path: path)
        errno = 0
        try probe.check(blkid_probe_enable_superblocks(probe.handle, 1), "blkid_probe_enable_superblocks")
        try probe.check(
            blkid_probe_set_superblocks_flags(
                probe.handle, Int32(BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID)),
            "blkid_probe_set_superblocks_flags")
        try probe.check(blkid_probe_enable_partitions(probe.handle, 0), "blkid_probe_enable_partitions")
        errno = 0
        let result = blkid_do_safeprobe(probe.handle)
        switch result {
        case 0:
            guard let type = probe.value("TYPE") else { return nil }
            return ProbedFilesystem(type: type, label: probe.value("LABEL"), uuid: probe.value("UUID"))
        case 1:
            return nil
        case -2:
            throw PiflashError.usage(
                "more than one filesystem signature at byte \(offset): the partition is ambiguous", path: path,
                hint: "the image may be corrupt; rebuild it")
        default:
            try probe.check(result, "blkid_do_safeprobe", offset: offset)
            return nil
        }
    }

    private static func noTable(_ path: String) -> PiflashError {
        PiflashError.usage(
            "no partition table (MBR or GPT) found", path: path,
            hint: "this is not a disk image, or it is damaged; an sdImage starts with a partition table")
    }
}
