import Glibc
import PiflashPlatform

/// What a write produced: the digest of the uncompressed image, its length, the plan it followed
/// and the digests of what it wrote, so the read-back can compare and localise a mismatch.
public struct WriteOutcome: Sendable {
    /// SHA-256 of the uncompressed image.
    public var sha256: [UInt8]
    /// Uncompressed image bytes streamed.
    public var bytes: UInt64
    /// What was written: the whole image, or its mapped ranges and the head.
    public var plan: WritePlan
    /// Bytes written (the plan's ranges; every byte for a full plan).
    public var writtenBytes: UInt64
    /// The chunk size the digests were taken over.
    public var chunkSize: Int
    /// Per-chunk CRC-32 and per-range SHA-256 of what was written.
    var digests: PlanDigests
    /// Seconds from the first byte written to the final `fsync`.
    public var seconds: Double
    /// The image's first MiB (or all of it, when shorter), held back: nothing of it but zeros
    /// (the partition tables) is on the target yet. ``DirectWriter/commitHead(_:to:)`` writes it,
    /// last of all.
    public var head: [UInt8] = []

    /// The ranges written with the SHA-256 of the image's bytes there (sparse plans; none for a
    /// full one, where the image's digest covers every byte).
    public var writtenRanges: [WrittenRange] {
        guard let ranges = plan.ranges else { return [] }
        return zip(ranges, digests.rangeSHA256).map { range, sha in
            WrittenRange(offset: range.lowerBound, length: UInt64(range.count), sha256: hexString(sha))
        }
    }
}

/// Streams an image onto a device or file through the ring (``RingPipeline``): decompression,
/// SHA-256, the plan's digests and `pwrite` each a stage on its own thread, never more than `depth`
/// chunks in memory. The partition tables (first 64 KiB) are zeroed before anything else, and the
/// first MiB is held back in memory: the flash job writes it with ``commitHead(_:to:)`` only after
/// every other phase passed, so an interrupted card never looks valid. A sparse ``WritePlan``
/// writes only the image's mapped ranges (and discards the rest where the card can).
public struct DirectWriter: Sendable {
    /// The unit of I/O and of the per-chunk CRCs.
    public var chunkSize: Int
    /// How many chunk buffers the ring holds.
    public var depth: Int
    /// The head kept back and written last.
    public static let headSize = 1 << 20
    /// Where partition tables live (MBR, primary GPT header and entries): zeroed before the write.
    static let tableSize = 64 << 10

    public init(chunkSize: Int = 4 << 20, depth: Int = 4) {
        precondition(chunkSize % Self.headSize == 0, "chunks are whole MiB")
        self.chunkSize = chunkSize
        self.depth = depth
    }

    /// Writes the image by `plan`.
    ///
    /// - Parameters:
    ///   - reader: the uncompressed image bytes.
    ///   - target: the open device or file (`O_DIRECT` where possible).
    ///   - plan: every byte, or the mapped ranges (whose map says how long the image is).
    ///   - discard: whether to discard what a sparse plan skips (`BLKDISCARD`, where the card can).
    ///   - total: the uncompressed size if known, for progress of a full write.
    ///   - reporter: receives `write` progress, in bytes of the plan.
    /// - Returns: the digest, length and the plan's digests.
    /// - Throws: the first error of any stage: a corrupt image, or one whose length is not what its
    ///   map was made from (exit 2), an I/O error naming the byte offset (exit 1), an interrupt (exit 1).
    public func write(
        from reader: sending ImageReader, to target: borrowing DeviceFile, plan: WritePlan = .full(because: "default"),
        discard: Bool = true, total: UInt64?, reporter: Reporter
    ) throws -> WriteOutcome {
        let fd = target.descriptor
        let path = target.path
        let sector = target.logicalSectorSize()
        let isFile = !target.isBlockDevice

        // Invalidate whatever partition table the target holds before writing anything else: the
        // first 64 KiB hold the MBR and a primary GPT (header and entries); the rest of the first
        // MiB is not written until the very end.
        let head = AlignedBuffer(count: Self.headSize)
        head.bytes.initializeMemory(as: UInt8.self, repeating: 0)
        head.used = Self.tableSize
        try DirectWriter.writeHead(head, fd: fd, path: path, isFile: isFile)

        if discard, !isFile, plan.isSparse {
            // What is not written is discarded where the card can: its old content is no longer
            // needed, and a card that erases it keeps no stale data there.
            let skipped = plan.skippedRanges
            if !skipped.isEmpty, try !target.discard(skipped) {
                reporter.note("\(path) does not support discard: the \(formatBytes(skipped.reduce(0) { $0 + UInt64($1.count) })) "
                    + "of free filesystem space not written keep the card's old content (--full overwrites them)")
            }
        }

        let ring = RingPipeline(bufferSize: chunkSize, depth: depth)
        let chunkSize = self.chunkSize
        let expectedBytes = plan.imageBytes
        let streamed = Locked<(sha: [UInt8], bytes: UInt64)>(([], 0))
        let planDigests = Locked(PlanDigests())

        // Decompress into the ring's buffers, each chunk tagged with its planned parts.
        ring.stage { port in
            var offset: UInt64 = 0
            var cursor = plan.cursor()
            while var chunk = port.next() {
                let buffer = port.ring.buffer(chunk)
                let n = try reader.read(into: buffer)
                if n == 0 {
                    port.giveBack(chunk)
                    break
                }
                // O_DIRECT writes whole sectors: pad the last chunk with zeros.
                let padded = (n + sector - 1) / sector * sector
                if padded > n {
                    (buffer.baseAddress! + n).initializeMemory(as: UInt8.self, repeating: 0, count: padded - n)
                }
                chunk.index = Int(offset / UInt64(chunkSize))
                chunk.offset = offset
                chunk.length = n
                chunk.used = padded
                chunk.ranges = cursor.parts(of: chunk.span)
                offset += UInt64(n)
                if let expectedBytes, offset > expectedBytes { break }
                guard port.pass(chunk) else { return }
                // A short chunk means the image ended inside it.
                if n < chunkSize { break }
            }
            if let expectedBytes, offset != expectedBytes {
                throw PiflashError.usage(
                    "the image streamed \(offset > expectedBytes ? "more than" : "only") \(offset > expectedBytes ? expectedBytes : offset) "
                        + "bytes, but its map was made for \(expectedBytes) bytes", path: reader.path,
                    hint: "the image changed while it was being written, or its compressed stream is damaged; try --full")
            }
        }
        // SHA-256 of the whole image, in order.
        ring.stage { port in
            var hasher = StreamHasher()
            var bytes: UInt64 = 0
            while let chunk = port.next() {
                hasher.update(port.ring.bytes(chunk))
                bytes += UInt64(chunk.length)
                guard port.pass(chunk) else { return }
            }
            let sha = hasher.finalize()
            streamed.withLock { $0 = (sha, bytes) }
        }
        // The plan's digests: a CRC-32 per chunk and a SHA-256 per planned range.
        ring.stage { port in
            var digester = PlanDigester(plan: plan, hashFullPlan: false)
            while let chunk = port.next() {
                digester.add(index: chunk.index, parts: chunk.parts.map { ($0, port.ring.bytes(chunk, in: $0)) })
                guard port.pass(chunk) else { return }
            }
            let digests = digester.finalize()
            planDigests.withLock { $0 = digests }
        }

        // Write, on this thread.
        let started = monotonicSeconds()
        let planned = plan.plannedBytes ?? total
        reporter.begin("write", total: planned)
        var written: UInt64 = 0
        do {
            try ring.finish { port in
                while let chunk = port.next() {
                    try Interrupts.check("writing at byte \(chunk.offset) of \(path)")
                    let buffer = port.ring.buffer(chunk)
                    if chunk.offset == 0 {
                        // Keep the head back: it is written last.
                        let headBytes = min(chunk.length, Self.headSize)
                        head.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[0..<headBytes]))
                        head.used = headBytes
                    }
                    let end = chunk.offset + UInt64(chunk.used)
                    for part in chunk.parts {
                        let from = max(part.lowerBound, UInt64(Self.headSize))
                        // The image's last part runs on to the sector padding.
                        let to = part.upperBound == chunk.offset + UInt64(chunk.length) ? end : part.upperBound
                        guard from < to else { continue }
                        let bytes = UnsafeRawBufferPointer(
                            rebasing: buffer[Int(from - chunk.offset)..<Int(to - chunk.offset)])
                        try DeviceFile.write(fd, bytes, at: from, path: path)
                    }
                    written += chunk.parts.reduce(0) { $0 + UInt64($1.count) }
                    reporter.progress("write", done: min(written, planned ?? written), total: planned)
                    port.pass(chunk)
                }
            }
        } catch var error as PiflashError {
            error = DirectWriter.explain(error, fd: fd, isFile: isFile)
            throw error
        }

        let hash = streamed.withLock { $0 }
        try Interrupts.check("flushing \(path)")
        // Everything but the head is written: make it durable. The head stays in memory.
        try retryingEINTR("fsync", path: path) { fsync(fd) }
        if isFile {
            // The last chunk was padded to whole sectors, and a sparse write leaves holes: a file
            // ends where the image ends.
            try retryingEINTR("ftruncate", path: path) { ftruncate(fd, off_t(hash.bytes)) }
            try retryingEINTR("fsync", path: path) { fsync(fd) }
        }
        let seconds = monotonicSeconds() - started
        reporter.end("write", bytes: written, seconds: seconds)
        let headBytes = Array(UnsafeRawBufferPointer(rebasing: head.bytes[0..<min(head.used, Int(hash.bytes))]))
        return WriteOutcome(
            sha256: hash.sha, bytes: hash.bytes, plan: plan, writtenBytes: written, chunkSize: chunkSize,
            digests: planDigests.withLock { $0 }, seconds: seconds, head: headBytes)
    }

    /// Writes the held-back head at offset 0, flushes, drops the caches and reads it back with
    /// `O_DIRECT`: the last write of a flash, after which the target carries its partition table.
    ///
    /// - Throws: exit 1 for I/O errors, exit 4 when the head does not read back as written.
    public static func commitHead(_ bytes: [UInt8], to target: borrowing DeviceFile) throws {
        guard !bytes.isEmpty else { return }
        let fd = target.descriptor
        let path = target.path
        let isFile = !target.isBlockDevice
        let head = AlignedBuffer(count: headSize)
        bytes.withUnsafeBytes { head.bytes.copyMemory(from: $0) }
        head.used = bytes.count
        do {
            try writeHead(head, fd: fd, path: path, isFile: isFile)
        } catch var error as PiflashError {
            error = explain(error, fd: fd, isFile: isFile)
            throw error
        }
        if isFile {
            // The head was padded to a whole sector; a file ends where the image ends.
            var info = stat()
            try retryingEINTR("fstat", path: path) { fstat(fd, &info) }
            if UInt64(info.st_size) < UInt64(bytes.count) {
                try retryingEINTR("ftruncate", path: path) { ftruncate(fd, off_t(bytes.count)) }
            }
        }
        try target.dropCaches()
        let check = AlignedBuffer(count: headSize)
        let padded = (bytes.count + 511) / 512 * 512
        let got = try target.read(into: UnsafeMutableRawBufferPointer(rebasing: check.bytes[0..<padded]), at: 0)
        let matches = got >= bytes.count && bytes.withUnsafeBytes { memcmp(check.bytes.baseAddress!, $0.baseAddress!, bytes.count) == 0 }
        if !matches {
            var offset = UInt64(min(got, bytes.count))
            for i in 0..<min(got, bytes.count) where check.bytes[i] != bytes[i] {
                offset = UInt64(i)
                break
            }
            throw ReadBackVerifier.mismatchError(path: path, offset: offset)
        }
    }

    /// Says what a failed write on a card most likely means: removed (its size dropped to 0) or failing.
    static func explain(_ error: PiflashError, fd: Int32, isFile: Bool) -> PiflashError {
        guard !isFile, error.call == "pwrite", let offset = error.offset else { return error }
        var explained = error
        var size: UInt64 = 0
        if blockDeviceSize(fd, &size), size == 0 {
            explained.message = "the card was removed while writing at byte \(offset) (its size is now 0)"
            explained.hint = "insert it again and start over; it holds no valid image"
        } else if let code = error.errno, code == ENOSPC || code == EIO {
            explained.message = "the card failed to store data at byte \(offset): \(String(cString: strerror(code)))"
            explained.hint = "the card is failing, counterfeit or was removed; try another card"
        }
        return explained
    }

    /// Writes the head buffer at offset 0 and makes it durable.
    static func writeHead(_ head: AlignedBuffer, fd: Int32, path: String, isFile: Bool) throws {
        let sectorPadded = (head.used + 511) / 512 * 512
        if sectorPadded > head.used {
            (head.bytes.baseAddress! + head.used).initializeMemory(as: UInt8.self, repeating: 0, count: sectorPadded - head.used)
        }
        try DeviceFile.write(fd, UnsafeRawBufferPointer(rebasing: head.bytes[0..<sectorPadded]), at: 0, path: path)
        try retryingEINTR("fsync", path: path) { fsync(fd) }
    }

    /// Zeroes the first MiB of a target that holds a failed or unverified write, so it never looks
    /// like a valid card. Best effort: the target may be gone.
    public static func invalidate(_ target: borrowing DeviceFile) {
        let zeros = AlignedBuffer(count: headSize)
        zeros.bytes.initializeMemory(as: UInt8.self, repeating: 0)
        zeros.used = headSize
        try? writeHead(zeros, fd: target.descriptor, path: target.path, isFile: !target.isBlockDevice)
    }
}
