import PiflashPlatform
import PiflashSecrets

/// `piflash hosts rotate-key`: a new SSH host key in a host's existing SOPS file, every other
/// value kept, re-encrypted with a fresh data key for the same recipients. The journal is not
/// touched: it records flashes, and this is not one.
public enum HostKeyRotation {
    public struct Result {
        public var secretsPath: String
        /// The secret that holds the key.
        public var secretName: String
        /// The fingerprint of the key replaced; nil when the secret held none (or no usable key).
        public var oldFingerprint: String?
        public var newKey: OpenSSHPublicKey
        public var knownHostsLine: String
        public var hostRecipient: AgeRecipient
    }

    /// The secret holding a host's SSH key: its first `public_key_of`, else the canonical name.
    public static func keySecret(of host: HostFile) -> String {
        for entry in host.files {
            if case .publicKeyOf(let name) = entry.source { return name }
        }
        return CanonicalLayout.hostKeySecret
    }

    /// Rotates the key of `host`, whose secrets must be a SOPS file whose data key one of
    /// `identities` opens.
    ///
    /// - Throws: ``PiflashError``: exit 2 for a host without SOPS secrets or a file piflash
    ///   cannot rewrite (see ``SOPSRewrite``), exit 1 when no identity opens it or its MAC is
    ///   wrong. On any error the file is unchanged.
    public static func rotate(host: HostFile, identities: [AgeIdentity]) throws -> Result {
        guard case .sops(let path)? = host.secrets else {
            throw PiflashError.usage(
                "\(host.filePath): rotate-key needs `[secrets] sops = …`; this host's secrets are \(host.secrets.map { "\($0)" } ?? "absent")",
                path: host.filePath)
        }
        SecretMemory.protectProcess()
        let secretName = keySecret(of: host)
        guard !secretName.contains(".") else {
            throw PiflashError.usage("the host key secret `\(secretName)` is nested; rotate-key replaces top-level keys only", path: path)
        }
        let key = OpenSSHPrivateKey.generate(comment: "root@" + host.name)
        var pem = key.pem
        defer { LockedBytes.wipe(&pem) }
        var outcome = try SOPSRewrite.replacing(secretName, with: pem, inFile: path, identities: identities)
        defer { if outcome.oldValue != nil { LockedBytes.wipe(&outcome.oldValue!) } }
        let oldFingerprint = outcome.oldValue.flatMap { try? OpenSSHPublicKey(privateKeyPEM: $0).fingerprint }
        try AtomicFile.replace(path, content: outcome.content)
        return Result(
            secretsPath: path, secretName: secretName, oldFingerprint: oldFingerprint, newKey: key.publicKey,
            knownHostsLine: host.knownHostsLine(key: key.publicKey), hostRecipient: try key.publicKey.ageRecipient())
    }
}
