import Glibc
import PiflashPlatform

/// What a read-back found: the digest of what the medium holds, and how long it took.
public struct VerifyOutcome: Sendable {
    public var sha256: [UInt8]
    public var bytes: UInt64
    public var seconds: Double
}

/// Reads a target back with `O_DIRECT` (never the page cache) after the write was flushed and
/// the caches dropped, and proves it holds the image: SHA-256 over the image's length, and per-chunk
/// CRCs to name the first bad byte. Reading and hashing run on two threads.
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
    ///   - written: the outcome of the write: length, digest and per-chunk CRCs.
    ///   - image: the source, re-read only to pinpoint the first differing byte after a mismatch.
    /// - Throws: exit 4 naming the first bad offset when the medium differs; exit 1 for read errors.
    public func verify(
        _ target: borrowing DeviceFile, against written: WriteOutcome, image: ImageSource, reporter: Reporter
    ) throws -> VerifyOutcome {
        try target.dropCaches()
        let path = target.path
        let started = monotonicSeconds()
        reporter.begin("verify", total: written.bytes)
        var hasher = StreamHasher()
        var done: UInt64 = 0
        var mismatch: (index: Int, data: [UInt8])?
        try ChunkReader(depth: depth, chunkSize: written.chunkSize, sector: target.logicalSectorSize())
            .read(target.descriptor, path: path, length: written.bytes) { index, data in
                // The head is not on the target yet: the image's own head, held in memory, stands in for it.
                let held = index == 0 ? min(written.head.count, data.count) : 0
                var crc: UInt32 = 0
                if held > 0 {
                    written.head.withUnsafeBytes { head in
                        let part = UnsafeRawBufferPointer(rebasing: head[0..<held])
                        hasher.update(part)
                        crc = crc32(0, part)
                    }
                }
                let rest = UnsafeRawBufferPointer(rebasing: data[held...])
                hasher.update(rest)
                crc = crc32(crc, rest)
                if crc != written.chunkCRCs[index] {
                    mismatch = (index, Array(written.head.prefix(held)) + Array(rest))
                    return false
                }
                done += UInt64(data.count)
                reporter.progress("verify", done: done, total: written.bytes)
                return true
            }
        if let mismatch {
            let offset = try Self.firstDifference(image: image, chunkIndex: mismatch.index, chunkSize: written.chunkSize,
                                                  deviceChunk: mismatch.data)
            throw Self.mismatchError(path: path, offset: offset)
        }
        let sha = hasher.finalize()
        if sha != written.sha256 {
            // Every chunk's CRC matched but the digest did not: compare byte for byte to find where.
            let comparison = try ImageComparer(depth: depth).compare(image, with: target, reporter: SilentReporter())
            throw Self.mismatchError(path: path, offset: comparison.firstDifference ?? 0)
        }
        let seconds = monotonicSeconds() - started
        reporter.end("verify", bytes: written.bytes, seconds: seconds)
        return VerifyOutcome(sha256: sha, bytes: written.bytes, seconds: seconds)
    }

    static func mismatchError(path: String, offset: UInt64) -> PiflashError {
        PiflashError.verification(
            "read-back mismatch: the card does not hold what was written, first bad byte at offset \(offset) (0x\(String(offset, radix: 16))); "
                + "the card may be failing or counterfeit", path: path, offset: offset)
    }

    /// Decompresses the image up to chunk `chunkIndex` and returns the offset of the first byte
    /// where `deviceChunk` differs from it.
    static func firstDifference(image: ImageSource, chunkIndex: Int, chunkSize: Int, deviceChunk: [UInt8]) throws -> UInt64 {
        let reader = try image.open()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        var n = 0
        for _ in 0...chunkIndex { n = try reader.read(into: buffer) }
        let base = UInt64(chunkIndex) * UInt64(chunkSize)
        for i in 0..<min(n, deviceChunk.count) where buffer[i] != deviceChunk[i] { return base + UInt64(i) }
        return base + UInt64(min(n, deviceChunk.count))
    }
}

/// Reads a range of a device in chunks with `O_DIRECT` on a worker thread, handing each chunk to
/// a consumer on the calling thread through a bounded ring.
struct ChunkReader {
    var depth: Int
    var chunkSize: Int
    var sector: Int

    private struct Chunk {
        var buffer: AlignedBuffer
        var index: Int
    }

    /// - Parameter consume: gets each chunk's bytes (exactly the requested range); returns false to stop early.
    func read(_ fd: Int32, path: String, length: UInt64, consume: (Int, UnsafeRawBufferPointer) throws -> Bool) throws {
        let free = Channel<AlignedBuffer>(capacity: depth)
        let filled = Channel<Chunk>(capacity: depth)
        for _ in 0..<depth { free.send(AlignedBuffer(count: chunkSize)) }
        let failure = Locked<PiflashError?>(nil)
        let chunkSize = self.chunkSize
        let sector = self.sector
        let reader = WorkerThread {
            var index = 0
            var offset: UInt64 = 0
            do {
                while offset < length, let buffer = free.receive() {
                    let want = Int(min(UInt64(chunkSize), length - offset))
                    let padded = (want + sector - 1) / sector * sector
                    let got = try DeviceFile.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<padded]),
                                                  at: offset, path: path)
                    if got < want {
                        throw PiflashError.failure(
                            "the target ended at byte \(offset + UInt64(got)) while reading back \(length) bytes (was the card removed?)",
                            path: path, offset: offset + UInt64(got))
                    }
                    buffer.used = want
                    guard filled.send(Chunk(buffer: buffer, index: index)) else { return }
                    index += 1
                    offset += UInt64(want)
                }
                filled.close()
            } catch {
                failure.withLock { $0 = error as? PiflashError ?? PiflashError.failure("\(error)") }
                filled.close()
            }
        }
        defer { reader.join() }
        do {
            while let chunk = filled.receive() {
                try Interrupts.check("reading back \(path) at byte \(UInt64(chunk.index) * UInt64(chunkSize))")
                let keepGoing = try consume(chunk.index, chunk.buffer.filled)
                free.send(chunk.buffer)
                if !keepGoing { break }
            }
        } catch {
            free.close()
            filled.close()
            throw error
        }
        free.close()
        filled.close()
        if let error = failure.withLock({ $0 }) { throw error }
    }
}

/// Compares a device with an image byte for byte: the image decompressed on a worker thread, the
/// device read with `O_DIRECT` on another. For `piflash verify`, where no write outcome exists.
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
        /// The first offset where the device differs, or nil when it holds the image.
        public var firstDifference: UInt64?
        public var seconds: Double
    }

    /// Compares `target` with `image` over the image's length.
    /// - Throws: read errors (exit 1), a corrupt image (exit 2), a device shorter than the image (exit 4).
    public func compare(_ image: ImageSource, with target: borrowing DeviceFile, reporter: Reporter) throws -> Comparison {
        var firstDifference: UInt64?
        let streamed = try ImageAndCardStream(depth: depth, chunkSize: chunkSize)
            .run(image, target: target, reporter: reporter) { offset, imageBytes, card in
                if card.count < imageBytes.count {
                    firstDifference = offset + UInt64(card.count)
                    return false
                }
                if memcmp(card.baseAddress!, imageBytes.baseAddress!, imageBytes.count) != 0 {
                    for i in 0..<imageBytes.count where card[i] != imageBytes[i] {
                        firstDifference = offset + UInt64(i)
                        break
                    }
                    return false
                }
                return true
            }
        return Comparison(imageSHA256: streamed.sha256, bytes: streamed.bytes, firstDifference: firstDifference,
                          seconds: streamed.seconds)
    }
}

/// An image decompressed and hashed on a worker thread, streamed alongside the same bytes of a card
/// read with `O_DIRECT` (after dropping its caches), through one bounded ring of aligned buffers:
/// what `verify IMAGE` and `verify --host` compare.
struct ImageAndCardStream {
    var depth: Int
    var chunkSize: Int

    /// Streams the whole image; hands each chunk and the card's bytes at the same offset (shorter
    /// when the card ended early) to `compare`, until it returns false — the image is still read to
    /// its end for its digest.
    ///
    /// - Returns: the image's SHA-256 and length, and the seconds taken.
    /// - Throws: read errors (exit 1), a corrupt image (exit 2), a card smaller than the image
    ///   (exit 4), what `compare` throws, an interrupt.
    func run(
        _ image: ImageSource, target: borrowing DeviceFile, reporter: Reporter,
        compare: (_ offset: UInt64, _ image: UnsafeRawBufferPointer, _ card: UnsafeRawBufferPointer) throws -> Bool
    ) throws -> (sha256: [UInt8], bytes: UInt64, seconds: Double) {
        try target.dropCaches()
        let started = monotonicSeconds()
        let source = try image.open()
        let path = target.path
        let fd = target.descriptor
        let sector = target.logicalSectorSize()
        let deviceSize = try target.size()
        let total = image.uncompressedSize
        reporter.begin("verify", total: total)
        let free = Channel<AlignedBuffer>(capacity: depth)
        let filled = Channel<AlignedBuffer>(capacity: depth)
        for _ in 0..<depth { free.send(AlignedBuffer(count: chunkSize)) }
        let failure = Locked<PiflashError?>(nil)
        let digest = Locked<[UInt8]>([])
        let producer = WorkerThread {
            var hasher = StreamHasher()
            do {
                while let buffer = free.receive() {
                    let n = try source.read(into: buffer.bytes)
                    if n == 0 { break }
                    buffer.used = n
                    hasher.update(buffer.filled)
                    guard filled.send(buffer) else { return }
                }
                digest.withLock { $0 = hasher.finalize() }
                filled.close()
            } catch {
                failure.withLock { $0 = error as? PiflashError ?? PiflashError.failure("\(error)") }
                filled.close()
            }
        }
        let device = AlignedBuffer(count: chunkSize)
        var offset: UInt64 = 0
        var comparing = true
        do {
            while let buffer = filled.receive() {
                try Interrupts.check("verifying \(path) at byte \(offset)")
                let want = buffer.used
                if comparing {
                    if offset + UInt64(want) > deviceSize {
                        throw PiflashError.verification(
                            "the device (\(deviceSize) bytes) is smaller than the image: it ends at byte \(deviceSize)",
                            path: path, offset: deviceSize)
                    }
                    let padded = (want + sector - 1) / sector * sector
                    let got = try DeviceFile.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: device.bytes[0..<padded]),
                                                  at: offset, path: path)
                    comparing = try compare(
                        offset, buffer.filled, UnsafeRawBufferPointer(rebasing: device.bytes[0..<min(got, want)]))
                }
                offset += UInt64(want)
                reporter.progress("verify", done: offset, total: total)
                free.send(buffer)
            }
        } catch {
            free.close()
            filled.close()
            producer.join()
            throw error
        }
        producer.join()
        if let error = failure.withLock({ $0 }) { throw error }
        let seconds = monotonicSeconds() - started
        reporter.end("verify", bytes: offset, seconds: seconds)
        return (digest.withLock { $0 }, offset, seconds)
    }
}
