import PiflashSecrets

extension HostFile {
    /// Whether opening this host's secrets needs age identities: SOPS and age files do; a plain
    /// `dir` of files, or no `[secrets]` at all, does not. The one place that decides it: `flash`,
    /// `write`, `known-hosts`, `check`, `hosts --check`, `verify --host` and the station ask here.
    public var needsAgeIdentities: Bool {
        switch secrets {
        case .sops?, .age?: return true
        case .dir?, nil: return false
        }
    }
}

extension HostSecrets {
    /// Opens the secrets of `host`, asking for age identities only when the host needs them
    /// (``HostFile/needsAgeIdentities``): a `dir` host never reads an age key, so none need exist.
    ///
    /// - Parameter identities: loads the identities (e.g. `--age-identity`, `$SOPS_AGE_KEY`…);
    ///   called at most once, and only for SOPS and age secrets.
    public static func load(for host: HostFile, identities: () throws -> [AgeIdentity]) throws -> SecretValues {
        try load(for: host, identities: host.needsAgeIdentities ? identities() : [])
    }
}

/// Everything a flash needs, prepared before any card is touched: the image opened (and built
/// when the host file says so), the secrets decrypted and every file rendered, the pinned host key.
/// `flash`, `write` and the station prepare here; the commands only parse, call and render.
public struct FlashPreparation: Sendable {
    /// The host, for `flash` and the station; nil for `write`.
    public var host: HostFile?
    /// The image, opened.
    public var image: ImageSource
    /// The rendered files and the pinned key (empty for `write`).
    public var bootstrap: HostBootstrap

    /// A plain image write (`piflash write`): no host, nothing to inject.
    public init(image: ImageSource) {
        self.host = nil
        self.image = image
        self.bootstrap = HostBootstrap(files: [], hostKey: nil, knownHostsLine: nil)
    }

    /// Prepares a host's flash: host file → the identities it needs (none for `dir`) → secrets →
    /// rendered files; and its image.
    ///
    /// - Parameters:
    ///   - host: the loaded host file (every rule already checked when it was loaded).
    ///   - imagePath: an image to use instead of the host file's `[image]` (`--image`).
    ///   - runBuild: whether to run `[image] build` first.
    ///   - identities: loads age identities; called only when the host needs them.
    /// - Throws: ``PiflashError``: exit 2 for bad images and host files, exit 1 for decryption failures.
    public static func prepare(
        host: HostFile, imagePath: String? = nil, runBuild: Bool = true, identities: () throws -> [AgeIdentity],
        reporter: Reporter
    ) throws -> FlashPreparation {
        let path = try imagePath ?? host.imagePath(runBuild: runBuild, reporter: reporter)
        let source = try ImageSource(path: path, expectedSHA256: imagePath == nil ? host.image.sha256 : nil)
        let secrets = try HostSecrets.load(for: host, identities: identities)
        let bootstrap = try host.bootstrap(secrets: secrets)
        if host.secrets != nil, let note = SecretMemory.lockNote { reporter.note(note) }
        var preparation = FlashPreparation(image: source)
        preparation.host = host
        preparation.bootstrap = bootstrap
        return preparation
    }

    /// The job that flashes this preparation onto `target`: the image's mapped ranges, or every
    /// byte with `full` (`--full`).
    public func job(target: FlashTarget, full: Bool = false) -> FlashJob {
        var injection: Injection?
        if let host, !bootstrap.files.isEmpty {
            injection = .bootstrap(bootstrap.files, root: host.root, digestKey: bootstrap.digestKey)
        }
        var job = FlashJob(
            image: image, target: target, host: host?.name, injection: injection,
            hostKeyFingerprint: bootstrap.hostKey?.fingerprint, knownHostsLine: bootstrap.knownHostsLine)
        job.full = full
        return job
    }
}
