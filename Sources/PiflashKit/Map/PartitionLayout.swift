import PiflashPlatform

/// A filesystem family whose free space the map may leave out, when a partition's type allows it and
/// its content proves it.
public enum MappableFilesystem: String, Sendable, Equatable, CaseIterable {
    /// ext2, ext3 and ext4 (read with libext2fs).
    case ext
    /// FAT12, FAT16 and FAT32.
    case fat
}

/// An image's partition table (MBR or GPT) as the map reads it from the image's first bytes, in pure
/// Swift, with every doubt written down. The map trusts nothing it cannot check: a table it does not
/// understand makes the whole image mapped.
public struct PartitionLayout: Sendable, Equatable {
    /// The kind of table.
    public enum Scheme: String, Sendable, Equatable {
        /// An MBR (DOS) table with no protective 0xEE entry.
        case mbr
        /// A GPT behind a protective (or hybrid) MBR.
        case gpt
        /// Nothing recognised.
        case none
    }

    /// One partition of the table.
    public struct Partition: Sendable, Equatable {
        /// The number the kernel would give it (MBR slot 1–4; GPT entry index + 1).
        public var number: Int
        /// Its bytes in the image (clamped to the image's end).
        public var range: Range<UInt64>
        /// The MBR type (`0x83`) or the GPT type GUID (upper case).
        public var type: String
        /// The filesystems this type may hold whose free space the map may leave out; empty for types
        /// the map does not understand (they are mapped in full).
        public var mappable: Set<MappableFilesystem>
        /// Why this partition is mapped in full whatever it holds (overlap, extended container), or nil.
        public var distrust: String?
    }

    /// The kind of table.
    public var scheme: Scheme
    /// The partitions in table order.
    public var partitions: [Partition]
    /// The table's own bytes, always mapped: the MBR sector; the primary GPT header and entries; the
    /// backup entries and header.
    public var tableRanges: [Range<UInt64>]
    /// Why the table as a whole is not trusted (the whole image is then mapped), empty when it is.
    public var doubts: [String]

    static let extendedTypes: Set<UInt8> = [0x05, 0x0F, 0x85]
    static let mbrExt: Set<UInt8> = [0x83]
    static let mbrFAT: Set<UInt8> = [0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E, 0xEF]
    /// GPT types that hold ext2/3/4: Linux filesystem data, the discoverable-partitions roots (x86,
    /// x86-64, arm, arm64), /home, /srv.
    static let gptExt: Set<String> = [
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "44479540-F297-41B2-9AF7-D131D5F0458A",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
        "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
    ]
    /// GPT types that hold FAT: Microsoft basic data, EFI System.
    static let gptFAT: Set<String> = ["EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"]
    /// The extended boot loader partition holds either.
    static let gptEither = "BC13C2FF-59E6-4262-A352-B275FD6F7172"

    /// Reads the table from the image's first sectors (and the GPT entries where the header says).
    ///
    /// - Throws: ``MapNeed`` when the bytes have not passed yet.
    static func read(_ input: MapInput) throws -> PartitionLayout {
        let size = input.imageBytes
        var layout = PartitionLayout(scheme: .none, partitions: [], tableRanges: [0..<min(size, 512)], doubts: [])
        guard size >= 512 else {
            layout.doubts.append("the image is smaller than one sector")
            return layout
        }
        let mbr = try input.read(0..<512)
        guard mbr[510] == 0x55, mbr[511] == 0xAA else {
            layout.doubts.append("no MBR signature (0x55AA) in the first sector: no partition table piflash understands")
            return layout
        }
        var mbrPartitions: [Partition] = []
        var protective = false
        for slot in 0..<4 {
            let entry = 446 + 16 * slot
            let status = mbr[entry]
            let type = mbr[entry + 4]
            let first = mbr.le32(entry + 8)
            let count = mbr.le32(entry + 12)
            if type == 0 || count == 0 { continue }
            guard status == 0x00 || status == 0x80 else {
                layout.doubts.append("MBR entry \(slot + 1) has status byte \(hex(status)): not a partition table")
                return layout
            }
            if type == 0xEE {
                protective = true
                continue
            }
            guard first > 0 else {
                layout.doubts.append("MBR partition \(slot + 1) starts at sector 0, over the table itself")
                return layout
            }
            let start = first * 512
            let range = min(start, size)..<min(start + count * 512, size)
            var partition = Partition(
                number: slot + 1, range: range, type: hex(type),
                mappable: mbrExt.contains(type) ? [.ext] : mbrFAT.contains(type) ? [.fat] : [], distrust: nil)
            if extendedTypes.contains(type) { partition.distrust = "an extended partition (its logical partitions are mapped in full)" }
            mbrPartitions.append(partition)
        }
        if protective {
            layout.scheme = .gpt
            var found = false
            for sectorSize: UInt64 in [512, 4096] where size >= sectorSize * 2 {
                if let gpt = try readGPT(input, sectorSize: sectorSize, into: &layout) {
                    found = true
                    // A hybrid MBR's other entries stay: the overlap rule below keeps only the identical ones trusted.
                    layout.partitions = gpt + mbrPartitions.filter { p in !gpt.contains { $0.range == p.range } }
                    break
                }
            }
            if !found {
                layout.doubts.append("a protective MBR (type 0xEE) but no valid GPT header at sector 1")
                return layout
            }
        } else {
            layout.scheme = .mbr
            layout.partitions = mbrPartitions
        }
        // Partitions that overlap a different partition are not trusted: their free space may be another's data.
        for i in layout.partitions.indices {
            for j in layout.partitions.indices where i != j {
                let a = layout.partitions[i].range
                let b = layout.partitions[j].range
                if a != b && a.overlaps(b) {
                    layout.partitions[i].distrust = "it overlaps partition \(layout.partitions[j].number)"
                }
            }
        }
        return layout
    }

    /// The GPT at LBA 1 for `sectorSize`, or nil when there is no valid header there. Adds the table's
    /// ranges to `layout`.
    private static func readGPT(_ input: MapInput, sectorSize: UInt64, into layout: inout PartitionLayout) throws -> [Partition]? {
        let size = input.imageBytes
        let header = try input.read(sectorSize..<sectorSize * 2)
        guard header.count >= 92, Array(header[0..<8]) == Array("EFI PART".utf8) else { return nil }
        let headerSize = Int(header.le32(12))
        guard headerSize >= 92, headerSize <= Int(sectorSize) else { return nil }
        var zeroed = Array(header[0..<headerSize])
        zeroed.replaceSubrange(16..<20, with: [0, 0, 0, 0])
        guard zeroed.withUnsafeBytes({ crc32(0, $0) }) == UInt32(header.le32(16)) else { return nil }
        let alternate = header.le64(32)
        let entriesLBA = header.le64(72)
        let entryCount = header.le32(80)
        let entrySize = header.le32(84)
        guard entrySize >= 128, entrySize % 8 == 0, entrySize <= 4096, entryCount <= 65536, entriesLBA >= 2 else { return nil }
        let entriesBytes = entryCount * entrySize
        let entriesStart = entriesLBA * sectorSize
        let entries = try input.read(entriesStart..<entriesStart + entriesBytes)
        guard UInt64(entries.count) == entriesBytes,
            entries.withUnsafeBytes({ crc32(0, $0) }) == UInt32(header.le32(88))
        else {
            layout.doubts.append("the GPT's partition entries do not match their CRC-32")
            return []
        }
        let roundedEntries = (entriesBytes + sectorSize - 1) / sectorSize * sectorSize
        layout.tableRanges = [0..<sectorSize * 2, entriesStart..<entriesStart + roundedEntries]
        // The backup: its header at the alternate LBA, its entries just before it (as every tool writes it).
        if alternate > 1 {
            let backupHeader = alternate * sectorSize
            let backupStart = backupHeader >= roundedEntries ? backupHeader - roundedEntries : 0
            layout.tableRanges.append(min(backupStart, size)..<min(backupHeader + sectorSize, size))
        }
        var partitions: [Partition] = []
        for index in 0..<Int(entryCount) {
            let at = index * Int(entrySize)
            let typeBytes = Array(entries[at..<at + 16])
            guard typeBytes.contains(where: { $0 != 0 }) else { continue }
            let first = entries.le64(at + 32)
            let last = entries.le64(at + 40)
            guard last >= first, first > 0 else {
                layout.doubts.append("GPT entry \(index + 1) has its last sector before its first")
                return []
            }
            let type = guidString(typeBytes)
            let mappable: Set<MappableFilesystem> =
                gptExt.contains(type) ? [.ext] : gptFAT.contains(type) ? [.fat] : type == gptEither ? [.ext, .fat] : []
            let start = first * sectorSize
            let end = (last + 1) * sectorSize
            partitions.append(
                Partition(number: index + 1, range: min(start, size)..<min(end, size), type: type, mappable: mappable, distrust: nil))
        }
        return partitions
    }

    /// A GUID in its usual text form (the first three fields are little-endian on disk).
    static func guidString(_ bytes: [UInt8]) -> String {
        let order = [3, 2, 1, 0, -1, 5, 4, -1, 7, 6, -1, 8, 9, -1, 10, 11, 12, 13, 14, 15]
        return order.map { $0 < 0 ? "-" : hexByte(bytes[$0]) }.joined()
    }

    private static func hexByte(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }

    private static func hex(_ byte: UInt8) -> String { "0x" + hexByte(byte).lowercased() }
}
