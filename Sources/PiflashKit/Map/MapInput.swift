import Glibc
import PiflashPlatform

/// Thrown by map parsers when bytes they need have not been retained yet; the mapper fetches them
/// (they pass later in a decompressing stream) and runs the parsers again.
struct MapNeed: Error {
    var ranges: ByteRanges
}

/// The image's bytes as the map parsers see them: random access through a file descriptor, where
/// only the ``available`` ranges hold the image's bytes. For a raw image that is the image file
/// itself, all of it; for a compressed one a sparse anonymous memory file (`memfd_create`) the size
/// of the image into which the stream's passing bytes that parsing needs are copied.
final class MapInput {
    /// Uncompressed image size (a large placeholder while a stream of unknown size is read).
    private(set) var imageBytes: UInt64
    /// A path libext2fs can open to read the same bytes (the file, or `/proc/self/fd/N`).
    let path: String
    /// The image file, for messages.
    let imagePath: String
    private(set) var available: ByteRanges
    let fd: Int32
    private let ownsFD: Bool

    /// The raw image file, read in place.
    init(rawFile path: String) throws {
        let fd = try retryingEINTR("open", path: path) { open(path, O_RDONLY | O_CLOEXEC) }
        var info = stat()
        fstat(fd, &info)
        self.fd = fd
        ownsFD = true
        self.path = path
        imagePath = path
        imageBytes = UInt64(info.st_size)
        available = ByteRanges([0..<UInt64(info.st_size)])
    }

    /// An empty sparse memory file of `imageBytes` for a streamed image.
    init(retainingFor imagePath: String, imageBytes: UInt64) throws {
        let fd = try makeSparseMemoryFile(name: "piflash-map", size: imageBytes, path: imagePath)
        self.fd = fd
        ownsFD = true
        self.imagePath = imagePath
        self.imageBytes = imageBytes
        path = "/proc/self/fd/\(fd)"
        available = ByteRanges()
    }

    deinit { if ownsFD { close(fd) } }

    /// Copies stream bytes that start at image offset `offset` into the memory file and marks them available.
    func retain(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw PiflashError.system("pwrite", errno: errno, path: imagePath, what: "cannot hold the image's metadata in memory")
            }
            done += n
        }
        available.insert(offset..<offset + UInt64(bytes.count))
    }

    /// Sets the image size once a stream of unknown size has ended.
    func resize(to size: UInt64) throws {
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw PiflashError.system("ftruncate", errno: errno, path: imagePath, what: "cannot size the image's memory file")
        }
        imageBytes = size
        available = available.clamped(to: 0..<size)
    }

    /// Throws ``MapNeed`` for the parts of `ranges` (clamped to the image) not available yet.
    func require(_ ranges: [Range<UInt64>]) throws {
        let wanted = ByteRanges(ranges).clamped(to: 0..<imageBytes)
        let missing = wanted.subtracting(available)
        if !missing.ranges.isEmpty { throw MapNeed(ranges: missing) }
    }

    /// The bytes of `range` (clamped to the image); throws ``MapNeed`` when they are not available yet.
    func read(_ range: Range<UInt64>) throws -> [UInt8] {
        let clamped = range.clamped(to: 0..<imageBytes)
        try require([clamped])
        var bytes = [UInt8](repeating: 0, count: clamped.count)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes {
                pread(fd, $0.baseAddress! + done, $0.count - done, off_t(clamped.lowerBound) + off_t(done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw PiflashError.system("pread", errno: errno, path: imagePath, offset: clamped.lowerBound + UInt64(done),
                                          status: .usage, what: "cannot read the image")
            }
            if n == 0 { break }
            done += n
        }
        return Array(bytes.prefix(done))
    }
}

extension Array where Element == UInt8 {
    func le16(_ at: Int) -> UInt64 { at + 2 <= count ? UInt64(self[at]) | UInt64(self[at + 1]) << 8 : 0 }
    func le32(_ at: Int) -> UInt64 { le16(at) | le16(at + 2) << 16 }
    func le64(_ at: Int) -> UInt64 { le32(at) | le32(at + 4) << 32 }
}
