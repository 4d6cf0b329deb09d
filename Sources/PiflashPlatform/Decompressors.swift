import CLzma
import CPiflashShim
import CZlib
import CZstd
import Glibc

/// How an image file is compressed, told by its magic bytes (never by its name).
public enum Compression: String, Sendable, CaseIterable {
    case raw, zstd, xz, gzip

    /// Detects the compression from the first bytes of a file.
    public static func detect(_ magic: [UInt8]) -> Compression {
        if magic.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        if magic.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .xz }
        if magic.starts(with: [0x1F, 0x8B]) { return .gzip }
        return .raw
    }
}

/// A stream of uncompressed image bytes read from an image file of any ``Compression``.
public final class ImageReader {
    /// The file being read.
    public let path: String
    /// Its compression.
    public let compression: Compression
    /// The size of the file on disk.
    public let fileSize: UInt64
    /// The uncompressed size, where the format says it (raw: the file size; zstd: every frame's header;
    /// xz: the index). Nil for gzip and for zstd streams written without a size.
    public let uncompressedSize: UInt64?

    /// The sum of every frame's content size: the frame headers are walked with `pread` (each
    /// block's 3-byte header says how far the next one is), so a multi-frame file, as `pzstd` makes,
    /// is not mistaken for its first frame, and nothing but a few bytes per block is read (the file
    /// is not mapped: its pages would count as the process's memory). Nil when a frame does not
    /// say its size or the file is damaged (the decompressor then says how).
    private static func zstdUncompressedSize(fd: Int32, fileSize: UInt64) -> UInt64? {
        func bytes(_ count: Int, at offset: UInt64) -> [UInt8]? {
            var buffer = [UInt8](repeating: 0, count: count)
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
            return got == count ? buffer : nil
        }
        func little(_ b: [UInt8]) -> UInt64 { b.reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        var offset: UInt64 = 0
        var total: UInt64 = 0
        while offset < fileSize {
            guard let magic = bytes(4, at: offset) else { return nil }
            let value = little(magic)
            if value & 0xFFFF_FFF0 == 0x184D_2A50 {
                // A skippable frame: its 4-byte size, then that many bytes.
                guard let size = bytes(4, at: offset + 4) else { return nil }
                offset += 8 + little(size)
                continue
            }
            guard value == 0xFD2F_B528, let header = bytes(min(18, Int(fileSize - offset)), at: offset) else { return nil }
            var frame = ZSTD_frameHeader()
            let rc = header.withUnsafeBytes { ZSTD_getFrameHeader(&frame, $0.baseAddress, $0.count) }
            guard rc == 0, frame.frameContentSize < UInt64.max - 1 else { return nil }
            total += frame.frameContentSize
            offset += UInt64(frame.headerSize)
            while true {
                guard let block = bytes(3, at: offset) else { return nil }
                let word = little(block)
                let last = word & 1 == 1
                let type = (word >> 1) & 3
                let size = word >> 3
                guard type != 3 else { return nil }
                offset += 3 + (type == 1 ? 1 : size)
                if last { break }
            }
            if frame.checksumFlag != 0 { offset += 4 }
        }
        return offset == fileSize ? total : nil
    }
    /// How many bytes of the file have been consumed.
    public private(set) var compressedBytesRead: UInt64 = 0

    private let fd: Int32
    private let input: UnsafeMutableRawBufferPointer
    private var inputStart = 0
    private var inputEnd = 0
    private var inputEOF = false
    private var decoder: Decoder
    private var finished = false

    private enum Decoder {
        case raw
        case zstd(OpaquePointer)
        case xz(UnsafeMutablePointer<lzma_stream>)
        case gzip(UnsafeMutablePointer<z_stream>)
    }

    /// Opens an image file and detects its compression.
    /// - Throws: exit-2 ``PiflashError`` when the file cannot be opened or read.
    public init(path: String) throws {
        self.path = path
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw PiflashError.system("open", errno: errno, path: path, status: .usage, what: "cannot open the image \(path)")
        }
        var info = stat()
        fstat(fd, &info)
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(fd)
            throw PiflashError.usage("\(path) is not a regular file", path: path)
        }
        self.fd = fd
        fileSize = UInt64(info.st_size)
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)

        var magic = [UInt8](repeating: 0, count: 18)
        let got = magic.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 18, 0) }
        magic = Array(magic.prefix(max(0, got)))
        compression = Compression.detect(magic)
        input = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)

        switch compression {
        case .raw:
            uncompressedSize = fileSize
            decoder = .raw
        case .zstd:
            uncompressedSize = Self.zstdUncompressedSize(fd: fd, fileSize: fileSize)
            guard let context = ZSTD_createDCtx() else { fatalError("ZSTD_createDCtx: out of memory") }
            decoder = .zstd(context)
        case .xz:
            uncompressedSize = Self.xzUncompressedSize(fd: fd, fileSize: fileSize)
            let stream = UnsafeMutablePointer<lzma_stream>.allocate(capacity: 1)
            stream.initialize(to: lzma_stream())
            let rc = lzma_stream_decoder(stream, UInt64.max, 0x08 /* LZMA_CONCATENATED */)
            precondition(rc == LZMA_OK, "lzma_stream_decoder: \(rc)")
            decoder = .xz(stream)
        case .gzip:
            uncompressedSize = nil
            let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            stream.initialize(to: z_stream())
            let rc = inflateInit2_(stream, 16 + MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
            precondition(rc == Z_OK, "inflateInit2: \(rc)")
            decoder = .gzip(stream)
        }
    }

    deinit {
        switch decoder {
        case .raw: break
        case .zstd(let context): ZSTD_freeDCtx(context)
        case .xz(let stream):
            lzma_end(stream)
            stream.deallocate()
        case .gzip(let stream):
            inflateEnd(stream)
            stream.deallocate()
        }
        input.deallocate()
        Glibc.close(fd)
    }

    /// Fills `buffer` with the next uncompressed bytes, as many as fit unless the image ends.
    /// - Returns: the number of bytes, 0 only at the end of the image.
    /// - Throws: exit-2 ``PiflashError`` for corrupt or truncated data, naming the compressed offset.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < buffer.count && !finished {
            let out = UnsafeMutableRawBufferPointer(rebasing: buffer[filled...])
            let produced = try decode(into: out)
            filled += produced
        }
        return filled
    }

    /// Refills the input buffer when it is empty. Returns false at the end of the file.
    private func refill() throws -> Bool {
        if inputStart < inputEnd { return true }
        if inputEOF { return false }
        inputStart = 0
        inputEnd = 0
        while true {
            let n = Glibc.read(fd, input.baseAddress, input.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw PiflashError.system("read", errno: errno, path: path, offset: compressedBytesRead, status: .usage,
                                          what: "cannot read the image")
            }
            if n == 0 {
                inputEOF = true
                return false
            }
            inputEnd = n
            compressedBytesRead += UInt64(n)
            return true
        }
    }

    private var pendingInput: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: input[inputStart..<inputEnd])
    }

    private func corrupt(_ what: String) -> PiflashError {
        let at = compressedBytesRead - UInt64(inputEnd - inputStart)
        return PiflashError(.usage, "the image is corrupt: \(compression.rawValue): \(what) near compressed byte \(at)",
                            path: path, offset: at, hint: "download or build the image again")
    }

    private func truncated() -> PiflashError {
        PiflashError(.usage, "the image ends early: the \(compression.rawValue) stream is truncated after \(fileSize) bytes",
                     path: path, offset: fileSize, hint: "the file is incomplete: download or build it again")
    }

    /// Produces some output (possibly 0 bytes while consuming input); sets `finished` at the end.
    private func decode(into out: UnsafeMutableRawBufferPointer) throws -> Int {
        switch decoder {
        case .raw:
            // Straight into the caller's buffer: no copy through the input buffer.
            while true {
                let n = Glibc.read(fd, out.baseAddress, out.count)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw PiflashError.system("read", errno: errno, path: path, offset: compressedBytesRead, status: .usage,
                                              what: "cannot read the image")
                }
                if n == 0 { finished = true }
                compressedBytesRead += UInt64(n)
                return n
            }

        case .zstd(let context):
            let haveInput = try refill()
            if !haveInput {
                // Flush what the decoder still holds; a frame left open means a truncated file.
                var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: 0, pos: 0)
                let rc = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
                if ZSTD_isError(rc) != 0 { throw corrupt(String(cString: ZSTD_getErrorName(rc))) }
                if outBuffer.pos == 0 {
                    // Nothing more came out: the stream is complete only if the last frame ended.
                    if !zstdFrameEnded { throw truncated() }
                    finished = true
                } else {
                    zstdFrameEnded = rc == 0
                }
                return outBuffer.pos
            }
            var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
            var inBuffer = ZSTD_inBuffer(src: input.baseAddress! + inputStart, size: inputEnd - inputStart, pos: 0)
            let rc = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
            inputStart += inBuffer.pos
            if ZSTD_isError(rc) != 0 { throw corrupt(String(cString: ZSTD_getErrorName(rc))) }
            zstdFrameEnded = rc == 0
            return outBuffer.pos

        case .xz(let stream):
            let haveInput = try refill()
            stream.pointee.next_in = haveInput ? UnsafePointer(input.baseAddress!.assumingMemoryBound(to: UInt8.self) + inputStart) : nil
            stream.pointee.avail_in = haveInput ? inputEnd - inputStart : 0
            stream.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_out = out.count
            let rc = lzma_code(stream, haveInput ? LZMA_RUN : LZMA_FINISH)
            inputStart = inputEnd - stream.pointee.avail_in
            let produced = out.count - stream.pointee.avail_out
            switch rc {
            case LZMA_OK: break
            case LZMA_STREAM_END: finished = true
            case LZMA_BUF_ERROR where !haveInput: throw truncated()
            case LZMA_DATA_ERROR: throw corrupt("compressed data is corrupt")
            case LZMA_FORMAT_ERROR: throw corrupt("not an xz stream")
            case LZMA_OPTIONS_ERROR: throw corrupt("unsupported options")
            case LZMA_MEM_ERROR, LZMA_MEMLIMIT_ERROR: throw PiflashError.failure("xz: out of memory", path: path)
            default: throw corrupt("lzma_code returned \(rc.rawValue)")
            }
            if !haveInput && rc == LZMA_OK && produced == 0 { throw truncated() }
            return produced

        case .gzip(let stream):
            let haveInput = try refill()
            if !haveInput {
                if gzipMemberOpen { throw truncated() }
                finished = true
                return 0
            }
            stream.pointee.next_in = input.baseAddress!.assumingMemoryBound(to: UInt8.self) + inputStart
            stream.pointee.avail_in = UInt32(inputEnd - inputStart)
            stream.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_out = UInt32(out.count)
            let rc = inflate(stream, Z_NO_FLUSH)
            inputStart = inputEnd - Int(stream.pointee.avail_in)
            let produced = out.count - Int(stream.pointee.avail_out)
            switch rc {
            case Z_OK, Z_BUF_ERROR:
                gzipMemberOpen = true
            case Z_STREAM_END:
                // Another member may follow (concatenated gzip files).
                gzipMemberOpen = false
                inflateReset(stream)
            case Z_DATA_ERROR:
                let message = stream.pointee.msg.map { String(cString: $0) } ?? "invalid data"
                throw corrupt(message)
            case Z_MEM_ERROR: throw PiflashError.failure("gzip: out of memory", path: path)
            default: throw corrupt("inflate returned \(rc)")
            }
            return produced
        }
    }

    private var zstdFrameEnded = false
    private var gzipMemberOpen = false

    /// The uncompressed size of a single-stream xz file, read from its index.
    private static func xzUncompressedSize(fd: Int32, fileSize: UInt64) -> UInt64? {
        let footerSize = 12
        guard fileSize >= 32 else { return nil }
        var footer = [UInt8](repeating: 0, count: footerSize)
        guard footer.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, footerSize, off_t(fileSize) - off_t(footerSize)) }) == footerSize
        else { return nil }
        var flags = lzma_stream_flags()
        guard lzma_stream_footer_decode(&flags, footer) == LZMA_OK else { return nil }
        let indexSize = Int(flags.backward_size)
        guard indexSize > 0, UInt64(indexSize + footerSize) < fileSize, indexSize < 64 << 20 else { return nil }
        var indexBytes = [UInt8](repeating: 0, count: indexSize)
        let start = off_t(fileSize) - off_t(footerSize + indexSize)
        guard indexBytes.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, indexSize, start) }) == indexSize else { return nil }
        var index: OpaquePointer?
        var memlimit: UInt64 = 64 << 20
        var position = 0
        guard lzma_index_buffer_decode(&index, &memlimit, nil, indexBytes, &position, indexSize) == LZMA_OK, let index else {
            return nil
        }
        defer { lzma_index_end(index, nil) }
        // Only a file holding exactly one stream is described by this index.
        let streamSize = lzma_index_total_size(index) + 12 + UInt64(indexSize) + UInt64(footerSize)
        guard streamSize == fileSize else { return nil }
        return lzma_index_uncompressed_size(index)
    }
}

/// CRC-32 (zlib's) of a buffer, continuing from `crc`. Used for per-chunk digests that localise a
/// read-back mismatch; the authoritative check is SHA-256. On x86-64 with PCLMULQDQ the bulk is
/// folded with carry-less multiplies (several times zlib's speed, same values), the tail by zlib.
public func crc32(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    guard var base = bytes.baseAddress, bytes.count > 0 else { return crc }
    var count = bytes.count
    var crc = crc
    if count >= 64 && crc32FoldAvailable {
        let folded = count & ~15
        crc = piflash_crc32_fold(crc, base, folded)
        base += folded
        count -= folded
    }
    while count > 0 {
        // zlib takes a 32-bit length.
        let n = min(count, 1 << 30)
        crc = UInt32(CZlib.crc32(UInt(crc), base.assumingMemoryBound(to: UInt8.self), UInt32(n)))
        base += n
        count -= n
    }
    return crc
}

private let crc32FoldAvailable = piflash_crc32_fold_available() != 0
