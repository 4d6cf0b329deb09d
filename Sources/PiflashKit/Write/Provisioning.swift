#if canImport(Glibc)
import Glibc
#endif
import PiflashPlatform

/// The card as the injection step borrows it from the flash job: the job's open descriptor, and
/// the head the job still holds back (the card has no partition table yet).
public struct InjectionTarget {
    /// The job's descriptor of the card or image file (`O_DIRECT`, exclusive on a card).
    public var descriptor: Int32
    /// The card or image file, for libext2fs, e2fsck and messages.
    public var path: String
    /// The image's first MiB: its partition table, which is not on the card yet.
    public var head: [UInt8]
    /// The image's length.
    public var imageBytes: UInt64
}

/// What the injection did: the files as read back, and every range of the card it wrote.
public struct InjectionOutcome: Sendable {
    /// The injected files as read back from a fresh open.
    public var files: [InjectedFile]
    /// Every range the injection wrote, in ascending order, with digests of the bytes the card now
    /// holds there (read back and compared with what was written).
    public var blocks: [InjectedBlock]
    /// The root filesystem the files went into.
    public var root: RootPartition?

    public init(files: [InjectedFile], blocks: [InjectedBlock], root: RootPartition? = nil) {
        self.files = files
        self.blocks = blocks
        self.root = root
    }
}

/// The host-provisioning step run after a verified write of the body: locate the root partition
/// from the image's own partition table, inject the bootstrap files, and verify them (SPEC steps 5–6).
public struct Injection: Sendable {
    public var run: @Sendable (_ target: InjectionTarget, _ reporter: Reporter) throws -> InjectionOutcome

    public init(run: @escaping @Sendable (_ target: InjectionTarget, _ reporter: Reporter) throws -> InjectionOutcome) {
        self.run = run
    }
}

/// The host's bootstrap files as the step after a verified write: find the root partition from the
/// held-back head, inject the files in place through the recording I/O manager, and read them back
/// from a fresh direct-I/O open with a read-only consistency check (SPEC steps 5–6). Every range the
/// injection wrote is read back from the card, compared with what was written, and recorded with
/// its digest — keyed with `digestKey` when the host has secrets.
extension Injection {
    /// - Parameters:
    ///   - files: the rendered files (secrets in memory only).
    ///   - root: how the root partition is found (`NIXOS_SD` by default).
    ///   - digestKey: the key for the injected blocks' digests (``HostFile/digestKey(secrets:)``),
    ///     nil when the host has no secrets.
    public static func bootstrap(_ files: [BootstrapFile], root: RootSelector, digestKey: DigestKey?) -> Injection {
        Injection { target, reporter in
            let partition = try target.head.withUnsafeBytes { head in
                try RootPartition.locate(
                    head: head, diskSize: target.imageBytes, fd: target.descriptor, path: target.path, selector: root)
            }
            reporter.note("root filesystem: \(partition)")
            let log = Ext2WriteLog()
            var started = monotonicSeconds()
            // libext2fs works on the job's own descriptor (a duplicate of it), out of O_DIRECT mode:
            // the card is never opened again by path.
            let verified = try DeviceFile.withBufferedIO(target.descriptor, path: target.path) {
                _ = try Ext4Patcher.inject(
                    files, into: partition, on: target.path, writeLog: log, descriptor: target.descriptor, reporter: reporter)
                reporter.begin("check-files", total: nil)
                started = monotonicSeconds()
                return try InjectionVerifier.verify(files, root: partition, on: target.path, descriptor: target.descriptor)
            }
            // Back in O_DIRECT mode: every written block is read from the medium itself.
            let blocks = try InjectedBlocks.readBack(
                log.ranges, root: partition, descriptor: target.descriptor, path: target.path, key: digestKey)
            reporter.end("check-files", bytes: UInt64(files.reduce(0) { $0 + $1.contentCount }), seconds: monotonicSeconds() - started)
            return InjectionOutcome(files: verified, blocks: blocks, root: partition)
        }
    }
}

/// Reading injected ranges back from the card.
public enum InjectedBlocks {
    /// Reads every range the injection wrote back from the card (the caches were just dropped by the
    /// injected-file check; reads are `O_DIRECT` on the job's descriptor), compares it with what was
    /// written, and returns them at their offsets on the card, cut into aligned 4 KiB units, each
    /// with its digest.
    ///
    /// - Throws: exit 4 naming the first byte that differs; exit 1 for read errors; exit 2 when a
    ///   write landed inside the first MiB (the held-back head would overwrite it).
    static func readBack(
        _ ranges: [(offset: UInt64, bytes: [UInt8])], root: RootPartition, descriptor: Int32, path: String, key: DigestKey?
    ) throws -> [InjectedBlock] {
        var blocks: [InjectedBlock] = []
        for range in ranges {
            let offset = root.offset + range.offset
            if offset < UInt64(DirectWriter.headSize) {
                throw PiflashError.usage(
                    "the root filesystem starts inside the card's first MiB (byte \(root.offset)), which is written last",
                    path: path, hint: "piflash needs the root partition to start at 1 MiB or later")
            }
            let onCard = try readRange(descriptor: descriptor, path: path, offset: offset, length: range.bytes.count)
            if onCard != range.bytes {
                let index = zip(onCard, range.bytes).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(onCard.count, range.bytes.count)
                let bad = offset + UInt64(index)
                throw PiflashError.verification(
                    "a block the injection wrote does not read back as written: first bad byte at offset \(bad) (0x\(String(bad, radix: 16))); "
                        + "the card may be failing or counterfeit", path: path, offset: bad)
            }
            // One record per 4 KiB unit of the card (aligned), so a later mismatch names a small block.
            var from = 0
            while from < range.bytes.count {
                let at = offset + UInt64(from)
                let to = min(range.bytes.count, from + Int(InjectedBlock.unit - at % InjectedBlock.unit))
                let bytes = range.bytes[from..<to]
                blocks.append(InjectedBlock(
                    offset: at, length: UInt64(to - from), digest: .of(bytes, key: key)))
                from = to
            }
        }
        return blocks
    }

    /// `length` bytes at `offset` of a descriptor that may be `O_DIRECT`: read through an aligned
    /// buffer covering whole 4 KiB units.
    static func readRange(descriptor: Int32, path: String, offset: UInt64, length: Int) throws -> [UInt8] {
        let unit: UInt64 = 4096
        let start = offset / unit * unit
        let end = (offset + UInt64(length) + unit - 1) / unit * unit
        let buffer = AlignedBuffer(count: Int(end - start))
        let got = try DeviceFile.read(descriptor, into: buffer.bytes, at: start, path: path)
        let from = Int(offset - start)
        guard got >= from + length else {
            throw PiflashError.failure(
                "the card ended at byte \(start + UInt64(got)) while reading back injected blocks (was it removed?)",
                path: path, offset: start + UInt64(got))
        }
        return Array(buffer.bytes[from..<(from + length)])
    }
}
