#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PiflashKit
import Testing

/// The map from the image itself, proven independently: every byte outside the map is replaced by
/// random bytes and the copy still passes e2fsck / fsck.fat, kernel mounts and mtools see the same
/// files, and the gaps and partitions piflash does not understand are byte-identical.
@Suite("ImageMap", .serialized)
struct ImageMapTests {
    typealias F = InjectFixtures
    typealias M = MapFixtures

    static let linuxGPT = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    static let basicDataGPT = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"

    /// Scrambles outside the map and runs every independent check on the partitions given.
    func prove(
        _ image: String, map: ImageMap, ext: [Range<UInt64>], fat: [Range<UInt64>], identical: [Range<UInt64>],
        in directory: String, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let copy = directory + "/scrambled.img"
        try M.scrambledCopy(of: image, outside: map, to: copy)
        // The scramble really changed the unmapped bytes (the check can fail).
        if map.mappedBytes < map.imageBytes {
            #expect(try F.sha256(ofFile: copy) != F.sha256(ofFile: image), sourceLocation: sourceLocation)
        }
        for range in identical {
            #expect(try M.bytes(copy, range) == M.bytes(image, range), "bytes \(range) differ", sourceLocation: sourceLocation)
        }
        for range in ext { try M.expectExtIntact(original: image, copy: copy, partition: range, sourceLocation: sourceLocation) }
        for range in fat { try M.expectFATIntact(original: image, copy: copy, partition: range, sourceLocation: sourceLocation) }
        F.remove(copy)
    }

    func expectWellFormed(_ map: ImageMap, sourceLocation: SourceLocation = #_sourceLocation) {
        for (a, b) in zip(map.ranges, map.ranges.dropFirst()) {
            #expect(a.upperBound < b.lowerBound, "ranges sorted, apart", sourceLocation: sourceLocation)
        }
        for range in map.ranges {
            #expect(range.lowerBound % 4096 == 0, sourceLocation: sourceLocation)
            #expect(range.upperBound % 4096 == 0 || range.upperBound == map.imageBytes, sourceLocation: sourceLocation)
            #expect(range.upperBound <= map.imageBytes, sourceLocation: sourceLocation)
        }
    }

    @Test("NixOS-like image (MBR, and GPT): the map leaves out the free space, and a copy scrambled outside it is the same image to e2fsck, fsck.fat, the kernel and mtools",
          arguments: [false, true])
    func nixosLike(gpt: Bool) throws {
        try #require(F.isRoot, "needs root for loop devices and mounts")
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory, gpt: gpt, extraMiB: 24)
        // A boot loader in the gap before the first partition (other boards keep one there).
        try F.must(["dd", "if=/dev/urandom", "of=\(image)", "bs=64K", "seek=16", "count=32", "conv=notrunc", "status=none"])
        let fw = try F.sfdiskPartition(image, number: 1)
        let root = try F.sfdiskPartition(image, number: 2)
        let (map, pass) = try ImageMapper.map(imageAt: image)
        expectWellFormed(map)
        #expect(pass.passes == 0, "a raw image is read in place")
        #expect(map.imageBytes == UInt64(try FileManager.default.attributesOfItem(atPath: image)[.size] as! Int))
        let fraction = map.mappedFraction
        print("NixOS-like image (\(gpt ? "GPT" : "MBR")): \(map.mappedBytes) of \(map.imageBytes) bytes mapped (\(String(format: "%.1f", fraction * 100)) %)")
        for region in map.regions { print("  \(region.range): \(region.summary) \(region.mappedInFullBecause ?? "")") }
        #expect(fraction < 0.75, "a NixOS-like image with free space maps notably less than all of it")
        #expect(map.isMapped(0..<(8 << 20)), "the table and the whole gap are mapped")
        #expect(map.regions.contains { $0.summary.contains("ext,") && $0.mappedInFullBecause == nil })
        #expect(map.regions.contains { $0.summary.contains("FAT16") && $0.mappedInFullBecause == nil })
        try prove(image, map: map, ext: [root.offset..<root.offset + root.size], fat: [fw.offset..<fw.offset + fw.size],
                  identical: [0..<(8 << 20)], in: directory)
    }

    @Test("MBR: ext4 with metadata_csum and flex_bg, ext4 with uninit_bg (no metadata_csum), FAT16, FAT32, a boot loader in the gap")
    func mbrVariants() throws {
        try #require(F.isRoot, "needs root for loop devices and mounts")
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let built = try M.build(in: directory, gpt: false, partitions: [
            .init(content: .fat(bits: 16), mib: 24, type: "e"),
            .init(content: .ext4(options: ["-O", "metadata_csum,flex_bg"], blockSize: 4096), mib: 64, type: "83"),
            .init(content: .ext4(options: ["-O", "^metadata_csum,uninit_bg", "-G", "4", "-g", "2048"], blockSize: 1024), mib: 48, type: "83"),
            .init(content: .fat(bits: 32), mib: 40, type: "c"),
        ])
        let (map, _) = try ImageMapper.map(imageAt: built.path)
        expectWellFormed(map)
        for region in map.regions { print("  \(region.range): \(region.summary) \(region.mappedInFullBecause ?? "")") }
        let dump = try F.must(["dumpe2fs", "\(built.path)?offset=\(built.partitions[2].lowerBound)"])
        #expect(dump.contains("BLOCK_UNINIT"), "the uninit_bg filesystem has BLOCK_UNINIT groups to handle")
        #expect(!dump.contains("metadata_csum"))
        #expect(map.mappedFraction < 0.8)
        #expect(map.regions.filter { $0.mappedInFullBecause == nil && $0.summary.hasPrefix("partition ") && !$0.summary.contains("table") }.count == 4)
        try prove(built.path, map: map, ext: [built.partitions[1], built.partitions[2]],
                  fat: [built.partitions[0], built.partitions[3]], identical: [0..<built.partitions[0].lowerBound], in: directory)
    }

    @Test("GPT: ext4 and FAT32 mapped by their bitmaps and FATs; an unknown-type partition holding an ext4 and one of random bytes mapped in full; the backup GPT mapped")
    func gpt() throws {
        try #require(F.isRoot, "needs root for loop devices and mounts")
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let built = try M.build(in: directory, gpt: true, partitions: [
            .init(content: .fat(bits: 32), mib: 40, type: Self.basicDataGPT),
            .init(content: .ext4(options: [], blockSize: 4096), mib: 64, type: Self.linuxGPT),
            .init(content: .ext4Unknown, mib: 16, type: "A19D880F-05FC-4D3B-A006-743F0F84911E"),
            .init(content: .random, mib: 8, type: "21686148-6449-6E6F-744E-656564454649"),
        ])
        let (map, _) = try ImageMapper.map(imageAt: built.path)
        expectWellFormed(map)
        for region in map.regions { print("  \(region.range): \(region.summary) \(region.mappedInFullBecause ?? "")") }
        #expect(map.isMapped(built.partitions[2]), "an ext4 in a partition of unknown type is mapped in full")
        #expect(map.isMapped(built.partitions[3]))
        let size = map.imageBytes
        #expect(map.isMapped(size - 33 * 512..<size), "the backup GPT is mapped")
        #expect(map.mappedFraction < 0.8)
        try prove(built.path, map: map, ext: [built.partitions[1]], fat: [built.partitions[0]],
                  identical: [0..<built.partitions[0].lowerBound, built.partitions[2], built.partitions[3],
                              built.partitions[3].upperBound..<size], in: directory)
        // The disk as the kernel reads it: sfdisk still sees the same table on the scrambled copy.
        let copy = directory + "/again.img"
        try M.scrambledCopy(of: built.path, outside: map, to: copy)
        #expect(try F.must(["sfdisk", "-d", copy]) == F.must(["sfdisk", "-d", built.path]).replacingOccurrences(of: built.path, with: copy))
    }

    @Test("the checks bite: a map missing used ext blocks, or used FAT clusters, fails e2fsck / the file comparison")
    func checksBite() throws {
        try #require(F.isRoot, "needs root for loop devices and mounts")
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory, extraMiB: 24)
        let fw = try F.sfdiskPartition(image, number: 1)
        let root = try F.sfdiskPartition(image, number: 2)
        let (map, _) = try ImageMapper.map(imageAt: image)
        let copy = directory + "/bad.img"
        // Leave out the root's last used run (file data or metadata) and the FAT's last used cluster run.
        let rootRange = root.offset..<root.offset + root.size
        // The 4 KiB holding the first data block of a file (debugfs bmap; the root has 1 KiB blocks).
        let block = try #require(UInt64(try F.debugfs(image, offset: root.offset, "bmap /nix-path-registration 0", write: false)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        let at = (root.offset + block * 1024) / 4096 * 4096
        let lastRootRun = at..<at + 4096
        #expect(map.isMapped(lastRootRun))
        let fwRange = fw.offset..<fw.offset + fw.size
        // The FAT's used clusters follow its reserved area in one mapped run: cut that run's last 16 KiB (file data).
        let lastFATRun = try #require(map.ranges.last { $0.overlaps(fwRange) })
        #expect(lastFATRun.upperBound < fwRange.upperBound && lastFATRun.upperBound > fw.offset + 16384)
        let fewer = ByteRanges(map.ranges).subtracting(
            ByteRanges([lastRootRun, lastFATRun.upperBound - 16384..<lastFATRun.upperBound])).ranges
        try M.scrambledCopy(of: image, outside: fewer, imageBytes: map.imageBytes, to: copy)
        let check = try F.e2fsck(copy, offset: root.offset)
        let diff: F.Output = try M.withMountedExt4(image, rootRange) { a in
            let b = try? M.withMountedExt4(copy, rootRange) { b in try F.run(["diff", "-r", "--no-dereference", a, b]) }
            return b ?? F.Output(status: 99, stdout: "", stderr: "the copy does not mount")
        }
        #expect(check.status != 0 || diff.status != 0, "leaving out used ext blocks is noticed")
        let out = try F.temporaryDirectory()
        defer { F.remove(out) }
        var copied: [F.Output] = []
        for (name, file) in [("a", image), ("b", copy)] {
            try FileManager.default.createDirectory(atPath: out + "/" + name, withIntermediateDirectories: true)
            copied.append(try F.run(["mcopy", "-s", "-n", "-i", "\(file)@@\(fw.offset)", "::/*", out + "/" + name + "/"],
                                    environment: ["MTOOLS_SKIP_CHECK": "1"]))
        }
        let fatDiff = try F.run(["diff", "-r", out + "/a", out + "/b"])
        #expect(copied[1].status != 0 || fatDiff.status != 0, "leaving out used FAT clusters is noticed")
    }

    @Test("nearly full filesystems map nearly everything")
    func nearlyFull() throws {
        try #require(F.isRoot, "needs root for loop devices and mounts")
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let built = try M.build(in: directory, gpt: false, partitions: [
            .init(content: .fat(bits: 16), mib: 20, type: "c", fill: 0.93),
            .init(content: .ext4(options: ["-m", "0", "-N", "256", "-J", "size=1"], blockSize: 1024), mib: 40, type: "83", fill: 0.93),
        ])
        let (map, _) = try ImageMapper.map(imageAt: built.path)
        print("nearly full: \(map.mappedBytes) of \(map.imageBytes) (\(String(format: "%.1f", map.mappedFraction * 100)) %)")
        #expect(map.mappedFraction > 0.93)
        try prove(built.path, map: map, ext: [built.partitions[1]], fat: [built.partitions[0]], identical: [], in: directory)
    }

    @Test("a compressed image (zstd, xz, gzip) gives the same map as the raw one; zstd and xz stop once the metadata has passed")
    func compressed() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory, extraMiB: 24)
        let raw = try ImageMapper.map(imageAt: image).map
        for (tool, suffix) in [("zstd", "zst"), ("xz", "xz"), ("gzip", "gz")] {
            try F.must([tool, "-k", "-q", "-f", image])
            var reported: [UInt64] = []
            let (map, pass) = try ImageMapper.map(imageAt: image + "." + suffix) { streamed, _ in reported.append(streamed) }
            #expect(map == raw, "\(tool): the same map as the raw image")
            #expect(reported.last == pass.streamedBytes && reported == reported.sorted(), "\(tool): progress up to what was streamed")
            #expect(pass.passes == 1)
            #expect(pass.retainedBytes < 4 << 20, "\(tool): only metadata kept (\(pass.retainedBytes) bytes)")
            if tool == "gzip" {
                #expect(pass.streamedBytes == raw.imageBytes, "gzip does not say its size: the pass reads to the end")
            } else {
                #expect(pass.streamedBytes < raw.imageBytes, "\(tool): the pass stopped at \(pass.streamedBytes)")
            }
            F.remove(image + "." + suffix)
        }
    }

    @Test("meta_bg: descriptors after the bitmaps they point to cost a second pass over a compressed image, and the map is the raw one")
    func metaBG() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = directory + "/metabg.img"
        try F.must(["truncate", "-s", "202M", image])
        try F.must(["sfdisk", "-q", image], input: Array("label: dos\nstart=1MiB, type=83\n".utf8))
        let p = try F.sfdiskPartition(image, number: 1)
        let fs = directory + "/fs.img"
        try F.must(["truncate", "-s", String(p.size), fs])
        let content = directory + "/content"
        try M.tree(at: content, bytes: 6 << 20)
        try F.must(["mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "meta_bg,^resize_inode", "-d", content, fs])
        try F.must(["dd", "if=\(fs)", "of=\(image)", "bs=1M", "seek=1", "conv=notrunc", "status=none"])
        F.remove(fs)
        #expect(try F.must(["dumpe2fs", "-h", "\(image)?offset=\(p.offset)"]).contains("meta_bg"))
        let raw = try ImageMapper.map(imageAt: image).map
        #expect(raw.mappedFraction < 0.5)
        try F.must(["zstd", "-q", "-k", image])
        let (map, pass) = try ImageMapper.map(imageAt: image + ".zst")
        #expect(map == raw)
        #expect(pass.passes == 2, "the bitmaps had passed before the last descriptors said where they are")
        if F.isRoot {
            try prove(image, map: map, ext: [p.offset..<p.offset + p.size], fat: [], identical: [0..<p.offset], in: directory)
        }
    }

    @Test("doubts map in full: no partition table, a filesystem not cleanly unmounted or with a journal to replay, a broken FAT boot sector, a cut-off image")
    func doubts() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let bare = directory + "/bare.img"
        try F.must(["truncate", "-s", "16M", bare])
        try F.must(["mkfs.ext4", "-q", "-F", bare])
        let bareMap = try ImageMapper.map(imageAt: bare).map
        #expect(bareMap.mappedBytes == bareMap.imageBytes, "no partition table: everything mapped")

        let image = try F.makeImage(in: directory, extraMiB: 24)
        let root = try F.sfdiskPartition(image, number: 2)
        let fw = try F.sfdiskPartition(image, number: 1)
        let before = try ImageMapper.map(imageAt: image).map
        #expect(!before.isMapped(root.offset..<root.offset + root.size))
        _ = try F.debugfs(image, offset: root.offset, "ssv state 0")
        let unclean = try ImageMapper.map(imageAt: image).map
        #expect(unclean.isMapped(root.offset..<root.offset + root.size), "a root not cleanly unmounted is mapped in full")
        #expect(unclean.regions.contains { $0.mappedInFullBecause?.contains("not cleanly unmounted") == true })
        #expect(!unclean.isMapped(fw.offset..<fw.offset + fw.size), "the FAT still has free space left out")
        _ = try F.debugfs(image, offset: root.offset, "ssv state 1")
        #expect(!(try ImageMapper.map(imageAt: image).map.isMapped(root.offset..<root.offset + root.size)))
        _ = try F.debugfs(image, offset: root.offset, "feature needs_recovery")
        let replay = try ImageMapper.map(imageAt: image).map
        #expect(replay.isMapped(root.offset..<root.offset + root.size), "a journal to replay: the root is mapped in full")
        #expect(replay.regions.contains { $0.mappedInFullBecause?.contains("journal needs recovery") == true })
        _ = try F.debugfs(image, offset: root.offset, "feature ^needs_recovery")

        // Sectors per cluster 3 is no FAT.
        try F.must(["dd", "if=/dev/zero", "of=\(image)", "bs=1", "seek=\(fw.offset + 13)", "count=1", "conv=notrunc", "status=none"])
        let brokenFAT = try ImageMapper.map(imageAt: image).map
        #expect(brokenFAT.isMapped(fw.offset..<fw.offset + fw.size))

        // The image cut inside the root: its filesystem is larger than what is left of its partition.
        try F.must(["truncate", "-s", String(root.offset + root.size / 2), image])
        let cut = try ImageMapper.map(imageAt: image).map
        #expect(cut.isMapped(root.offset..<cut.imageBytes), "a filesystem larger than its (cut) partition is mapped in full")
    }

    @Test("an extended partition with a logical ext4 is mapped in full; overlapping partitions are mapped in full")
    func extendedAndOverlap() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = directory + "/ext.img"
        try F.must(["truncate", "-s", "40M", image])
        try F.must(["sfdisk", "-q", image], input: Array("label: dos\nstart=1MiB, size=16MiB, type=83\nstart=18MiB, type=5\nstart=19MiB, type=83\n".utf8))
        let first = try F.sfdiskPartition(image, number: 1)
        let logical = try F.sfdiskPartition(image, number: 3)  // the third entry sfdisk lists: the logical partition 5
        for p in [first, logical] {
            let fs = directory + "/fs.img"
            try F.must(["truncate", "-s", String(p.size), fs])
            try F.must(["mkfs.ext4", "-q", "-F", fs])
            try F.must(["dd", "if=\(fs)", "of=\(image)", "bs=1M", "seek=\(p.offset >> 20)", "conv=notrunc", "status=none"])
            F.remove(fs)
        }
        let map = try ImageMapper.map(imageAt: image).map
        #expect(!map.isMapped(first.offset..<first.offset + first.size), "the primary ext4's free space is left out")
        #expect(map.isMapped(18 << 20..<map.imageBytes), "the extended partition and its logical ext4 are mapped in full")
        #expect(map.regions.contains { $0.mappedInFullBecause?.contains("extended") == true })

        // Partition 1 made to reach into the extended one (its sector count patched in the MBR).
        let count = UInt32((30 << 20 - first.offset) / 512)
        let patch = directory + "/count"
        try Data(withUnsafeBytes(of: count.littleEndian) { Array($0) }).write(to: URL(fileURLWithPath: patch))
        try F.must(["dd", "if=\(patch)", "of=\(image)", "bs=1", "seek=458", "conv=notrunc", "status=none"])
        let overlapping = try ImageMapper.map(imageAt: image).map
        #expect(overlapping.mappedBytes == overlapping.imageBytes, "overlapping partitions: nothing left out")
        #expect(overlapping.regions.contains { $0.mappedInFullBecause?.contains("overlaps") == true })
    }

    @Test("ranges(alignedTo:) rounds outward, merges, and never passes the image's end")
    func alignment() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory, extraMiB: 24)
        let (map, _) = try ImageMapper.map(imageAt: image)
        for unit: UInt64 in [4096, 65536, 1 << 20, 4 << 20] {
            let aligned = map.ranges(alignedTo: unit)
            for range in aligned {
                #expect(range.lowerBound % unit == 0)
                #expect(range.upperBound % unit == 0 || range.upperBound == map.imageBytes)
            }
            for (a, b) in zip(aligned, aligned.dropFirst()) { #expect(a.upperBound < b.lowerBound) }
            for range in map.ranges { #expect(aligned.contains { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound }) }
        }
        #expect(map.ranges(alignedTo: 1 << 20).reduce(0) { $0 + $1.count } >= Int(map.mappedBytes))
    }

    @Test("ByteRanges: union, subtraction, containment, rounding")
    func byteRanges() {
        let a = ByteRanges([10..<20, 0..<5, 18..<30, 5..<6])
        #expect(a.ranges == [0..<6, 10..<30])
        #expect(a.count == 26)
        #expect(a.subtracting(ByteRanges([2..<3, 12..<40])).ranges == [0..<2, 3..<6, 10..<12])
        #expect(a.contains(11..<29) && !a.contains(5..<11) && a.contains(0..<0))
        #expect(a.roundedOutward(to: 8, limit: 27).ranges == [0..<27])
        #expect(ByteRanges([9..<10]).roundedOutward(to: 8, limit: 100).ranges == [8..<16])
        #expect(ImageMap.full(imageBytes: 5000, because: "test").ranges(alignedTo: 4096) == [0..<5000])
    }
}
