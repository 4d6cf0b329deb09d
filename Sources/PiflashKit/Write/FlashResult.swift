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
    public var writeSeconds: Double = 0
    public var verifySeconds: Double = 0
    public var injectSeconds: Double = 0
    /// The injected files as read back: keyed digests for secret-derived content.
    public var files: [InjectedFile] = []
    public var hostKeyFingerprint: String?
    public var knownHostsLine: String?
    public var ejected = false
    public var error: String?
    public var errorOffset: UInt64?
    public var exitCode: Int32 = 0

    public init() {}

    /// Records a failure: the message and the exit status.
    public mutating func fail(_ error: PiflashError) {
        ok = false
        self.error = error.description
        errorOffset = error.offset
        exitCode = error.status.rawValue
    }

    /// Write rate in bytes per second.
    public var writeRate: Double { writeSeconds > 0 ? Double(bytes) / writeSeconds : 0 }
    /// Read-back rate in bytes per second.
    public var verifyRate: Double { verifySeconds > 0 ? Double(bytes) / verifySeconds : 0 }

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
            ("bytes", .uint(bytes)), ("write_seconds", .double(writeSeconds)), ("verify_seconds", .double(verifySeconds)),
            ("inject_seconds", .double(injectSeconds)),
            ("write_rate", .double(writeRate)), ("verify_rate", .double(verifyRate)),
            ("files", .array(files.map { .object($0.jsonFields) })),
            ("host_key_fingerprint", .string(hostKeyFingerprint)),
            ("known_hosts", .string(knownHostsLine)),
            ("ejected", .bool(ejected)),
        ]
        if !ok {
            fields += [("error", .string(error ?? "unknown error")), ("exit_code", .int(Int64(exitCode)))]
            if let errorOffset { fields.append(("error_offset", .uint(errorOffset))) }
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
