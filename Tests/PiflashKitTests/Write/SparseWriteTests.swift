#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PiflashKit
import PiflashPlatform
import Testing

/// Sparse writes (issue #12): the flash job writes and reads back only the image's mapped ranges,
/// onto loop-device cards prefilled with random bytes (so nothing may rely on the card holding
/// zeros), and the independent tools — e2fsck, fsck.fat, kernel mounts, mtools, sfdisk, cmp — find
/// the same filesystems as in the image.
@Suite("sparse writes: only the mapped ranges, onto cards full of random bytes", .serialized,
       .enabled(if: InjectFixtures.isRoot, "needs root: loop devices and kernel mounts"))
struct SparseWriteTests {
    typealias F = InjectFixtures
    typealias M = MapFixtures

    /// A loop device over a file of `bytes` random bytes; detached (only it) when done.
    final class RandomCard {
        let file: String
        let device: String

        init(in directory: String, bytes: UInt64) throws {
            file = directory + "/card-\(UInt32.random(in: 0...UInt32.max)).bin"
            try F.must(["dd", "if=/dev/urandom", "of=\(file)", "bs=1M", "count=\(bytes >> 20)", "status=none"])
            device = try F.must(["losetup", "-f", "--show", file]).trimmingCharacters(in: .whitespacesAndNewlines)
        }

        deinit {
            _ = try? F.run(["losetup", "-d", device])
            F.remove(file)
        }

        /// The card's bytes in `range`, read through the device with the caches dropped.
        func bytes(_ range: Range<UInt64>) throws -> [UInt8] {
            _ = try F.run(["blockdev", "--flushbufs", device])
            return try M.bytes(device, range)
        }
    }

    /// Flashes `image` onto a new random card with the real flash job (no injection) and checks it.
    ///
    /// - Parameter discard: whether the skipped ranges are discarded; a loop device punches holes
    ///   that read as zeros, so without discard the card keeps its random bytes there — the test that
    ///   nothing relies on the card holding zeros.
    func flash(_ image: String, in directory: String, full: Bool = false, discard: Bool = false) throws -> (RandomCard, FlashResult) {
        let source = try ImageSource(path: image)
        let size = try #require(source.uncompressedSize)
        let card = try RandomCard(in: directory, bytes: ((size + (8 << 20)) >> 20) << 20)
        var job = FlashJob(image: source, target: FlashTarget(kind: .device, path: card.device, eject: false))
        job.full = full
        job.discard = discard
        let result = job.run(reporter: SilentReporter())
        #expect(result.ok, "\(result.error ?? "")")
        return (card, result)
    }

    /// The checks every sparse card must pass: what was written equals the image byte for byte, and
    /// the filesystems are the image's to e2fsck, fsck.fat, the kernel and mtools.
    func expectSameFilesystems(
        image: String, card: RandomCard, result: FlashResult, ext: [Range<UInt64>], fat: [Range<UInt64>],
        identical: [Range<UInt64>], sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let size = UInt64(try FileManager.default.attributesOfItem(atPath: image)[.size] as! Int)
        #expect(result.imageBytes == size, sourceLocation: sourceLocation)
        let mapped = try #require(result.mappedBytes)
        #expect(mapped < size, "sparse: \(mapped) of \(size) bytes written", sourceLocation: sourceLocation)
        #expect(!result.writtenRanges.isEmpty, sourceLocation: sourceLocation)
        #expect(result.writtenRanges.reduce(0) { $0 + $1.length } == mapped, sourceLocation: sourceLocation)
        // Every written range holds the image's bytes, and its recorded digest is theirs.
        for range in result.writtenRanges {
            let wanted = try M.bytes(image, range.range)
            #expect(try card.bytes(range.range) == wanted, "range \(range.range)", sourceLocation: sourceLocation)
            #expect(sha256Hex(wanted) == range.sha256, sourceLocation: sourceLocation)
        }
        for range in identical {
            #expect(try card.bytes(range) == M.bytes(image, range), "\(range) is the image's", sourceLocation: sourceLocation)
        }
        // And the card still holds random bytes somewhere: the write really skipped the free space.
        let skipped = WritePlan(ranges: result.writtenRanges.map(\.range), imageBytes: size, fullBecause: nil).skippedRanges
        let sample = try #require(skipped.max { $0.count < $1.count }, sourceLocation: sourceLocation)
        let onCard = try card.bytes(sample.lowerBound..<min(sample.upperBound, sample.lowerBound + 65536))
        #expect(onCard != (try M.bytes(image, sample.lowerBound..<sample.lowerBound + UInt64(onCard.count))),
                "the free space was not written: the card still holds its random bytes there", sourceLocation: sourceLocation)
        #expect(try F.must(["sfdisk", "-d", card.file]).replacingOccurrences(of: card.file, with: image)
                == F.must(["sfdisk", "-d", image]), sourceLocation: sourceLocation)
        for partition in ext {
            try M.expectExtIntact(original: image, copy: card.file, partition: partition, sourceLocation: sourceLocation)
        }
        for partition in fat {
            try M.expectFATIntact(original: image, copy: card.file, partition: partition, sourceLocation: sourceLocation)
        }
    }

    @Test("NixOS-like images (MBR; GPT, zstd) with a boot loader in the gap: a sparse flash is the image to every tool",
          arguments: [false, true])
    func nixosLike(gpt: Bool) throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory, gpt: gpt, extraMiB: 24, largeBlocks: gpt)
        try F.must(["dd", "if=/dev/urandom", "of=\(image)", "bs=64K", "seek=16", "count=32", "conv=notrunc", "status=none"])
        let fw = try F.sfdiskPartition(image, number: 1)
        let root = try F.sfdiskPartition(image, number: 2)
        var source = image
        if gpt {
            // A compressed image: the map comes from a decompression pass, the length is checked.
            try F.must(["zstd", "-q", "-k", "-f", image, "-o", image + ".zst"])
            source = image + ".zst"
        }
        let (card, result) = try flash(source, in: directory)
        try expectSameFilesystems(
            image: image, card: card, result: result, ext: [root.offset..<root.offset + root.size],
            fat: [fw.offset..<fw.offset + fw.size], identical: [0..<(8 << 20)])

        // verify IMAGE compares what was written; a flipped byte in a written range is found, one in
        // the free space is not the image's business.
        let plan = WritePlan(ranges: result.writtenRanges.map(\.range), imageBytes: result.imageBytes, fullBecause: nil)
        func compare() throws -> UInt64? {
            let file = try DeviceFile(path: card.device, mode: .read, direct: true)
            return try ImageComparer().compare(try ImageSource(path: source), with: file, plan: plan, reporter: SilentReporter())
                .firstDifference
        }
        #expect(try compare() == nil)
        let written = try #require(result.writtenRanges.first { $0.offset >= root.offset })
        let flipAt = written.offset + written.length / 2
        let original = try card.bytes(flipAt..<flipAt + 1)[0]
        try F.must(["bash", "-c", "printf '\\x\(String(format: "%02x", original ^ 0xa5))' | dd of=\(card.device) bs=1 seek=\(flipAt) conv=notrunc,fsync status=none"])
        #expect(try compare() == flipAt, "a flipped byte in a written range is named")
    }

    @Test("ext4 with metadata_csum and flex_bg, ext4 with uninit_bg, FAT16, FAT32, a boot loader in the gap; and GPT")
    func variants() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let mbr = try M.build(in: directory, gpt: false, partitions: [
            .init(content: .fat(bits: 16), mib: 24, type: "e"),
            .init(content: .ext4(options: ["-O", "metadata_csum,flex_bg"], blockSize: 4096), mib: 64, type: "83"),
            .init(content: .ext4(options: ["-O", "^metadata_csum,uninit_bg", "-G", "4", "-g", "2048"], blockSize: 1024), mib: 48, type: "83"),
            .init(content: .fat(bits: 32), mib: 40, type: "c"),
        ])
        let (card, result) = try flash(mbr.path, in: directory)
        try expectSameFilesystems(
            image: mbr.path, card: card, result: result, ext: [mbr.partitions[1], mbr.partitions[2]],
            fat: [mbr.partitions[0], mbr.partitions[3]], identical: [0..<mbr.partitions[0].lowerBound])
    }

    @Test("where the card can discard, the skipped ranges are discarded (a loop device frees their blocks)")
    func discards() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory, extraMiB: 24)
        let (card, result) = try flash(image, in: directory, discard: true)
        let cardBytes = UInt64(try FileManager.default.attributesOfItem(atPath: card.file)[.size] as! Int)
        let allocated = UInt64(try F.must(["stat", "-c", "%b", card.file]).trimmingCharacters(in: .whitespacesAndNewlines))! * 512
        let size = try #require(result.imageBytes)
        let skipped = size - (try #require(result.mappedBytes))
        #expect(skipped > 8 << 20)
        #expect(allocated <= cardBytes - skipped + (1 << 20), "\(allocated) bytes still allocated of \(cardBytes); \(skipped) were skipped")
    }

    @Test("a multi-frame zstd image (as pzstd makes) is as long as all its frames: mapped and written whole")
    func multiFrameZstd() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory, extraMiB: 8)
        let size = UInt64(try FileManager.default.attributesOfItem(atPath: image)[.size] as! Int)
        // Two frames, each with its content size: the first half and the rest.
        try F.must(["bash", "-c", """
            cd '\(directory)' && head -c \(size / 2) '\(image)' > a && tail -c +\(size / 2 + 1) '\(image)' > b && \
            zstd -q -f a b && cat a.zst b.zst > two.zst && rm -f a b a.zst b.zst
            """])
        let reader = try ImageReader(path: directory + "/two.zst")
        #expect(reader.uncompressedSize == size, "every frame counts, not only the first")
        let (card, result) = try flash(directory + "/two.zst", in: directory)
        #expect(result.imageBytes == size)
        let root = try F.sfdiskPartition(image, number: 2)
        let check = try F.e2fsck(card.file, offset: root.offset)
        #expect(check.status == 0, "\(check.stdout)")
    }

    @Test("--full writes every byte: the card is the image, its free space overwritten")
    func full() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory, extraMiB: 8)
        let (card, result) = try flash(image, in: directory, full: true)
        let size = UInt64(try FileManager.default.attributesOfItem(atPath: image)[.size] as! Int)
        #expect(result.mappedBytes == size)
        #expect(result.writtenRanges.isEmpty, "a full write records no ranges: every byte was written")
        #expect(try F.run(["cmp", "-n", String(size), image, card.file]).status == 0)
    }

    @Test("a stream that is not as long as its map says fails before the head is written")
    func lengthChecked() throws {
        let directory = try F.temporaryDirectory()
        defer { F.remove(directory) }
        let image = try F.makeImage(in: directory)
        let map = try ImageMapper.map(imageAt: image).map
        let card = try RandomCard(in: directory, bytes: 128 << 20)
        let file = try DeviceFile(path: card.device, mode: .readWrite, direct: true, exclusive: true)
        // The map of a longer image than the one streamed.
        let longer = WritePlan(ranges: WritePlan(map: map).ranges, imageBytes: map.imageBytes + (1 << 20), fullBecause: nil)
        #expect(throws: PiflashError.self) {
            _ = try DirectWriter().write(from: try ImageReader(path: image), to: file, plan: longer, total: nil,
                                         reporter: SilentReporter())
        }
    }
}
