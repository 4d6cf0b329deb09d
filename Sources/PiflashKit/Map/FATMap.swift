/// The free space of a FAT12/16/32 filesystem, read from its boot sector and its FATs in pure Swift.
///
/// Mapped (never left out): the reserved area (boot sector, FSInfo, backup boot sector), every FAT,
/// the FAT12/16 root directory, every cluster that a FAT marks non-zero in ANY copy (chains, end
/// marks, bad clusters, reserved values) and the sectors after the last cluster. Left out: clusters
/// that every FAT copy marks 0. A boot sector that fails any check is a doubt: mapped in full.
enum FATMap {
    /// What a FAT boot sector says.
    struct Geometry: Equatable {
        var bytesPerSector: UInt64
        var sectorsPerCluster: UInt64
        var reservedSectors: UInt64
        var fatCount: UInt64
        var fatSectors: UInt64
        var rootDirSectors: UInt64
        var totalSectors: UInt64
        var clusterCount: UInt64
        /// 12, 16 or 32.
        var bits: Int

        var dataStart: UInt64 { (reservedSectors + fatCount * fatSectors + rootDirSectors) * bytesPerSector }
        var clusterBytes: UInt64 { sectorsPerCluster * bytesPerSector }
        var filesystemBytes: UInt64 { totalSectors * bytesPerSector }
    }

    /// Parses and checks a boot sector; returns the geometry or why it is not trusted.
    static func geometry(_ boot: [UInt8]) -> Result<Geometry, MapDoubt> {
        guard boot.count >= 512 else { return .failure(MapDoubt("the boot sector is cut off")) }
        guard boot[0] == 0xEB || boot[0] == 0xE9 else { return .failure(MapDoubt("no FAT boot sector jump instruction")) }
        guard boot[510] == 0x55, boot[511] == 0xAA else { return .failure(MapDoubt("no boot sector signature")) }
        let bytesPerSector = boot.le16(11)
        let sectorsPerCluster = UInt64(boot[13])
        let reserved = boot.le16(14)
        let fatCount = UInt64(boot[16])
        let rootEntries = boot.le16(17)
        let total16 = boot.le16(19)
        let fat16 = boot.le16(22)
        let total32 = boot.le32(32)
        let fat32 = boot.le32(36)
        guard [512, 1024, 2048, 4096].contains(bytesPerSector) else {
            return .failure(MapDoubt("\(bytesPerSector) bytes per sector"))
        }
        guard sectorsPerCluster > 0, sectorsPerCluster <= 128, sectorsPerCluster & (sectorsPerCluster - 1) == 0 else {
            return .failure(MapDoubt("\(sectorsPerCluster) sectors per cluster"))
        }
        guard reserved >= 1, fatCount >= 1, fatCount <= 4 else { return .failure(MapDoubt("no reserved sector or FAT count \(fatCount)")) }
        let total = total16 != 0 ? total16 : total32
        let fatSectors = fat16 != 0 ? fat16 : fat32
        guard total > 0, fatSectors > 0 else { return .failure(MapDoubt("a size or FAT size of 0")) }
        let rootDirSectors = (rootEntries * 32 + bytesPerSector - 1) / bytesPerSector
        let metaSectors = reserved + fatCount * fatSectors + rootDirSectors
        guard metaSectors < total else { return .failure(MapDoubt("no data area")) }
        let clusterCount = (total - metaSectors) / sectorsPerCluster
        let bits = clusterCount < 4085 ? 12 : clusterCount < 65525 ? 16 : 32
        if bits == 32 {
            guard rootEntries == 0, fat16 == 0 else { return .failure(MapDoubt("FAT32 cluster count with a FAT12/16 layout")) }
        } else {
            guard fat16 != 0 else { return .failure(MapDoubt("FAT\(bits) cluster count with a FAT32 layout")) }
        }
        guard (clusterCount + 2) * UInt64(bits) <= fatSectors * bytesPerSector * 8 else {
            return .failure(MapDoubt("the FAT is too small for \(clusterCount) clusters"))
        }
        return .success(
            Geometry(
                bytesPerSector: bytesPerSector, sectorsPerCluster: sectorsPerCluster, reservedSectors: reserved,
                fatCount: fatCount, fatSectors: fatSectors, rootDirSectors: rootDirSectors, totalSectors: total,
                clusterCount: clusterCount, bits: bits))
    }

    /// The entry of `cluster` in a FAT held in `fat`.
    static func entry(_ fat: [UInt8], at base: Int, cluster: UInt64, bits: Int) -> UInt64 {
        let n = Int(cluster)
        switch bits {
        case 12:
            let value = fat.le16(base + n + n / 2)
            return n & 1 == 1 ? value >> 4 : value & 0xFFF
        case 16: return fat.le16(base + 2 * n)
        default: return fat.le32(base + 4 * n)
        }
    }

    /// The free clusters' bytes (relative to the image) of the FAT filesystem filling `partition`.
    ///
    /// - Throws: ``MapNeed`` for the boot sector and FATs not yet retained; ``MapDoubt`` when the
    ///   filesystem is not trusted.
    static func holes(in partition: Range<UInt64>, input: MapInput) throws -> (summary: String, holes: ByteRanges) {
        let base = partition.lowerBound
        let boot = try input.read(base..<base + 512)
        let geometry = try geometry(boot).get()
        guard base + geometry.filesystemBytes <= partition.upperBound else {
            throw MapDoubt("the FAT filesystem (\(geometry.filesystemBytes) bytes) is larger than its partition")
        }
        let fatStart = base + geometry.reservedSectors * geometry.bytesPerSector
        let fatBytes = geometry.fatSectors * geometry.bytesPerSector
        let fats = try input.read(fatStart..<fatStart + geometry.fatCount * fatBytes)
        // A cut-off FAT would read as free clusters: never.
        guard UInt64(fats.count) == geometry.fatCount * fatBytes else { throw MapDoubt("the FATs are cut off by the image's end") }
        var holes: [Range<UInt64>] = []
        let dataStart = base + geometry.dataStart
        var runStart: UInt64?
        var free: UInt64 = 0
        for cluster in UInt64(2)..<geometry.clusterCount + 2 {
            var used = false
            for copy in 0..<Int(geometry.fatCount) where entry(fats, at: copy * Int(fatBytes), cluster: cluster, bits: geometry.bits) != 0 {
                used = true
                break
            }
            if used {
                if let start = runStart {
                    holes.append(dataStart + (start - 2) * geometry.clusterBytes..<dataStart + (cluster - 2) * geometry.clusterBytes)
                    runStart = nil
                }
            } else {
                free += 1
                if runStart == nil { runStart = cluster }
            }
        }
        if let start = runStart {
            let end = geometry.clusterCount + 2
            holes.append(dataStart + (start - 2) * geometry.clusterBytes..<dataStart + (end - 2) * geometry.clusterBytes)
        }
        let summary =
            "FAT\(geometry.bits), \(geometry.clusterCount) clusters of \(geometry.clusterBytes) bytes, \(free) free"
        return (summary, ByteRanges(holes))
    }
}

/// Why a part of the image is mapped in full: something piflash could not check.
struct MapDoubt: Error, Equatable {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}
