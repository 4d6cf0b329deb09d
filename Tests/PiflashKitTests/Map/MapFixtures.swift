#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PiflashKit
import Testing

/// Images for the map tests, built with real tools (mkfs.ext4 -d, mkfs.vfat + mcopy, sfdisk, dd), and the
/// independent check: every byte outside the map replaced by random bytes, then e2fsck, fsck.fat, kernel
/// mounts, mtools and byte comparison on the copy.
enum MapFixtures {
    typealias F = InjectFixtures

    enum Content {
        /// ext4 made with `mkfs.ext4 -d` from a generated tree, with these extra mkfs options.
        case ext4(options: [String], blockSize: Int)
        /// `mkfs.vfat -F bits`, populated with mcopy.
        case fat(bits: Int)
        /// An ext4 inside a partition of a type the map does not understand.
        case ext4Unknown
        /// Random bytes.
        case random
    }

    struct PartitionSpec {
        var content: Content
        var mib: Int
        /// MBR type byte as hex (`83`, `c`, `da`) or GPT GUID.
        var type: String
        /// How full the filesystem's content makes it (0...1), roughly.
        var fill: Double = 0.3
    }

    struct Built {
        var path: String
        /// Partition byte ranges, read back with sfdisk -J.
        var partitions: [Range<UInt64>]
        /// Where the boot-loader blob went.
        var blob: Range<UInt64>
    }

    /// A generated tree of about `bytes` bytes: files of many sizes (random and text), subfolders, a symlink.
    static func tree(at root: String, bytes: Int) throws {
        try FileManager.default.createDirectory(atPath: root + "/sub/deeper", withIntermediateDirectories: true)
        var remaining = bytes
        var index = 0
        let random = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom"))
        defer { try? random.close() }
        while remaining > 0 {
            let size = min(remaining, [100, 3000, 70_000, 400_000, 1_500_000][index % 5])
            let folder = index % 3 == 0 ? "/sub" : index % 3 == 1 ? "/sub/deeper" : ""
            var bytes = [UInt8](repeating: 0, count: size)
            if index % 2 == 0 {
                bytes = [UInt8](try random.read(upToCount: size) ?? Data())
            } else {
                let line = Array("line of text number \(index) for the map test\n".utf8)
                for i in bytes.indices { bytes[i] = line[i % line.count] }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: root + folder + "/file-\(index).bin"))
            remaining -= size
            index += 1
        }
        try FileManager.default.createSymbolicLink(atPath: root + "/link", withDestinationPath: "sub/file-0.bin")
    }

    /// Builds a disk image: a 2 MiB gap holding a random boot-loader blob at 64 KiB..1 MiB (after the
    /// GPT entries), then the partitions back to back with 1 MiB gaps, then 1 MiB at the end (room for
    /// the backup GPT).
    static func build(in directory: String, gpt: Bool, partitions specs: [PartitionSpec]) throws -> Built {
        let image = directory + "/disk.img"
        var start = 2
        var lines: [String] = [gpt ? "label: gpt" : "label: dos"]
        var pieces: [(offsetMiB: Int, file: String)] = []
        for (index, spec) in specs.enumerated() {
            let file = directory + "/part\(index).img"
            try makeContent(spec, file: file, directory: directory + "/content\(index)")
            lines.append("start=\(start)MiB, size=\(spec.mib)MiB, type=\(spec.type)")
            pieces.append((start, file))
            start += spec.mib + 1
        }
        let total = UInt64(start + 1) << 20
        F.remove(image)
        try F.must(["truncate", "-s", String(total), image])
        try F.must(["sfdisk", "-q", image], input: Array((lines.joined(separator: "\n") + "\n").utf8))
        for piece in pieces {
            try F.must(["dd", "if=\(piece.file)", "of=\(image)", "bs=1M", "seek=\(piece.offsetMiB)", "conv=notrunc", "status=none"])
        }
        // The boot loader other boards keep before the first partition (after the GPT's 16 KiB of entries).
        try F.must(["dd", "if=/dev/urandom", "of=\(image)", "bs=64K", "seek=1", "count=15", "conv=notrunc", "status=none"])
        var ranges: [Range<UInt64>] = []
        for number in 1...specs.count {
            let p = try F.sfdiskPartition(image, number: number)
            ranges.append(p.offset..<p.offset + p.size)
        }
        return Built(path: image, partitions: ranges, blob: 65536..<(1 << 20))
    }

    private static func makeContent(_ spec: PartitionSpec, file: String, directory: String) throws {
        F.remove(file)
        try F.must(["truncate", "-s", "\(spec.mib)M", file])
        let contentBytes = Int(Double(spec.mib << 20) * spec.fill)
        switch spec.content {
        case .ext4(let options, let blockSize):
            try tree(at: directory, bytes: contentBytes)
            try F.must(["mkfs.ext4", "-q", "-F", "-b", String(blockSize)] + options + ["-d", directory, file])
        case .ext4Unknown:
            try tree(at: directory, bytes: contentBytes)
            try F.must(["mkfs.ext4", "-q", "-F", "-d", directory, file])
        case .fat(let bits):
            try tree(at: directory, bytes: contentBytes)
            try F.must(["mkfs.vfat", "-F", String(bits), "-n", "FIRMWARE", file])
            let entries = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0 != "link" }
            try F.must(["mcopy", "-s", "-i", file] + entries.map { directory + "/" + $0 } + ["::/"])
        case .random:
            try F.must(["dd", "if=/dev/urandom", "of=\(file)", "bs=1M", "count=\(spec.mib)", "conv=notrunc", "status=none"])
        }
    }

    /// A copy of `image` where every byte outside `map`'s ranges is random (as on a re-used card).
    static func scrambledCopy(of image: String, outside map: ImageMap, to copy: String) throws {
        try scrambledCopy(of: image, outside: map.ranges, imageBytes: map.imageBytes, to: copy)
    }

    /// A copy of `image` where every byte outside `ranges` is random.
    static func scrambledCopy(of image: String, outside ranges: [Range<UInt64>], imageBytes: UInt64, to copy: String) throws {
        F.remove(copy)
        try F.must(["cp", "--sparse=never", image, copy])
        let fd = open(copy, O_WRONLY)
        guard fd >= 0 else { throw F.FixtureError("open \(copy): \(errno)") }
        defer { close(fd) }
        var state = UInt64.random(in: 1...UInt64.max)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var cursor: UInt64 = 0
        for gap in ranges + [imageBytes..<imageBytes] {
            var at = cursor
            while at < gap.lowerBound {
                let n = Int(min(UInt64(buffer.count), gap.lowerBound - at))
                buffer.withUnsafeMutableBytes { raw in
                    let words = raw.bindMemory(to: UInt64.self)
                    for i in 0..<(n + 7) / 8 {
                        state ^= state << 13; state ^= state >> 7; state ^= state << 17
                        words[i] = state
                    }
                }
                let written = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress, n, off_t(at)) }
                guard written == n else { throw F.FixtureError("pwrite \(copy): \(errno)") }
                at += UInt64(n)
            }
            cursor = max(cursor, gap.upperBound)
        }
        fsync(fd)
    }

    /// Bytes of a file.
    static func bytes(_ path: String, _ range: Range<UInt64>) throws -> [UInt8] {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: range.lowerBound)
        return [UInt8](try handle.read(upToCount: range.count) ?? Data())
    }

    /// Mounts the ext4 at `range` of `image` read-only (offset loop device) at a new folder; runs `body`.
    static func withMountedExt4<T>(_ image: String, _ range: Range<UInt64>, _ body: (String) throws -> T) throws -> T {
        let device = try F.must(["losetup", "-r", "-f", "--show", "-o", String(range.lowerBound), "--sizelimit", String(range.count), image])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? F.run(["losetup", "-d", device]) }
        let mountPoint = try F.temporaryDirectory()
        defer { F.remove(mountPoint) }
        try F.must(["mount", "-t", "ext4", "-o", "ro,noload", device, mountPoint])
        defer { _ = try? F.run(["umount", mountPoint]) }
        return try body(mountPoint)
    }

    /// The independent checks of an ext partition of the scrambled copy against the original:
    /// `e2fsck -fn` on the copy, then every file of both kernel mounts compared with `diff -r --no-dereference`.
    static func expectExtIntact(original: String, copy: String, partition: Range<UInt64>, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let check = try F.e2fsck(copy, offset: partition.lowerBound)
        #expect(check.status == 0, "e2fsck -fn on the scrambled copy: \(check.stdout)\(check.stderr)", sourceLocation: sourceLocation)
        try withMountedExt4(original, partition) { a in
            try withMountedExt4(copy, partition) { b in
                let diff = try F.run(["diff", "-r", "--no-dereference", a, b])
                #expect(diff.status == 0, "files differ: \(diff.stdout.prefix(2000))\(diff.stderr.prefix(500))", sourceLocation: sourceLocation)
                let count = try F.must(["find", a, "-type", "f"]).split(separator: "\n").count
                #expect(count > 3, "the ext filesystem holds files to compare", sourceLocation: sourceLocation)
            }
        }
    }

    /// The independent checks of a FAT partition: `fsck.fat -n` on the copy's partition (offset loop
    /// device), and every file copied out with mtools (`mcopy -s`) from both compared with `diff -r`.
    static func expectFATIntact(original: String, copy: String, partition: Range<UInt64>, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let device = try F.must(["losetup", "-r", "-f", "--show", "-o", String(partition.lowerBound), "--sizelimit", String(partition.count), copy])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let fsck = try F.run(["fsck.fat", "-n", device])
        _ = try? F.run(["losetup", "-d", device])
        #expect(fsck.status == 0, "fsck.fat -n on the scrambled copy: \(fsck.stdout)\(fsck.stderr)", sourceLocation: sourceLocation)
        let out = try F.temporaryDirectory()
        defer { F.remove(out) }
        for (name, image) in [("a", original), ("b", copy)] {
            try FileManager.default.createDirectory(atPath: out + "/" + name, withIntermediateDirectories: true)
            try F.must(["mcopy", "-s", "-n", "-i", "\(image)@@\(partition.lowerBound)", "::/*", out + "/" + name + "/"],
                       environment: ["MTOOLS_SKIP_CHECK": "1"])
        }
        let diff = try F.run(["diff", "-r", out + "/a", out + "/b"])
        #expect(diff.status == 0, "FAT files differ: \(diff.stdout.prefix(2000))", sourceLocation: sourceLocation)
        let count = try F.must(["find", out + "/a", "-type", "f"]).split(separator: "\n").count
        #expect(count >= 2, "the FAT filesystem holds files to compare", sourceLocation: sourceLocation)
    }
}
