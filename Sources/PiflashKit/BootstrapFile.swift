import Crypto

/// One file to inject into the card's root filesystem, rendered before any card is touched.
/// Its content may be a secret: it lives only in locked, no-dump memory (``SecretBytes``), zeroed
/// when the job is done, and is never logged nor journaled.
public struct BootstrapFile: Sendable, Equatable {
    /// Absolute path inside the image, e.g. `/var/lib/bootstrap/ssh_host_ed25519_key`.
    public var path: String
    /// The bytes to write, in locked memory.
    public var secret: SecretBytes
    /// A copy of the bytes to write: its owner should wipe it (``SecretPages/wipe(_:)``);
    /// ``withContent(_:)`` reads them in place.
    public var content: [UInt8] {
        get { secret.bytes }
        set { secret = SecretBytes(copying: newValue) }
    }
    /// Permission bits (e.g. `0o600`), without the file type.
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32
    /// The key of the recorded digest when the content is derived from secrets (the host's
    /// ``DigestKey``, see ``HostFile/digestKey(secrets:)``); nil for public content, whose digest
    /// is a plain SHA-256.
    public var digestKey: DigestKey?

    public init(
        path: String, content: [UInt8], mode: UInt16, uid: UInt32 = 0, gid: UInt32 = 0, digestKey: DigestKey? = nil
    ) {
        self.path = path
        self.secret = SecretBytes(copying: content)
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.digestKey = digestKey
    }

    /// A file whose content is already in locked memory (what rendering makes).
    public init(
        path: String, secret: SecretBytes, mode: UInt16, uid: UInt32 = 0, gid: UInt32 = 0, digestKey: DigestKey? = nil
    ) {
        self.path = path
        self.secret = secret
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.digestKey = digestKey
    }

    /// Reads the content in place, without a copy.
    public func withContent<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try secret.withUnsafeBytes(body)
    }

    /// The content's length.
    public var contentCount: Int { secret.count }

    /// Whether the content is derived from secrets (then only a keyed digest of it is recorded).
    public var isSecretDerived: Bool { digestKey != nil }

    /// The digest of `bytes` as this file's digest is recorded: keyed when the file is derived
    /// from secrets, plain otherwise. Used for the content as rendered and as read back.
    public func digest(of bytes: some Sequence<UInt8>) -> ContentDigest {
        ContentDigest.of(bytes, key: digestKey)
    }

    /// What may be shown and journaled about the file: never its content, and of secret-derived
    /// content only a keyed digest.
    public var record: InjectedFile {
        InjectedFile(path: path, digest: withContent { digest(of: $0) }, mode: mode, uid: uid, gid: gid)
    }
}

/// The public description of an injected file: path, content digest, mode and owner.
public struct InjectedFile: Sendable, Equatable, Codable {
    public var path: String
    /// The content's digest: keyed (HMAC-SHA-256) for secret-derived content, plain SHA-256 for
    /// public content; in journals written before keyed digests, a legacy plain SHA-256.
    public var digest: ContentDigest
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32

    public init(path: String, digest: ContentDigest, mode: UInt16, uid: UInt32, gid: UInt32) {
        self.path = path
        self.digest = digest
        self.mode = mode
        self.uid = uid
        self.gid = gid
    }

    /// Mode as the four-digit octal string of host files and the `--json` result (`"0600"`).
    public var modeString: String { InjectedFile.modeString(mode) }

    /// A mode as the four-digit octal string of host files (`0o600` → `"0600"`).
    public static func modeString(_ mode: UInt16) -> String {
        let octal = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - octal.count)) + octal
    }

    /// The file as a `files[]` object of the `--json` result, the `injected` event and
    /// `history --json`: `path`, the digest (`hmac_sha256` or `sha256`, see
    /// ``ContentDigest/jsonFields``), `mode`, `uid`, `gid`.
    public var jsonFields: [(String, JSONValue)] {
        [("path", .string(path))] + digest.jsonFields + [
            ("mode", .string(modeString)), ("uid", .int(Int64(uid))), ("gid", .int(Int64(gid))),
        ]
    }

    /// One summary line: `0600 0:0 /var/lib/…/system-connections.env  hmac-sha256 0123456789abcdef…`.
    public var summaryLine: String {
        "\(modeString) \(uid):\(gid) \(path)  \(digest.short)"
    }

    /// Whether this record describes `file` as rendered now: same path, mode and owner, and a
    /// digest that matches its content (keyed digests under the file's own key; a legacy plain
    /// digest by plain SHA-256; a scrubbed digest never matches).
    public func describes(_ file: BootstrapFile) -> Bool {
        path == file.path && mode == file.mode && uid == file.uid && gid == file.gid
            && file.withContent { digest.matches($0, key: file.digestKey) }
    }
}

/// Lower-case hex SHA-256 of some bytes.
public func sha256Hex<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
    hexString(SHA256.hash(data: Array(bytes)))
}

/// Lower-case hex of a byte sequence.
public func hexString<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}
