/// What piflash records about the content of an injected file — never the content itself.
///
/// Content derived from secrets (a `secret` file, a `template` that names a secret) is recorded as
/// a keyed digest, HMAC-SHA-256 under the host's ``DigestKey``: whoever holds the host's secrets
/// can recompute and compare it, and nobody else can test guesses against it (a plain SHA-256 of
/// `WIFI_PSK=<8 characters>` falls to an offline search). Public content (a `public_key_of`
/// file, a template without secrets) keeps a plain SHA-256.
///
/// Every place that prints, records or compares a file digest goes through this type, so the
/// kind travels with the value: the `--json` result's `files[]`, the `injected` event, the human
/// summary, the journal and the verifiers.
public enum ContentDigest: Sendable, Equatable, Hashable, Codable {
    /// Plain SHA-256 (lower-case hex) of public content.
    case sha256(String)
    /// HMAC-SHA-256 (lower-case hex) under the host's ``DigestKey``, of content derived from secrets.
    case hmacSHA256(String)
    /// A plain SHA-256 (lower-case hex) that a piflash before keyed digests recorded in the
    /// journal (schema versions 1 and 2), for every file whether or not its content came from
    /// secrets. Read and shown, never written by a new flash; `piflash history
    /// --scrub-plain-digests` removes it.
    case legacySHA256(String)
    /// A legacy digest removed by `piflash history --scrub-plain-digests`: nothing is known of
    /// the content any more.
    case scrubbed

    /// The digest of `content`: keyed under `key` when the content is derived from secrets
    /// (`key` non-nil), plain SHA-256 otherwise.
    public static func of(_ content: some Sequence<UInt8>, key: DigestKey?) -> ContentDigest {
        if let key { return .hmacSHA256(key.macHex(content)) }
        return .sha256(sha256Hex(content))
    }

    /// The hex value, nil for ``scrubbed``.
    public var hex: String? {
        switch self {
        case .sha256(let hex), .hmacSHA256(let hex), .legacySHA256(let hex): hex
        case .scrubbed: nil
        }
    }

    /// Whether this is a plain SHA-256 that may have been computed over secrets (``legacySHA256``).
    public var isLegacyPlain: Bool {
        if case .legacySHA256 = self { return true }
        return false
    }

    /// The algorithm's name for people: `sha256`, `hmac-sha256`, `sha256 (legacy, plain)`,
    /// `digest scrubbed`.
    public var label: String {
        switch self {
        case .sha256: "sha256"
        case .hmacSHA256: "hmac-sha256"
        case .legacySHA256: "sha256 (legacy, plain)"
        case .scrubbed: "digest scrubbed"
        }
    }

    /// A short form for one-line summaries: `hmac-sha256 0123456789abcdef…`.
    public var short: String {
        guard let hex else { return label }
        return "\(label) \(hex.prefix(16))…"
    }

    /// The fields of a `files[]` object (`--json` result, `injected` event, `history --json`):
    /// `hmac_sha256` for keyed digests, `sha256` for public content; a legacy digest is `sha256`
    /// with `"legacy_plain_digest": true`; a scrubbed one is `"digest_scrubbed": true`.
    public var jsonFields: [(String, JSONValue)] {
        switch self {
        case .sha256(let hex): [("sha256", .string(hex))]
        case .hmacSHA256(let hex): [("hmac_sha256", .string(hex))]
        case .legacySHA256(let hex): [("sha256", .string(hex)), ("legacy_plain_digest", .bool(true))]
        case .scrubbed: [("digest_scrubbed", .bool(true))]
        }
    }

    /// Whether `content` is what this digest was computed over. A keyed digest needs `key` (the
    /// host's ``DigestKey`` from the same secrets); a plain or legacy digest needs none; a
    /// scrubbed digest matches nothing (it no longer proves anything).
    public func matches(_ content: some Sequence<UInt8>, key: DigestKey?) -> Bool {
        switch self {
        case .sha256(let hex), .legacySHA256(let hex): return sha256Hex(content) == hex
        case .hmacSHA256(let hex):
            guard let key else { return false }
            return key.macHex(content) == hex
        case .scrubbed: return false
        }
    }

    // MARK: Journal storage

    /// The journal's `digest_kind` column: `sha256`, `hmac_sha256`, `scrubbed`, or NULL for a
    /// digest written before schema version 3 (``legacySHA256``).
    public var storedKind: String? {
        switch self {
        case .sha256: "sha256"
        case .hmacSHA256: "hmac_sha256"
        case .legacySHA256: nil
        case .scrubbed: "scrubbed"
        }
    }

    /// The digest back from the journal's `digest_kind` and `digest` columns. An unknown kind is
    /// read as plain legacy: shown, never trusted as keyed.
    public init(storedKind kind: String?, hex: String) {
        switch kind {
        case "sha256": self = .sha256(hex)
        case "hmac_sha256": self = .hmacSHA256(hex)
        case "scrubbed": self = .scrubbed
        default: self = hex.isEmpty ? .scrubbed : .legacySHA256(hex)
        }
    }
}
