import Crypto

/// Incremental SHA-256 over buffers (swift-crypto; BoringSSL's SHA-NI code on x86-64).
public struct StreamHasher {
    private var hasher = SHA256()

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: bytes)
    }

    /// The digest of everything so far.
    public func finalize() -> [UInt8] {
        Array(hasher.finalize())
    }
}
