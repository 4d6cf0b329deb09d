/// A range of the card that the injection wrote, with a digest of what it holds: the part of a
/// provisioned card that differs from the image. Recorded in the journal so the card can be
/// verified completely later (`piflash verify --host`).
public struct InjectedBlock: Sendable, Equatable, Codable {
    /// Byte offset on the card (or image file).
    public var offset: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// The digest of the range's bytes (``ContentDigest/of(_:key:)``): HMAC-SHA-256 under the
    /// host's ``DigestKey`` when the host has secrets (the blocks may hold them), else plain SHA-256.
    public var digest: ContentDigest

    public init(offset: UInt64, length: UInt64, digest: ContentDigest) {
        self.offset = offset
        self.length = length
        self.digest = digest
    }

    /// Whether ``digest`` is keyed (`hmac_sha256`): checking it needs the host's secrets.
    public var keyed: Bool {
        if case .hmacSHA256 = digest { return true }
        return false
    }

    /// The largest record: ranges are cut at multiples of 4 KiB on the card.
    public static let unit: UInt64 = 4096

    /// The byte after the range.
    public var end: UInt64 { offset + length }

    /// `{"offset":…,"length":…,"hmac_sha256"|"sha256":"…"}`.
    public var json: JSONValue {
        .object([("offset", .uint(offset)), ("length", .uint(length))] + digest.jsonFields)
    }
}

/// A range of the image a sparse flash wrote (``WritePlan``), with the SHA-256 of the image's bytes
/// there: the card map's written part. A full write records none (every byte was written).
public struct WrittenRange: Sendable, Equatable, Codable {
    /// Byte offset on the card (and in the image).
    public var offset: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// SHA-256 of the image's bytes in the range, lower-case hex (image content: never secret).
    public var sha256: String

    public init(offset: UInt64, length: UInt64, sha256: String) {
        self.offset = offset
        self.length = length
        self.sha256 = sha256
    }

    /// The bytes it covers.
    public var range: Range<UInt64> { offset..<(offset + length) }

    /// `{"offset":…,"length":…,"sha256":"…"}`.
    public var json: JSONValue {
        .object([("offset", .uint(offset)), ("length", .uint(length)), ("sha256", .string(sha256))])
    }
}
