import Glibc
import PiflashPlatform
import Synchronization

/// What a read-back found: the digest of what the medium holds, and how long it took.
public struct VerifyOutcome: Sendable {
    public var sha256: [UInt8]
    public var bytes: UInt64
    public var seconds: Double
}

/// Reads a target back with `O_DIRECT` (never the page cache) after the write was flushed and
/// the caches dropped, and proves it holds what the write put there: the bytes of its plan (every
/// byte, or the mapped ranges), digested the same way as they were written — a CRC-32 per chunk to
/// name the first bad chunk at once, and SHA-256 over everything (a full plan) or per range (a
/// sparse one). Reading and digesting are stages of the same ring as the writer's.
public struct ReadBackVerifier: Sendable {
    public var depth: Int

    public init(depth: Int = 4) {
        self.depth = depth
    }

    /// Verifies a target against what ``DirectWriter`` wrote, except its head: that is still held
    /// in memory (``WriteOutcome/head``) and stands in for the target's first MiB here;
    /// ``DirectWriter/commitHead(_:to:)`` reads it back after writing it.
    ///
    /// - Parameters:
    ///   - target: the device or file, open for reading (ideally `O_DIRECT`).
    ///   - written: the outcome of the write: length, plan and digests.
    ///   - image: the source, re-read only to pinpoint the first differing byte after a mismatch.
    /// - Throws: exit 4 naming the first bad offset when the medium differs; exit 1 for read errors.
    public func verify(
        _ target: borrowing DeviceFile, against written: WriteOutcome, image: ImageSource, reporter: Reporter
    ) throws -> VerifyOutcome {
        try target.dropCaches()
        let path = target.path
        let fd = target.descriptor
        let sector = target.logicalSectorSize()
        let chunkSize = written.chunkSize
        let length = written.bytes
        let plan = written.plan
        let head = written.head
        let started = monotonicSeconds()
        let total = written.writtenBytes
        reporter.begin("verify", total: total)

        let ring = RingPipeline(bufferSize: chunkSize, depth: depth)
        // Read the planned parts of each chunk; the held head stands in for the first MiB.
        ring.stage { port in
            var cursor = plan.cursor()
            var offset: UInt64 = 0
            while offset < length {
                let span = offset..<min(length, offset + UInt64(chunkSize))
                let parts = cursor.parts(of: span)
                defer { offset = span.upperBound }
                if let parts, parts.isEmpty { continue }
                guard var chunk = port.next() else { return }
                let buffer = port.ring.buffer(chunk)
                for part in parts ?? [span] {
                    var from = part.lowerBound
                    if from < UInt64(head.count) {
                        let upTo = min(part.upperBound, UInt64(head.count))
                        head.withUnsafeBytes { held in
                            (buffer.baseAddress! + Int(from - span.lowerBound)).copyMemory(
                                from: held.baseAddress! + Int(from), byteCount: Int(upTo - from))
                        }
                        from = upTo
                    }
                    guard from < part.upperBound else { continue }
                    let want = Int(part.upperBound - from)
                    let padded = (want + sector - 1) / sector * sector
                    let at = Int(from - span.lowerBound)
                    let room = min(padded, buffer.count - at)
                    let got = try DeviceFile.read(
                        fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[at..<(at + room)]), at: from, path: path)
                    if got < want {
                        throw PiflashError.failure(
                            "the target ended at byte \(from + UInt64(got)) while reading back \(length) bytes (was the card removed?)",
                            path: path, offset: from + UInt64(got))
                    }
                }
                chunk.index = Int(span.lowerBound / UInt64(chunkSize))
                chunk.offset = span.lowerBound
                chunk.length = span.count
                chunk.used = span.count
                chunk.ranges = parts
                guard port.pass(chunk) else { return }
            }
        }

        // Digest, on this thread, chunk by chunk against the write's.
        var digester = PlanDigester(plan: plan, hashFullPlan: true)
        var done: UInt64 = 0
        var mismatch: RingChunkMismatch?
        try ring.finish { port in
            while let chunk = port.next() {
                try Interrupts.check("reading back \(path) at byte \(chunk.offset)")
                let parts = chunk.parts.map { ($0, port.ring.bytes(chunk, in: $0)) }
                var crc: UInt32 = 0
                for part in parts { crc = crc32(crc, part.1) }
                if crc != written.digests.chunkCRCs[chunk.index] {
                    mismatch = RingChunkMismatch(index: chunk.index, parts: parts.map { ($0.0, Array($0.1)) })
                    port.pass(chunk)
                    return
                }
                digester.add(index: chunk.index, parts: parts)
                done += chunk.parts.reduce(0) { $0 + UInt64($1.count) }
                reporter.progress("verify", done: done, total: total)
                port.pass(chunk)
            }
        }
        if let mismatch {
            let offset = try Self.firstDifference(image: image, mismatch: mismatch, chunkSize: chunkSize)
            throw Self.mismatchError(path: path, offset: offset)
        }
        let read = digester.finalize()
        let expected = plan.isSparse ? written.digests.rangeSHA256 : [written.sha256]
        if read.rangeSHA256 != expected {
            // Every chunk's CRC matched but a digest did not: compare byte for byte to find where.
            let comparison = try ImageComparer(depth: depth).compare(
                image, with: target, plan: plan, reporter: SilentReporter())
            throw Self.mismatchError(path: path, offset: comparison.firstDifference ?? 0)
        }
        let seconds = monotonicSeconds() - started
        reporter.end("verify", bytes: done, seconds: seconds)
        return VerifyOutcome(sha256: plan.isSparse ? [] : read.rangeSHA256[0], bytes: done, seconds: seconds)
    }

    static func mismatchError(path: String, offset: UInt64) -> PiflashError {
        PiflashError.verification(
            "read-back mismatch: the card does not hold what was written, first bad byte at offset \(offset) (0x\(String(offset, radix: 16))); "
                + "the card may be failing or counterfeit", path: path, offset: offset)
    }

    /// Decompresses the image up to the mismatching chunk and returns the offset of the first byte
    /// of its planned parts where what was read differs from the image.
    static func firstDifference(image: ImageSource, mismatch: RingChunkMismatch, chunkSize: Int) throws -> UInt64 {
        let reader = try image.open()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        var n = 0
        for _ in 0...mismatch.index { n = try reader.read(into: buffer) }
        let base = UInt64(mismatch.index) * UInt64(chunkSize)
        for (range, read) in mismatch.parts {
            let from = Int(range.lowerBound - base)
            for i in 0..<read.count where from + i >= n || buffer[from + i] != read[i] {
                return range.lowerBound + UInt64(i)
            }
        }
        return mismatch.parts.first?.range.lowerBound ?? base
    }
}

/// A chunk whose read-back CRC did not match: its index and the parts read (copied out of the ring).
struct RingChunkMismatch {
    var index: Int
    var parts: [(range: Range<UInt64>, bytes: [UInt8])]
}

/// Compares a device with an image: the image decompressed on one stage of the ring, the
/// device read with `O_DIRECT` on another, compared on the calling thread — every byte, or only
/// the ranges of a sparse ``WritePlan``. For `piflash verify`, where no write outcome exists.
public struct ImageComparer: Sendable {
    public var depth: Int
    public var chunkSize: Int

    public init(depth: Int = 4, chunkSize: Int = 4 << 20) {
        self.depth = depth
        self.chunkSize = chunkSize
    }

    /// The result of a comparison.
    public struct Comparison: Sendable {
        /// SHA-256 of the uncompressed image.
        public var imageSHA256: [UInt8]
        /// The image's length.
        public var bytes: UInt64
        /// The bytes compared (the plan's).
        public var comparedBytes: UInt64
        /// The first offset where the device differs, or nil when it holds the image.
        public var firstDifference: UInt64?
        public var seconds: Double
    }

    /// Compares `target` with `image` over the image's length (or the plan's ranges).
    /// - Throws: read errors (exit 1), a corrupt image (exit 2), a device shorter than the image (exit 4).
    public func compare(
        _ image: ImageSource, with target: borrowing DeviceFile, plan: WritePlan = .full(because: "default"),
        reporter: Reporter
    ) throws -> Comparison {
        var firstDifference: UInt64?
        let streamed = try ImageAndCardStream(depth: depth, chunkSize: chunkSize)
            .run(image, target: target, plan: plan, reporter: reporter) { range, imageBytes, card in
                if card.count < imageBytes.count {
                    firstDifference = range.lowerBound + UInt64(card.count)
                    return false
                }
                if memcmp(card.baseAddress!, imageBytes.baseAddress!, imageBytes.count) != 0 {
                    for i in 0..<imageBytes.count where card[i] != imageBytes[i] {
                        firstDifference = range.lowerBound + UInt64(i)
                        break
                    }
                    return false
                }
                return true
            }
        return Comparison(imageSHA256: streamed.sha256, bytes: streamed.bytes, comparedBytes: streamed.compared,
                          firstDifference: firstDifference, seconds: streamed.seconds)
    }
}

/// An image decompressed and hashed on one stage of the ring, the same bytes of a card read with
/// `O_DIRECT` (after dropping its caches) on the next — each chunk's buffer holds both halves —
/// and compared on the calling thread: what `verify IMAGE` and `verify --host` compare.
struct ImageAndCardStream {
    var depth: Int
    var chunkSize: Int

    /// Streams the whole image; hands each planned part of each chunk and the card's bytes there
    /// (shorter when the card ended early) to `compare`, until it returns false — the image is
    /// still read to its end for its digest.
    ///
    /// - Returns: the image's SHA-256 and length, the bytes compared, and the seconds taken.
    /// - Throws: read errors (exit 1), a corrupt image (exit 2), a card smaller than the image
    ///   (exit 4), what `compare` throws, an interrupt.
    func run(
        _ image: ImageSource, target: borrowing DeviceFile, plan: WritePlan, reporter: Reporter,
        compare: (_ range: Range<UInt64>, _ image: UnsafeRawBufferPointer, _ card: UnsafeRawBufferPointer) throws -> Bool
    ) throws -> (sha256: [UInt8], bytes: UInt64, compared: UInt64, seconds: Double) {
        try target.dropCaches()
        let started = monotonicSeconds()
        let source = try image.open()
        let path = target.path
        let fd = target.descriptor
        let sector = target.logicalSectorSize()
        let deviceSize = try target.size()
        let total = plan.plannedBytes ?? image.uncompressedSize
        let chunkSize = self.chunkSize
        reporter.begin("verify", total: total)
        let ring = RingPipeline(bufferSize: 2 * chunkSize, depth: depth)
        let digest = Locked<[UInt8]>([])
        let stopComparing = SharedFlag()

        // Decompress into the first half of each buffer; hash everything.
        ring.stage { port in
            var hasher = StreamHasher()
            var offset: UInt64 = 0
            var cursor = plan.cursor()
            while var chunk = port.next() {
                let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: port.ring.buffer(chunk)[0..<chunkSize]))
                if n == 0 {
                    port.giveBack(chunk)
                    break
                }
                chunk.offset = offset
                chunk.length = n
                chunk.ranges = cursor.parts(of: chunk.span)
                hasher.update(port.ring.bytes(chunk))
                offset += UInt64(n)
                guard port.pass(chunk) else { return }
            }
            let sha = hasher.finalize()
            digest.withLock { $0 = sha }
        }
        // Read the card's bytes at the same offsets into the second half, while there is a point.
        ring.stage { port in
            while var chunk = port.next() {
                if !stopComparing.isSet {
                    if chunk.offset + UInt64(chunk.length) > deviceSize {
                        throw PiflashError.verification(
                            "the device (\(deviceSize) bytes) is smaller than the image: it ends at byte \(deviceSize)",
                            path: path, offset: deviceSize)
                    }
                    let buffer = port.ring.buffer(chunk)
                    for part in chunk.parts {
                        let at = chunkSize + Int(part.lowerBound - chunk.offset)
                        let want = part.count
                        let padded = min((want + sector - 1) / sector * sector, buffer.count - at)
                        let got = try DeviceFile.read(
                            fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[at..<(at + padded)]), at: part.lowerBound,
                            path: path)
                        if got < want {
                            throw PiflashError.failure(
                                "the device ended at byte \(part.lowerBound + UInt64(got)) while being read (was the card removed?)",
                                path: path, offset: part.lowerBound + UInt64(got))
                        }
                    }
                }
                guard port.pass(chunk) else { return }
            }
        }
        var compared: UInt64 = 0
        var streamedBytes: UInt64 = 0
        try ring.finish { port in
            while let chunk = port.next() {
                try Interrupts.check("verifying \(path) at byte \(chunk.offset)")
                streamedBytes = chunk.offset + UInt64(chunk.length)
                if !stopComparing.isSet {
                    for part in chunk.parts {
                        let imageBytes = port.ring.bytes(chunk, in: part)
                        let at = chunkSize + Int(part.lowerBound - chunk.offset)
                        let card = UnsafeRawBufferPointer(
                            rebasing: UnsafeRawBufferPointer(port.ring.buffer(chunk))[at..<(at + part.count)])
                        compared += UInt64(part.count)
                        if try !compare(part, imageBytes, card) {
                            stopComparing.set()
                            break
                        }
                    }
                }
                reporter.progress("verify", done: compared, total: total)
                port.pass(chunk)
            }
        }
        let seconds = monotonicSeconds() - started
        reporter.end("verify", bytes: compared, seconds: seconds)
        return (digest.withLock { $0 }, streamedBytes, compared, seconds)
    }
}

/// A flag one stage sets and others read.
final class SharedFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
