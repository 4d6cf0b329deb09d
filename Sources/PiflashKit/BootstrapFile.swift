import Crypto

/// One file to inject into the card's root filesystem, rendered before any card is touched.
/// Its content may be a secret: it lives in memory only, is never logged and never journaled.
public struct BootstrapFile: Sendable, Equatable {
    /// Absolute path inside the image, e.g. `/var/lib/bootstrap/ssh_host_ed25519_key`.
    public var path: String
    /// The bytes to write.
    public var content: [UInt8]
    /// Permission bits (e.g. `0o600`), without the file type.
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32

    public init(path: String, content: [UInt8], mode: UInt16, uid: UInt32 = 0, gid: UInt32 = 0) {
        self.path = path
        self.content = content
        self.mode = mode
        self.uid = uid
        self.gid = gid
    }

    /// What may be shown and journaled about the file: never its content.
    public var record: InjectedFile {
        InjectedFile(path: path, sha256: sha256Hex(content), mode: mode, uid: uid, gid: gid)
    }
}

/// The public description of an injected file: path, content digest, mode and owner.
public struct InjectedFile: Sendable, Equatable, Codable {
    public var path: String
    /// Lower-case hex SHA-256 of the content.
    public var sha256: String
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32

    public init(path: String, sha256: String, mode: UInt16, uid: UInt32, gid: UInt32) {
        self.path = path
        self.sha256 = sha256
        self.mode = mode
        self.uid = uid
        self.gid = gid
    }

    /// Mode as the four-digit octal string of host files and the `--json` result (`"0600"`).
    public var modeString: String {
        let octal = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - octal.count)) + octal
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
