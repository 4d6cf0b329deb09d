import Glibc
import PiflashPlatform

/// What a write produced: the digest of the uncompressed image, its length, and a CRC-32 per
/// chunk so a read-back mismatch can be localised.
public struct WriteOutcome: Sendable {
    /// SHA-256 of the uncompressed image.
    public var sha256: [UInt8]
    /// Uncompressed bytes written.
    public var bytes: UInt64
    /// CRC-32 of each `chunkSize` chunk, in order.
    public var chunkCRCs: [UInt32]
    /// The chunk size the CRCs were taken over.
    public var chunkSize: Int
    /// Seconds from the first byte written to the final `fsync`.
    public var seconds: Double
    /// The image's first MiB (or all of it, when shorter), held back: nothing of it but zeros
    /// (the partition tables) is on the target yet. ``DirectWriter/commitHead(_:to:)`` writes it,
    /// last of all.
    public var head: [UInt8] = []
}

/// Streams an image onto a device or file through a bounded ring of aligned buffers:
/// decompression, SHA-256, the per-chunk CRC-32 and `pwrite` each on their own thread, never more
/// than `depth` chunks in memory. The partition tables (first 64 KiB) are zeroed before anything
/// else, and the first MiB is held back in memory: the flash job writes it with
/// ``commitHead(_:to:)`` only after every other phase passed, so an interrupted card never looks valid.
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

    private struct Chunk {
        var buffer: AlignedBuffer
        var offset: UInt64
        /// The image bytes in the buffer (`buffer.used` may be more: the last chunk is padded to a sector).
        var length: Int
    }

    /// Writes the image.
    ///
    /// - Parameters:
    ///   - reader: the uncompressed image bytes.
    ///   - target: the open device or file (`O_DIRECT` where possible).
    ///   - total: the uncompressed size if known, for progress.
    ///   - reporter: receives `write` progress.
    /// - Returns: the digest, length and per-chunk CRCs.
    /// - Throws: the first error of either thread: a corrupt image (exit 2), an I/O error naming
    ///   the byte offset (exit 1), an interrupt (exit 1).
    public func write(
        from reader: ImageReader, to target: borrowing DeviceFile, total: UInt64?, reporter: Reporter
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

        // Four stages joined by bounded channels (decompress, SHA-256, CRC-32, `pwrite`), so the work
        // overlaps and spreads over the cores; the buffers go round the ring, never more than `depth`.
        let free = Channel<AlignedBuffer>(capacity: depth)
        let decoded = Channel<Chunk>(capacity: depth)
        let hashed = Channel<Chunk>(capacity: depth)
        let filled = Channel<Chunk>(capacity: depth)
        for _ in 0..<depth { free.send(AlignedBuffer(count: chunkSize)) }

        let failure = Locked<PiflashError?>(nil)
        func fail(_ error: Error) {
            failure.withLock { existing in
                if existing == nil {
                    existing = error as? PiflashError ?? PiflashError.failure("\(error)")
                }
            }
            free.close()
            decoded.close()
            hashed.close()
            filled.close()
        }

        // Producer: decompress into the ring's buffers.
        let chunkSize = self.chunkSize
        let producer = WorkerThread {
            var offset: UInt64 = 0
            do {
                while let buffer = free.receive() {
                    let n = try reader.read(into: buffer.bytes)
                    if n == 0 {
                        free.send(buffer)
                        break
                    }
                    // O_DIRECT writes whole sectors: pad the last chunk with zeros.
                    let padded = (n + sector - 1) / sector * sector
                    if padded > n {
                        (buffer.bytes.baseAddress! + n).initializeMemory(as: UInt8.self, repeating: 0, count: padded - n)
                    }
                    buffer.used = padded
                    let chunk = Chunk(buffer: buffer, offset: offset, length: n)
                    offset += UInt64(n)
                    guard decoded.send(chunk) else { return }
                    // A short chunk means the image ended inside it.
                    if n < chunkSize { break }
                }
                decoded.close()
            } catch {
                fail(error)
            }
        }

        // Hasher: SHA-256 of the image, in order.
        let digest = Locked<(sha: [UInt8], bytes: UInt64)>(([], 0))
        let hashing = WorkerThread {
            var hasher = StreamHasher()
            var bytes: UInt64 = 0
            while let chunk = decoded.receive() {
                hasher.update(UnsafeRawBufferPointer(rebasing: chunk.buffer.bytes[0..<chunk.length]))
                bytes += UInt64(chunk.length)
                guard hashed.send(chunk) else { return }
            }
            digest.withLock { $0 = (hasher.finalize(), bytes) }
            hashed.close()
        }

        // Checksummer: the CRC-32 of each chunk, for the read-back to name the first bad chunk.
        let checksums = Locked<[UInt32]>([])
        let checksumming = WorkerThread {
            var crcs: [UInt32] = []
            while let chunk = hashed.receive() {
                crcs.append(crc32(0, UnsafeRawBufferPointer(rebasing: chunk.buffer.bytes[0..<chunk.length])))
                guard filled.send(chunk) else { return }
            }
            checksums.withLock { $0 = crcs }
            filled.close()
        }

        // Writer: this thread.
        let started = monotonicSeconds()
        reporter.begin("write", total: total)
        var written: UInt64 = 0
        do {
            while let chunk = filled.receive() {
                try Interrupts.check("writing at byte \(chunk.offset) of \(path)")
                var data = chunk.buffer.filled
                var offset = chunk.offset
                if offset == 0 {
                    // Keep the head back: it is written last.
                    let headBytes = min(data.count, Self.headSize)
                    head.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: data[0..<headBytes]))
                    head.used = headBytes
                    data = UnsafeRawBufferPointer(rebasing: data[headBytes...])
                    offset = UInt64(headBytes)
                }
                if !data.isEmpty {
                    try DeviceFile.write(fd, data, at: offset, path: path)
                }
                written = chunk.offset + UInt64(chunk.buffer.used)
                reporter.progress("write", done: min(written, total ?? written), total: total)
                free.send(chunk.buffer)
            }
        } catch var error as PiflashError {
            error = DirectWriter.explain(error, fd: fd, isFile: isFile)
            fail(error)
        } catch {
            fail(error)
        }
        producer.join()
        hashing.join()
        checksumming.join()
        if let error = failure.withLock({ $0 }) { throw error }

        let hash = digest.withLock { $0 }
        let result = (sha: hash.sha, bytes: hash.bytes, crcs: checksums.withLock { $0 })
        try Interrupts.check("flushing \(path)")
        // Everything but the head is written: make it durable. The head stays in memory.
        try retryingEINTR("fsync", path: path) { fsync(fd) }
        if isFile {
            // The last chunk was padded to whole sectors; a file ends where the image ends.
            try retryingEINTR("ftruncate", path: path) { ftruncate(fd, off_t(result.bytes)) }
            try retryingEINTR("fsync", path: path) { fsync(fd) }
        }
        let seconds = monotonicSeconds() - started
        reporter.end("write", bytes: result.bytes, seconds: seconds)
        let headBytes = Array(UnsafeRawBufferPointer(rebasing: head.bytes[0..<min(head.used, Int(result.bytes))]))
        return WriteOutcome(sha256: result.sha, bytes: result.bytes, chunkCRCs: result.crcs, chunkSize: chunkSize,
                            seconds: seconds, head: headBytes)
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
