/// A range of the card that the injection wrote, with a digest of what it holds: the part of a
/// provisioned card that differs from the image. Recorded in the journal so the card can be
/// verified completely later (`piflash verify --host`).
public struct InjectedBlock: Sendable, Equatable, Codable {
    /// Byte offset on the card (or image file).
    public var offset: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// Lower-case hex digest of the range's bytes: HMAC-SHA-256 under the host's ``DigestKey``
    /// when ``keyed`` (the host has secrets: the blocks may hold them), else plain SHA-256.
    public var digest: String
    /// Whether ``digest`` is keyed (`hmac_sha256`) or plain (`sha256`).
    public var keyed: Bool

    public init(offset: UInt64, length: UInt64, digest: String, keyed: Bool) {
        self.offset = offset
        self.length = length
        self.digest = digest
        self.keyed = keyed
    }

    /// The largest record: ranges are cut at multiples of 4 KiB on the card.
    public static let unit: UInt64 = 4096

    /// The byte after the range.
    public var end: UInt64 { offset + length }

    /// The digest of `bytes` as a block record takes it: keyed with `key`, else plain SHA-256.
    public static func digest(of bytes: some Sequence<UInt8>, key: DigestKey?) -> String {
        key.map { $0.macHex(bytes) } ?? sha256Hex(bytes)
    }

    /// The digest field's name in JSON: `hmac_sha256` or `sha256`.
    public var digestField: String { keyed ? "hmac_sha256" : "sha256" }

    /// `{"offset":…,"length":…,"hmac_sha256"|"sha256":"…"}`.
    public var json: JSONValue {
        .object([("offset", .uint(offset)), ("length", .uint(length)), (digestField, .string(digest))])
    }
}
