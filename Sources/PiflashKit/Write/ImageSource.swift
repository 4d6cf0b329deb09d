import Glibc
import PiflashPlatform

/// An image to flash: the file (found in a folder when given one), its compression, its size
/// when the format says it, and the digest it is expected to have.
public struct ImageSource: Sendable {
    /// The image file.
    public let path: String
    public let compression: Compression
    /// Bytes on disk.
    public let fileSize: UInt64
    /// Uncompressed bytes, where the format says it.
    public let uncompressedSize: UInt64?
    /// The SHA-256 the uncompressed image must have, and where that expectation came from.
    public let expected: ExpectedDigest?

    /// An expected SHA-256 and where it came from (`--sha256`, a host file, a sidecar file).
    public struct ExpectedDigest: Sendable, Equatable {
        /// Lower-case hex.
        public var sha256: String
        /// Whether it is the digest of the file as stored (compressed), not of the image.
        public var ofCompressedFile: Bool
        /// Where it came from, for messages.
        public var origin: String
    }

    /// Image file endings piflash recognises in folders.
    static let imageSuffixes = [".img", ".img.zst", ".img.xz", ".img.gz", ".raw", ".iso"]

    /// Finds and opens an image.
    ///
    /// - Parameters:
    ///   - path: an image file; or a folder holding exactly one `*.img[.zst|.xz|.gz]` (also inside its
    ///     `sd-image/` subfolder, as a NixOS build result has it).
    ///   - expectedSHA256: the SHA-256 of the uncompressed image, if known (`--sha256`, host file).
    ///     Without it a sidecar `IMAGE.sha256` or `SHA256SUMS` beside the image is used.
    /// - Throws: exit-2 errors for a missing or ambiguous image or a malformed digest.
    public init(path: String, expectedSHA256: String? = nil) throws {
        let file = try Self.locate(path)
        let reader = try ImageReader(path: file)
        self.path = file
        compression = reader.compression
        fileSize = reader.fileSize
        uncompressedSize = reader.uncompressedSize
        if let expectedSHA256 {
            let hex = expectedSHA256.lowercased()
            guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit }) else {
                throw PiflashError.usage("the expected SHA-256 '\(expectedSHA256)' is not 64 hex digits")
            }
            expected = ExpectedDigest(sha256: hex, ofCompressedFile: false, origin: "the expected digest given")
        } else {
            expected = try Self.sidecarDigest(for: file, compression: reader.compression)
        }
    }

    /// Opens a fresh stream of the uncompressed bytes.
    public func open() throws -> ImageReader {
        try ImageReader(path: path)
    }

    /// Checks a digest of the stored (compressed) file before any card is touched.
    /// - Throws: exit-2 error when the file does not have the expected digest.
    public func checkStoredFileDigest(reporter: Reporter) throws {
        guard let expected, expected.ofCompressedFile else { return }
        reporter.begin("check", total: fileSize)
        let started = monotonicSeconds()
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PiflashError.system("open", errno: errno, path: path, status: .usage) }
        defer { Glibc.close(fd) }
        var hasher = StreamHasher()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while true {
            let n = try retryingEINTR("read", path: path) { read(fd, buffer.baseAddress, buffer.count) }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            done += UInt64(n)
            reporter.progress("check", done: done, total: fileSize)
        }
        reporter.end("check", bytes: done, seconds: monotonicSeconds() - started)
        let actual = hexString(hasher.finalize())
        if actual != expected.sha256 {
            throw PiflashError.usage(
                "the image file's SHA-256 is \(actual), but \(expected.origin) says \(expected.sha256)", path: path,
                hint: "the download or build is damaged or is not the image you meant")
        }
    }

    /// Resolves a file or folder to the one image file.
    public static func locate(_ path: String) throws -> String {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw PiflashError.usage("no image at \(path)", path: path, hint: "check the path; build the image first")
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return path }
        let folder = path.hasSuffix("/") ? String(path.dropLast()) : path
        // A NixOS build result: $out/nix-support/hydra-build-products names it.
        if let products = readSmallFile(folder + "/nix-support/hydra-build-products") {
            for line in products.split(separator: "\n") {
                let fields = line.split(separator: " ")
                if fields.count >= 3, fields[0] == "file", fields[1] == "sd-image" { return String(fields[2]) }
            }
        }
        var found = imageFiles(in: folder)
        if found.isEmpty { found = imageFiles(in: folder + "/sd-image") }
        switch found.count {
        case 1: return found[0]
        case 0:
            throw PiflashError.usage("no image (*.img, *.img.zst, *.img.xz, *.img.gz) in the folder \(path)", path: path)
        default:
            throw PiflashError.usage(
                "the folder \(path) holds \(found.count) images: " + found.map { String($0.split(separator: "/").last!) }.joined(separator: ", "),
                path: path, hint: "name the image file itself")
        }
    }

    private static func imageFiles(in folder: String) -> [String] {
        guard let dir = opendir(folder) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if imageSuffixes.contains(where: { name.hasSuffix($0) }) && !name.hasPrefix(".") { names.append(folder + "/" + name) }
        }
        return names.sorted()
    }

    /// Reads `IMAGE.sha256` or a `SHA256SUMS` line naming the image (or its uncompressed name).
    static func sidecarDigest(for file: String, compression: Compression) throws -> ExpectedDigest? {
        let name = String(file.split(separator: "/").last ?? Substring(file))
        let folder = file.contains("/") ? String(file[..<file.lastIndex(of: "/")!]) : "."
        let uncompressedName = compression == .raw ? name : stripCompressionSuffix(name)
        if let text = readSmallFile(file + ".sha256") {
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
            guard let hex = fields.first, isSHA256(hex) else {
                throw PiflashError.usage("\(file).sha256 does not hold a SHA-256", path: file + ".sha256")
            }
            let named = fields.count > 1 ? String(fields[1]).trimmingPrefix("*") : name
            return ExpectedDigest(sha256: hex.lowercased(), ofCompressedFile: compression != .raw && named != uncompressedName,
                                  origin: "\(name).sha256")
        }
        if let text = readSmallFile(folder + "/SHA256SUMS") {
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count >= 2, isSHA256(fields[0]) else { continue }
                let named = String(fields[1]).trimmingPrefix("*")
                if named == name {
                    return ExpectedDigest(sha256: fields[0].lowercased(), ofCompressedFile: compression != .raw, origin: "SHA256SUMS")
                }
                if named == uncompressedName {
                    return ExpectedDigest(sha256: fields[0].lowercased(), ofCompressedFile: false, origin: "SHA256SUMS")
                }
            }
        }
        return nil
    }

    static func stripCompressionSuffix(_ name: String) -> String {
        for suffix in [".zst", ".xz", ".gz"] where name.hasSuffix(suffix) { return String(name.dropLast(suffix.count)) }
        return name
    }

    private static func isSHA256<S: StringProtocol>(_ text: S) -> Bool {
        text.count == 64 && text.allSatisfy { $0.isHexDigit }
    }
}

extension String {
    fileprivate func trimmingPrefix(_ prefix: String) -> String {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self
    }
}

/// The contents of a small text file, or nil when it does not exist or cannot be read.
func readSmallFile(_ path: String, limit: Int = 1 << 20) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: limit)
    let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, limit) }
    guard n >= 0 else { return nil }
    return String(decoding: bytes[0..<n], as: UTF8.self)
}
