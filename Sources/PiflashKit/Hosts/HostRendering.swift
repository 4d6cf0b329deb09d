import PiflashPlatform
import PiflashSecrets

/// Opens a host's secrets, dispatching on its `[secrets]` section.
public enum HostSecrets {
    /// Decrypts (or reads) the secrets of `host`: SOPS, age or a plain folder. A host without a
    /// `[secrets]` section has no secrets (an empty set).
    ///
    /// - Parameter identities: age identities (``AgeIdentity/load(explicitFile:environment:)``);
    ///   unused for `dir`.
    /// - Throws: the loader's ``PiflashError``: exit 2 for unreadable or malformed files, exit 1
    ///   for decryption failures (wrong identity, bad MAC).
    public static func load(for host: HostFile, identities: [AgeIdentity]) throws -> SecretValues {
        if host.secrets != nil { SecretMemory.protectProcess() }
        switch host.secrets {
        case nil: return SecretValues([:])
        case .sops(let path): return try SecretLoader.loadSOPS(path: path, identities: identities)
        case .age(let path): return try SecretLoader.loadAge(path: path, identities: identities)
        case .dir(let path): return try SecretLoader.loadDirectory(path: path)
        }
    }
}

/// Everything a flash needs from a host before touching a card: the rendered files, the pinned
/// host key and its `known_hosts` line.
public struct HostBootstrap: Sendable {
    /// The files to inject, in host-file order. Contents may be secret: never log them.
    public var files: [BootstrapFile]
    /// The SSH host key the host will present, when the host file pins one.
    public var hostKey: OpenSSHPublicKey?
    /// `names ssh-ed25519 AAAA…` for `~/.ssh/known_hosts`, when a host key is pinned.
    public var knownHostsLine: String?
    /// The key of the keyed digests of what the injection writes (``HostFile/digestKey(secrets:)``).
    public var digestKey: DigestKey?

    public init(files: [BootstrapFile], hostKey: OpenSSHPublicKey?, knownHostsLine: String?, digestKey: DigestKey? = nil) {
        self.files = files
        self.hostKey = hostKey
        self.knownHostsLine = knownHostsLine
        self.digestKey = digestKey
    }
}

extension HostFile {
    /// The secret at `keyPath`, or a usage error naming it (and the keys that exist: names only).
    func secretValue(_ keyPath: String, in secrets: SecretValues, for place: String) throws -> [UInt8] {
        if let value = secrets.value(keyPath) { return value }
        var hint = "add `\(keyPath)` to the secrets"
        if let source = secretsSourceDescription { hint += " in \(source)" }
        let keys = secrets.keys
        if !keys.isEmpty {
            if let near = closestKey(to: keyPath, among: keys) {
                hint = "did you mean `\(near)`? or " + hint
            }
            hint += "; the secrets have: " + keys.joined(separator: ", ")
        }
        throw PiflashError.usage(
            "\(filePath): \(place) needs the secret `\(keyPath)`, which the secrets do not have", path: filePath,
            hint: hint)
    }

    var secretsSourceDescription: String? {
        switch secrets {
        case .sops(let path), .age(let path), .dir(let path): return path
        case nil: return nil
        }
    }

    /// Renders every `[[files]]` entry with the decrypted secrets:
    /// - `secret` → the value's bytes, unchanged;
    /// - `public_key_of` → `ssh-ed25519 AAAA… HOSTNAME\n` (the `.pub` file form, comment = the
    ///   host name), derived from the OpenSSH private key in that secret;
    /// - `template` → the template with each `${name}` replaced literally by the secret's bytes;
    /// - `env` → one `NAME="value"` line per variable, quoted for systemd's `EnvironmentFile=`
    ///   (``EnvironmentFile/line(name:value:)``).
    ///
    /// Files whose content is derived from secrets (``FileEntry/Source/holdsSecret``) carry the
    /// host's ``digestKey(secrets:)``, so only a keyed digest of them is ever recorded.
    ///
    /// - Throws: ``PiflashError`` (exit 2) naming the file entry and the missing secret, a
    ///   secret that is not an unencrypted OpenSSH private key, or a value an environment file
    ///   cannot carry exactly (with the rule's code).
    public func render(secrets: SecretValues) throws -> [BootstrapFile] {
        let key = digestKey(secrets: secrets)
        return try files.map { entry in
            let place = "[[files]] \(entry.path)"
            // Every copy of a secret made here is zeroed once it is in the file's locked memory.
            var content: [UInt8]
            switch entry.source {
            case .secret(let name):
                content = try secretValue(name, in: secrets, for: place)
            case .publicKeyOf(let secretName):
                let key = try publicKey(fromSecret: secretName, in: secrets, for: place)
                content = Array((key.line + " " + name + "\n").utf8)
            case .template(let text):
                let template: Template
                do {
                    template = try Template(text)
                } catch let error as TemplateSyntaxError {
                    throw PiflashError.usage("\(filePath): the template of \(place) \(error.message)", path: filePath)
                }
                var values: [[UInt8]] = []
                defer { for index in values.indices { SecretPages.wipe(&values[index]) } }
                content = try template.render { name in
                    values.append(try secretValue(name, in: secrets, for: place))
                    return values[values.count - 1]
                }
            case .environment(let variables):
                var lines: [UInt8] = []
                for variable in variables {
                    var value = try secretValue(variable.secret, in: secrets, for: place)
                    defer { SecretPages.wipe(&value) }
                    if let problem = EnvironmentFile.valueProblem(value) {
                        SecretPages.wipe(&lines)
                        throw PiflashError.usage(
                            "\(filePath): \(place): the secret `\(variable.secret)` (variable \(variable.name)) cannot be "
                                + "written to an environment file exactly: \(problem.description) [rule \(problem.code)]",
                            path: filePath, hint: "fix the value of `\(variable.secret)` in the secrets")
                    }
                    var line = EnvironmentFile.line(name: variable.name, value: value)
                    lines += line
                    SecretPages.wipe(&line)
                }
                content = lines
            }
            var fileKey: DigestKey?
            if entry.source.holdsSecret {
                // Rendering read the secrets the entry names, so they exist and the key does.
                guard let key else { preconditionFailure("\(place) holds a secret but the host has no digest key") }
                fileKey = key
            }
            return BootstrapFile(
                path: entry.path, secret: SecretBytes(wiping: &content), mode: entry.mode, uid: entry.uid, gid: entry.gid,
                digestKey: fileKey)
        }
    }

    func publicKey(fromSecret secret: String, in secrets: SecretValues, for place: String) throws -> OpenSSHPublicKey {
        var pem = try secretValue(secret, in: secrets, for: place)
        defer { SecretPages.wipe(&pem) }
        do {
            return try OpenSSHPublicKey(privateKeyPEM: pem)
        } catch let error as PiflashError {
            var error = error
            error.message = "\(filePath): \(place): the secret `\(secret)` is not a usable OpenSSH private key: "
                + error.message
            error.path = filePath
            throw error
        }
    }

    /// The SSH host key this host will present: derived from the secret of the first
    /// `public_key_of` file, else from a secret named `ssh_host_ed25519_key`; nil when neither
    /// exists.
    ///
    /// - Throws: ``PiflashError`` when that secret is missing or not an OpenSSH private key.
    public func pinnedHostKey(secrets: SecretValues) throws -> OpenSSHPublicKey? {
        for entry in files {
            if case .publicKeyOf(let name) = entry.source {
                return try publicKey(fromSecret: name, in: secrets, for: "[[files]] \(entry.path)")
            }
        }
        if secrets.value("ssh_host_ed25519_key") != nil {
            return try publicKey(fromSecret: "ssh_host_ed25519_key", in: secrets, for: "the pinned host key")
        }
        return nil
    }

    /// The names `known_hosts` should list for this host: the host name and `[check] address`
    /// (or `address`, when given, e.g. from `--address`), each as `[name]:port` when the SSH port
    /// is not 22.
    public func knownHostsNames(address: String? = nil) -> [String] {
        var names = [name]
        if let address = address ?? check?.address, !names.contains(address) { names.append(address) }
        if let port = check?.sshPort, port != 22 {
            names = names.map { "[\($0)]:\(port)" }
        }
        return names
    }

    /// A `known_hosts` line pinning `key` for this host: `bastet,bastet.local ssh-ed25519 AAAA…`
    /// (no trailing newline).
    public func knownHostsLine(key: OpenSSHPublicKey, address: String? = nil) -> String {
        knownHostsNames(address: address).joined(separator: ",") + " " + key.line
    }

    /// Decrypts the secrets and renders everything a flash needs, before any card is touched.
    ///
    /// - Throws: ``PiflashError`` from decryption (exit 1) or rendering (exit 2).
    public func bootstrap(identities: [AgeIdentity]) throws -> HostBootstrap {
        let secrets = try HostSecrets.load(for: self, identities: { identities })
        return try bootstrap(secrets: secrets)
    }

    /// Renders everything a flash needs from already-loaded secrets, and checks the values the
    /// canonical layout uses as Wi-Fi credentials (``checkWiFiValues(secrets:)``): what `flash`,
    /// the station and `hosts --check` all call, before any card.
    public func bootstrap(secrets: SecretValues) throws -> HostBootstrap {
        let files = try render(secrets: secrets)
        try checkWiFiValues(secrets: secrets)
        let key = try pinnedHostKey(secrets: secrets)
        return HostBootstrap(
            files: files, hostKey: key, knownHostsLine: key.map { knownHostsLine(key: $0) },
            digestKey: digestKey(secrets: secrets))
    }
}
