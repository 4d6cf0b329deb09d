import PiflashPlatform

/// Computes an ``ImageMap`` from the image itself.
///
/// A raw image is read in place (`pread`). A compressed image is not random-access, so the map pass
/// decompresses it once through the same ``ImageReader`` the writer uses and keeps only the bytes the
/// parsers ask for — the first sector, the GPT entries, each filesystem's superblock, group
/// descriptors and block bitmaps, each FAT's boot sector and FATs — in a sparse anonymous memory file
/// (`memfd_create`; only retained pages take memory: well under 1 MiB for a NixOS image). The parsers
/// run again each time some of the bytes they asked for have passed; every step asks only for bytes after the
/// ones it read (a superblock says where its descriptors are, which say where the bitmaps are), so
/// one pass suffices. When the format tells the uncompressed size (raw, zstd with a content size, xz)
/// the pass stops as soon as the map is complete — for an sdImage that is after the root filesystem's
/// bitmaps, a few MiB into its partition; otherwise (gzip, zstd without size) it runs to the end to
/// learn the size. Metadata placed before what points to it (possible with `meta_bg`) costs another
/// pass; after three passes the image is mapped in full.
public enum ImageMapper {
    /// How a map pass went, for benchmarks and progress.
    public struct Pass: Sendable, Equatable {
        /// Uncompressed bytes decompressed (0 for a raw image read in place).
        public var streamedBytes: UInt64
        /// Bytes kept for parsing.
        public var retainedBytes: UInt64
        /// Decompression passes made.
        public var passes: Int
    }

    /// Maps the image at `path` (raw or compressed, as ``ImageReader`` detects it). Blocking: run it on
    /// a dedicated thread.
    ///
    /// - Parameter progress: called after each decompressed chunk with the bytes decompressed so far and
    ///   the uncompressed size when known (not called for a raw image, which is read in place).
    /// - Throws: exit-2 ``PiflashError`` for an unreadable or corrupt image (as ``ImageReader`` reports
    ///   it), or a stream whose length differs from what its header says.
    public static func map(
        imageAt path: String, progress: ((_ streamed: UInt64, _ total: UInt64?) -> Void)? = nil
    ) throws -> (map: ImageMap, pass: Pass) {
        let reader = try ImageReader(path: path)
        if reader.compression == .raw {
            let input = try MapInput(rawFile: path)
            return (try analyzeFully(input), Pass(streamedBytes: 0, retainedBytes: 0, passes: 0))
        }
        return try mapStream(first: reader, path: path, progress: progress)
    }

    /// Maps an ``ImageSource`` (see ``map(imageAt:progress:)``).
    public static func map(
        _ source: ImageSource, progress: ((_ streamed: UInt64, _ total: UInt64?) -> Void)? = nil
    ) throws -> (map: ImageMap, pass: Pass) {
        try map(imageAt: source.path, progress: progress)
    }

    private static func mapStream(
        first: ImageReader, path: String, progress: ((UInt64, UInt64?) -> Void)?
    ) throws -> (map: ImageMap, pass: Pass) {
        let known = first.uncompressedSize
        // Unknown size: a sparse file far larger than any card; truncated to the real size at the end.
        let input = try MapInput(retainingFor: path, imageBytes: known ?? 1 << 46)
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var streamed: UInt64 = 0
        var reader: ImageReader? = first
        for passNumber in 1...3 {
            let stream = try reader ?? ImageReader(path: path)
            reader = nil
            var outcome = try attempt(input)
            if case .done(let map) = outcome, known != nil {
                return (map, Pass(streamedBytes: streamed, retainedBytes: input.available.count, passes: passNumber))
            }
            var position: UInt64 = 0
            while true {
                let n = try stream.read(into: buffer)
                if n == 0 { break }
                let here = position..<position + UInt64(n)
                // Keep what is asked for; whenever something new was kept, ask again: the parsers that got
                // their bytes may now want more, possibly of this same chunk.
                while case .needs(let wanted) = outcome {
                    var kept = false
                    for range in wanted.ranges where range.overlaps(here) {
                        let part = range.clamped(to: here)
                        let slice = UnsafeRawBufferPointer(
                            rebasing: buffer[Int(part.lowerBound - position)..<Int(part.upperBound - position)])
                        try input.retain(slice, at: part.lowerBound)
                        kept = true
                    }
                    guard kept else { break }
                    outcome = try attempt(input)
                }
                position += UInt64(n)
                streamed += UInt64(n)
                progress?(streamed, known)
                if case .done(let map) = outcome, known != nil {
                    return (map, Pass(streamedBytes: streamed, retainedBytes: input.available.count, passes: passNumber))
                }
            }
            if let known, position != known {
                throw PiflashError.usage(
                    "the image's stream holds \(position) bytes but its header says \(known)", path: path,
                    hint: "the file is damaged or holds several compressed frames; decompress it and flash the raw image")
            }
            if known == nil && input.imageBytes != position { try input.resize(to: position) }
            if case .done(let map) = try attempt(input) {
                return (map, Pass(streamedBytes: streamed, retainedBytes: input.available.count, passes: passNumber))
            }
        }
        let map = ImageMap.full(
            imageBytes: input.imageBytes, because: "the image's metadata could not be gathered in three passes")
        return (map, Pass(streamedBytes: streamed, retainedBytes: input.available.count, passes: 3))
    }

    private enum Outcome {
        case done(ImageMap)
        case needs(ByteRanges)
    }

    private static func attempt(_ input: MapInput) throws -> Outcome {
        do {
            return .done(try analyze(input))
        } catch let need as MapNeed {
            return .needs(need.ranges)
        }
    }

    /// ``analyze(_:)`` on an input that has every byte.
    static func analyzeFully(_ input: MapInput) throws -> ImageMap {
        do {
            return try analyze(input)
        } catch is MapNeed {
            preconditionFailure("a raw image lacks bytes it holds")
        }
    }

    /// Applies the rules of ``ImageMap`` to what `input` holds.
    /// - Throws: ``MapNeed`` (aggregated over every partition) for bytes not retained yet.
    static func analyze(_ input: MapInput) throws -> ImageMap {
        let size = input.imageBytes
        let layout = try PartitionLayout.read(input)
        if let doubt = layout.doubts.first { return ImageMap.full(imageBytes: size, because: doubt) }
        var regions: [ImageMap.Region] = layout.tableRanges.map {
            ImageMap.Region(range: $0, summary: "partition table (\(layout.scheme.rawValue))", mappedInFullBecause: nil)
        }
        var holes = ByteRanges()
        var needs = ByteRanges()
        for partition in layout.partitions where !partition.range.isEmpty {
            let name = "partition \(partition.number) (\(partition.type))"
            if let distrust = partition.distrust {
                regions.append(.init(range: partition.range, summary: name, mappedInFullBecause: distrust))
                continue
            }
            if partition.mappable.isEmpty {
                regions.append(.init(range: partition.range, summary: name, mappedInFullBecause: "a partition type piflash does not map"))
                continue
            }
            do {
                let found = try holesOfFilesystem(in: partition, input: input)
                holes = holes.union(found.holes.clamped(to: partition.range))
                regions.append(.init(range: partition.range, summary: name + ": " + found.summary, mappedInFullBecause: nil))
            } catch let need as MapNeed {
                needs = needs.union(need.ranges)
            } catch let doubt as MapDoubt {
                regions.append(.init(range: partition.range, summary: name, mappedInFullBecause: doubt.reason))
            }
        }
        if !needs.ranges.isEmpty { throw MapNeed(ranges: needs) }
        let mapped = ByteRanges([0..<size]).subtracting(holes).union(ByteRanges(layout.tableRanges))
        return ImageMap(imageBytes: size, mapped: mapped, regions: regions.sorted { $0.range.lowerBound < $1.range.lowerBound })
    }

    /// The free space of the filesystem a partition holds: ext when its type allows ext and its
    /// superblock has the ext magic (0xEF53 at byte 1080), else FAT when its type allows FAT.
    private static func holesOfFilesystem(
        in partition: PartitionLayout.Partition, input: MapInput
    ) throws -> (summary: String, holes: ByteRanges) {
        let base = partition.range.lowerBound
        if partition.mappable.contains(.ext) {
            let magic = try input.read(base + 1080..<base + 1082)
            if magic == [0x53, 0xEF] { return try Ext4Map.holes(in: partition.range, input: input) }
            if !partition.mappable.contains(.fat) { throw MapDoubt("no ext2/3/4 superblock") }
        }
        return try FATMap.holes(in: partition.range, input: input)
    }
}
