/// The outcome of a write or flash: the `result` object of `--json` (SPEC "Commands"), the human
/// summary, and what the journal records.
public struct FlashResult: Sendable {
    public var ok = false
    public var host: String?
    /// The card, when writing to a device.
    public var device: String?
    /// The image file written, when writing with `--output`.
    public var output: String?
    /// The source image file.
    public var image: String?
    public var compression: String?
    /// SHA-256 of the uncompressed image, hex.
    public var imageSHA256: String?
    public var bytes: UInt64 = 0
    /// The uncompressed image's size (as ``bytes``).
    public var imageBytes: UInt64?
    /// The bytes written and read back: the image's mapped ranges and its head, or every byte
    /// (`--full`).
    public var mappedBytes: UInt64?
    /// The ranges a sparse flash wrote, with the image's SHA-256 there (journaled; not in `--json`).
    public var writtenRanges: [WrittenRange] = []
    public var writeSeconds: Double = 0
    public var verifySeconds: Double = 0
    public var injectSeconds: Double = 0
    /// The injected files as read back: keyed digests for secret-derived content.
    public var files: [InjectedFile] = []
    /// Every range of the target the injection wrote, with digests: the card map's part that
    /// differs from the image (journaled for `verify --host`).
    public var injectedBlocks: [InjectedBlock] = []
    public var hostKeyFingerprint: String?
    public var knownHostsLine: String?
    public var ejected = false
    public var error: String?
    public var errorOffset: UInt64?
    /// For `verify --host`: where the first bad byte lies, `image` or `injected_block`.
    public var errorRegion: String?
    public var exitCode: Int32 = 0

    public init() {}

    /// Records a failure: the message and the exit status.
    public mutating func fail(_ error: PiflashError) {
        ok = false
        self.error = error.description
        errorOffset = error.offset
        exitCode = error.status.rawValue
    }

    /// Write rate in bytes per second: bytes written (``mappedBytes``) per second.
    public var writeRate: Double { writeSeconds > 0 ? Double(mappedBytes ?? bytes) / writeSeconds : 0 }
    /// Read-back rate in bytes per second: bytes read back per second.
    public var verifyRate: Double { verifySeconds > 0 ? Double(mappedBytes ?? bytes) / verifySeconds : 0 }

    /// The `result` object.
    public var json: JSONValue {
        var fields: [(String, JSONValue)] = [("event", "result"), ("ok", .bool(ok)), ("host", .string(host))]
        if let output {
            fields.append(("output", .string(output)))
        } else {
            fields.append(("device", .string(device)))
        }
        fields += [
            ("image", .string(image)), ("compression", .string(compression)), ("image_sha256", .string(imageSHA256)),
            ("bytes", .uint(bytes)), ("image_bytes", imageBytes.map { .uint($0) } ?? .null),
            ("mapped_bytes", mappedBytes.map { .uint($0) } ?? .null), ("write_seconds", .double(writeSeconds)), ("verify_seconds", .double(verifySeconds)),
            ("inject_seconds", .double(injectSeconds)),
            ("write_rate", .double(writeRate)), ("verify_rate", .double(verifyRate)),
            ("files", .array(files.map { .object($0.jsonFields) })),
            ("injected_blocks", .int(Int64(injectedBlocks.count))),
            ("injected_bytes", .uint(injectedBlocks.reduce(0) { $0 + $1.length })),
            ("host_key_fingerprint", .string(hostKeyFingerprint)),
            ("known_hosts", .string(knownHostsLine)),
            ("ejected", .bool(ejected)),
        ]
        if !ok {
            fields += [("error", .string(error ?? "unknown error")), ("exit_code", .int(Int64(exitCode)))]
            if let errorOffset { fields.append(("error_offset", .uint(errorOffset))) }
            if let errorRegion { fields.append(("error_region", .string(errorRegion))) }
        } else {
            fields.append(("exit_code", 0))
        }
        return .object(fields)
    }

    /// A short summary for a human.
    public var summary: String {
        var lines: [String] = []
        let target = output ?? device ?? "?"
        if ok {
            lines.append("✓ \(host.map { "\($0): " } ?? "")\(image ?? "image") written to \(target) and verified")
        } else {
            lines.append("✗ \(host.map { "\($0): " } ?? "")failed: \(error ?? "unknown error")")
        }
        if bytes > 0 {
            var line = "  \(formatBytes(bytes))"
            if let mappedBytes, mappedBytes < bytes { line += " (\(formatBytes(mappedBytes)) written: what its filesystems use)" }
            if writeSeconds > 0 { line += ", write \(formatDuration(writeSeconds)) (\(formatBytes(UInt64(writeRate)))/s)" }
            if verifySeconds > 0 { line += ", verify \(formatDuration(verifySeconds)) (\(formatBytes(UInt64(verifyRate)))/s)" }
            lines.append(line)
        }
        if let imageSHA256 { lines.append("  image sha256 \(imageSHA256)") }
        for file in files { lines.append("  " + file.summaryLine) }
        if let hostKeyFingerprint { lines.append("  host key \(hostKeyFingerprint)") }
        if ok && ejected { lines.append("  the card was ejected: it is safe to remove") }
        return lines.joined(separator: "\n")
    }
}
