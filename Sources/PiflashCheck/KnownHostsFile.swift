#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation

/// An OpenSSH `known_hosts` file, to which `piflash check --write-known-hosts` adds the PINNED key
/// of a host (never a key merely observed on the network), without duplicating lines.
public struct KnownHostsFile: Sendable {
    /// The file's path.
    public var path: String

    public init(path: String) {
        self.path = path
    }

    /// `~/.ssh/known_hosts` of the user (from `HOME`).
    public static func userDefault(environment: [String: String]) throws -> KnownHostsFile {
        guard let home = environment["HOME"], !home.isEmpty else {
            throw PiflashError.usage("HOME is not set: cannot find ~/.ssh/known_hosts")
        }
        return KnownHostsFile(path: home + "/.ssh/known_hosts")
    }

    /// The host pattern OpenSSH looks up for `address` on `port`: `address`, or `[address]:port`
    /// when the port is not 22.
    public static func hostPattern(address: String, port: Int) -> String {
        port == 22 ? address : "[\(address)]:\(port)"
    }

    /// Adds `key` for the host patterns (`bastet`, `[bastet.local]:2222`, see
    /// ``hostPattern(address:port:)``) the file does not already pin it for, in plain or hashed
    /// form, as one line `PATTERNS ssh-ed25519 AAAA…`. Creates the file (0644) and its folder
    /// (0700) when missing; appends, keeping the file's mode and owner.
    ///
    /// - Returns: the patterns added; empty when the file already had them all.
    /// - Throws: ``PiflashError`` when the file cannot be read or written.
    @discardableResult
    public func add(patterns: [String], key: SSHHostKey) throws -> [String] {
        let fileManager = FileManager.default
        var existing = ""
        if fileManager.fileExists(atPath: path) {
            guard let data = fileManager.contents(atPath: path) else {
                throw PiflashError.failure("cannot read \(path)", path: path)
            }
            existing = String(decoding: data, as: UTF8.self)
        }
        let lines = existing.split(separator: "\n")
        var missing: [String] = []
        for pattern in patterns where !missing.contains(pattern) {
            if !lines.contains(where: { Self.entry($0, matches: pattern, key: key) }) { missing.append(pattern) }
        }
        if missing.isEmpty { return [] }

        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty && !fileManager.fileExists(atPath: folder) {
            do {
                try fileManager.createDirectory(
                    atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw PiflashError.failure("cannot create \(folder): \(error.localizedDescription)", path: folder)
            }
        }
        var text = missing.joined(separator: ",") + " " + key.line + "\n"
        if !existing.isEmpty && !existing.hasSuffix("\n") { text = "\n" + text }
        try append(text)
        return missing
    }

    /// Appends `text` with `O_APPEND`, so concurrent writers and the file's mode and owner are kept.
    private func append(_ text: String) throws {
        let fd = try retryingEINTR("open", path: path) { open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644) }
        var failure: PiflashError?
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                failure = PiflashError.system("write", errno: errno, path: path, what: "cannot append to \(path)")
                break
            }
            offset += written
        }
        if close(fd) != 0 && failure == nil {
            failure = PiflashError.system("close", errno: errno, path: path, what: "cannot append to \(path)")
        }
        if let failure { throw failure }
    }

    /// Whether a `known_hosts` line holds `key` for `pattern`: its host field lists the pattern,
    /// plainly or hashed (`|1|salt|hash`, as `HashKnownHosts yes` writes), and its key is `key`.
    /// Marker lines (`@cert-authority`, `@revoked`) never match.
    static func entry(_ line: Substring, matches pattern: String, key: SSHHostKey) -> Bool {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 3, !fields[0].hasPrefix("#"), !fields[0].hasPrefix("@") else { return false }
        guard fields[1] == key.algorithm, let blob = Data(base64Encoded: String(fields[2])), [UInt8](blob) == key.blob
        else { return false }
        return fields[0].split(separator: ",").contains { hostField in
            hostField.hasPrefix("|1|") ? hashedField(hostField, matches: pattern) : hostField == pattern
        }
    }

    /// `|1|base64(salt)|base64(HMAC-SHA1(salt, pattern))`.
    static func hashedField(_ field: Substring, matches pattern: String) -> Bool {
        let parts = field.split(separator: "|", omittingEmptySubsequences: true)
        guard parts.count == 3, parts[0] == "1",
            let salt = Data(base64Encoded: String(parts[1])), let expected = Data(base64Encoded: String(parts[2]))
        else { return false }
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Data(pattern.utf8), using: SymmetricKey(data: salt))
        return Data(mac) == expected
    }
}
