import PiflashSecrets

extension HostFile {
    /// The key of the keyed digests recorded about this host's secret-derived content (injected
    /// files, injected blocks): ``DigestKey`` over every secret its `[[files]]` entries use —
    /// `secret`, the private key of `public_key_of`, the names a `template` refers to (each
    /// source kind names its secrets in ``FileEntry/Source/secretNames``, the one place to extend
    /// for a new kind).
    ///
    /// The same secrets give the same key on every machine, so a journal entry's keyed digests can
    /// be recomputed and compared by whoever holds the secrets, and by nobody else.
    ///
    /// - Returns: nil when the files use no secret (then no recorded digest is keyed).
    public func digestKey(secrets: SecretValues) -> DigestKey? {
        DigestKey(secrets: secrets, names: files.flatMap(\.source.secretNames))
    }
}
