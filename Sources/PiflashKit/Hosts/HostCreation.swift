import Foundation
import PiflashPlatform
import PiflashSecrets

/// `piflash hosts new`: a new host's identity made on this machine — an ed25519 host key, a
/// SOPS file with the key and the Wi-Fi credentials encrypted natively to age recipients, the
/// host file, and optionally the host's own age recipient in `.sops.yaml`.
///
/// Everything is decided before anything is written (``plan(_:)``); then the files appear
/// whole or not at all (temporary file + link, 0600 for the SOPS file), and a failure of a
/// later step removes what an earlier one wrote.
public enum HostCreation {
    /// What the user asked for.
    public struct Request {
        public var name: String
        /// The hosts folder (absolute).
        public var hostsFolder: String
        /// `--age-recipient`, in order; empty: from `.sops.yaml`.
        public var ageRecipients: [String]
        /// `yaml`, `json` or `dotenv`.
        public var format: String
        /// `--image`, absolute; nil for none.
        public var imagePath: String?
        /// `--add-recipient`.
        public var addRecipient: Bool
        /// Whether the host gets Wi-Fi (an SSID was given).
        public var wifi: Bool

        public init(name: String, hostsFolder: String, ageRecipients: [String], format: String, imagePath: String?, addRecipient: Bool, wifi: Bool) {
            self.name = name
            self.hostsFolder = hostsFolder
            self.ageRecipients = ageRecipients
            self.format = format
            self.imagePath = imagePath
            self.addRecipient = addRecipient
            self.wifi = wifi
        }
    }

    /// The decisions: where every file goes and whom the secrets are encrypted to.
    public struct Plan {
        public var request: Request
        public var hostFilePath: String
        public var secretsPath: String
        /// `secrets/NAME.yaml`, as the host file names it.
        public var secretsRelativePath: String
        public var recipients: [AgeRecipient]
        /// Where the recipients came from (`--age-recipient`, or the rule and file).
        public var recipientsOrigin: String
        public var rules: SOPSEncryptionRules
        /// The `.sops.yaml` and its matching rule, when one was found.
        public var config: SOPSConfig?
        public var rule: SOPSConfig.Rule?
        /// The `secrets/` folder must be created.
        public var createsSecretsFolder: Bool
    }

    /// What was made.
    public struct Result {
        public var hostFilePath: String
        public var secretsPath: String
        public var hostKey: OpenSSHPublicKey
        public var knownHostsLine: String
        /// The host's own age recipient (ssh-to-age of its key).
        public var hostRecipient: AgeRecipient
        public var recipients: [AgeRecipient]
        public var recipientsOrigin: String
        /// The `.sops.yaml` that gained the host's recipient, if any.
        public var editedConfig: String?
        /// Set when `--add-recipient` found the recipient already there.
        public var configAlreadyHadRecipient = false
    }

    /// A host name usable as a file name, a hostname and a key comment: an RFC 1123 label.
    public static func nameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        let allowed: (UInt8) -> Bool = { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
        guard (1...63).contains(bytes.count), bytes.allSatisfy(allowed), bytes.first != 0x2D, bytes.last != 0x2D else {
            return "a host name is 1–63 letters, digits and hyphens, not starting or ending with a hyphen (it becomes the file name and the hostname)"
        }
        return nil
    }

    /// Decides everything and checks everything that can be checked before writing.
    ///
    /// - Throws: ``PiflashError`` (exit 2): a bad name, an existing host or secrets file, an
    ///   unwritable folder, no recipients (no `.sops.yaml` rule and no `--age-recipient`), a
    ///   rule with keys piflash cannot encrypt to, `--add-recipient` without a `.sops.yaml`.
    public static func plan(_ request: Request) throws -> Plan {
        if let problem = nameProblem(request.name) { throw PiflashError.usage("`\(request.name)` is not a usable host name: \(problem)") }
        // One spelling of the folder (no `.`/`..`), so paths relative to .sops.yaml's folder match.
        let folder = URL(fileURLWithPath: request.hostsFolder).standardizedFileURL.path
        var request = request
        request.hostsFolder = folder
        let hostFile = folder + "/" + request.name + ".toml"
        let extensionName: String
        switch request.format {
        case "yaml": extensionName = "yaml"
        case "json": extensionName = "json"
        case "dotenv": extensionName = "env"
        default: throw PiflashError.usage("--format is yaml, json or dotenv, not \(request.format)")
        }
        let relative = "secrets/" + request.name + "." + extensionName
        let secretsFolder = folder + "/secrets"
        let secrets = folder + "/" + relative
        for path in [hostFile, secrets] where FileManager.default.fileExists(atPath: path) {
            throw PiflashError.usage(
                "\(path) already exists: `hosts new` never overwrites a host", path: path,
                hint: "choose another name, or `piflash hosts rotate-key \(request.name)` for a new key in the existing host")
        }
        if let problem = AtomicFile.writeProblem(folder: folder) {
            throw PiflashError.usage("cannot write in the hosts folder \(folder): \(problem)", path: folder)
        }
        var isFolder: ObjCBool = false
        let secretsFolderExists = FileManager.default.fileExists(atPath: secretsFolder, isDirectory: &isFolder)
        if secretsFolderExists && !isFolder.boolValue {
            throw PiflashError.usage("\(secretsFolder) exists and is not a folder", path: secretsFolder)
        }
        if secretsFolderExists, let problem = AtomicFile.writeProblem(folder: secretsFolder) {
            throw PiflashError.usage("cannot write in the secrets folder \(secretsFolder): \(problem)", path: secretsFolder)
        }

        let config = try SOPSConfig.find(from: folder)
        var rule: SOPSConfig.Rule?
        if let config { rule = try config.rule(for: secrets) }
        var recipientTexts = request.ageRecipients
        var origin = "--age-recipient"
        var rules = SOPSEncryptionRules()
        if recipientTexts.isEmpty {
            guard let config else {
                throw PiflashError.usage(
                    "no age recipients: give --age-recipient AGE, or create a .sops.yaml (in \(folder) or above) with a creation rule for \(relative)",
                    hint: "see piflash(1), ADDING A PI")
            }
            guard let rule else {
                throw PiflashError.usage(
                    "no creation rule of \(config.path) matches \(secrets) (path_regex is matched against \(secrets.dropFirst(config.folder.count + 1)))",
                    path: config.path, hint: "add a rule whose path_regex matches, or give --age-recipient AGE")
            }
            guard rule.otherKeys.isEmpty, rule.keyGroupCount == 1 else {
                let what = rule.keyGroupCount > 1 ? ["\(rule.keyGroupCount) key groups (Shamir)"] : rule.otherKeys
                throw PiflashError.usage(
                    "creation rule \(rule.index + 1) of \(config.path) uses \(what.joined(separator: ", ")); piflash encrypts natively to age recipients only",
                    path: config.path, hint: "give --age-recipient AGE, or use a rule with age recipients only")
            }
            guard !rule.ageRecipients.isEmpty else {
                throw PiflashError.usage("creation rule \(rule.index + 1) of \(config.path) has no age recipients", path: config.path)
            }
            recipientTexts = rule.ageRecipients
            origin = "creation rule \(rule.index + 1) of \(config.path)"
            rules = rule.encryption
        } else if let rule {
            rules = rule.encryption
        }
        var recipients: [AgeRecipient] = []
        for text in recipientTexts {
            let recipient: AgeRecipient
            do {
                recipient = try AgeRecipient(text)
            } catch let error as PiflashError {
                throw PiflashError.usage(error.message + " (from \(origin))", path: config?.path, hint: error.hint)
            }
            if !recipients.contains(recipient) { recipients.append(recipient) }
        }
        // Every value must be encrypted under the rule.
        for name in [CanonicalLayout.hostKeySecret, CanonicalLayout.wifiSSIDSecret, CanonicalLayout.wifiPSKSecret] {
            guard try rules.encrypts([name]) else {
                throw PiflashError.usage(
                    "the SOPS rule (\(rules)) would leave `\(name)` unencrypted; piflash refuses to write a secret in the clear",
                    path: config?.path, hint: "change the creation rule so every value is encrypted")
            }
        }
        if request.addRecipient {
            guard let config, let rule else {
                throw PiflashError.usage(
                    "--add-recipient needs a .sops.yaml with a creation rule matching \(relative) (none found from \(folder) upward)")
            }
            guard rule.keyGroupCount == 1 else {
                throw PiflashError.usage("creation rule \(rule.index + 1) of \(config.path) uses key groups; add the recipient by hand", path: config.path)
            }
        }
        return Plan(
            request: request, hostFilePath: hostFile, secretsPath: secrets, secretsRelativePath: relative, recipients: recipients,
            recipientsOrigin: origin, rules: rules, config: config, rule: rule, createsSecretsFolder: !secretsFolderExists)
    }

    /// Generates the key, encrypts, writes. The Wi-Fi values must already be valid
    /// (``WiFiRules``); they are wiped from the tree after encryption.
    ///
    /// - Parameters:
    ///   - ssid: the network name, or nil for a host without Wi-Fi.
    ///   - psk: the passphrase (locked memory), with `ssid`.
    /// - Throws: ``PiflashError`` (exit 2) when a file cannot be written; what was written is
    ///   removed again.
    public static func create(_ plan: Plan, ssid: [UInt8]?, psk: LockedBytes?) throws -> Result {
        precondition((ssid != nil) == plan.request.wifi && (ssid != nil) == (psk != nil), "Wi-Fi as planned")
        SecretMemory.protectProcess()
        let name = plan.request.name
        let key = OpenSSHPrivateKey.generate(comment: "root@" + name)
        let hostRecipient = try key.publicKey.ageRecipient()

        // The new .sops.yaml text, decided before anything is written.
        var editedConfig: String?
        var alreadyThere = false
        if plan.request.addRecipient, let config = plan.config, let rule = plan.rule {
            if let text = try config.addingRecipient(hostRecipient.description, toRule: rule.index) {
                editedConfig = text
            } else {
                alreadyThere = true
            }
        }

        // The plaintext lives in these arrays (and in the tree built from them inside
        // `encrypt`, gone when it returns); they are zeroed on every path out.
        var pem = key.pem
        var passphrase = psk?.bytes ?? []
        defer {
            LockedBytes.wipe(&pem)
            LockedBytes.wipe(&passphrase)
        }
        let fileBytes = try encrypt(pem: pem, ssid: ssid, psk: psk == nil ? nil : passphrase, plan: plan)

        let hostsFolder = plan.request.hostsFolder
        let imageRelative = plan.request.imagePath.map { relativePath(from: hostsFolder, to: $0) }
        let toml = CanonicalHostFile.toml(
            name: name, secretsPath: plan.secretsRelativePath, imagePath: imageRelative, wifi: ssid != nil)
        // The host file must read back as a valid host file before it is written.
        let parsed = try HostFile.parse(toml, path: plan.hostFilePath)
        precondition(parsed.files.count == (ssid == nil ? 2 : 3), "the canonical host file has the canonical files")

        let secretsFolder = hostsFolder + "/secrets"
        let madeFolder = try AtomicFile.makeFolder(secretsFolder)
        var written: [String] = []
        do {
            try AtomicFile.createNew(plan.secretsPath, content: fileBytes, mode: 0o600)
            written.append(plan.secretsPath)
            try AtomicFile.createNew(plan.hostFilePath, content: Array(toml.utf8), mode: 0o644)
            written.append(plan.hostFilePath)
            if let editedConfig, let config = plan.config {
                try AtomicFile.replace(config.path, content: Array(editedConfig.utf8))
            }
        } catch {
            for path in written.reversed() { AtomicFile.remove(path) }
            if madeFolder { AtomicFile.removeFolder(secretsFolder) }
            throw error
        }
        let knownHosts = parsed.knownHostsLine(key: key.publicKey)
        return Result(
            hostFilePath: plan.hostFilePath, secretsPath: plan.secretsPath, hostKey: key.publicKey, knownHostsLine: knownHosts,
            hostRecipient: hostRecipient, recipients: plan.recipients, recipientsOrigin: plan.recipientsOrigin,
            editedConfig: editedConfig == nil ? nil : plan.config?.path, configAlreadyHadRecipient: alreadyThere)
    }

    /// The SOPS file of the canonical secrets.
    static func encrypt(pem: [UInt8], ssid: [UInt8]?, psk: [UInt8]?, plan: Plan) throws -> [UInt8] {
        var items: [(key: String, value: SOPSPlainNode)] = [(CanonicalLayout.hostKeySecret, .secret(pem))]
        if let ssid, let psk {
            items.append((CanonicalLayout.wifiSSIDSecret, .secret(ssid)))
            items.append((CanonicalLayout.wifiPSKSecret, .secret(psk)))
        }
        return try SOPSWriter.encrypt(.mapping(items), recipients: plan.recipients, rules: plan.rules, format: plan.request.format)
    }

    /// `to` relative to the folder `from` (both absolute), with `..` where needed.
    static func relativePath(from folder: String, to path: String) -> String {
        let base = URL(fileURLWithPath: folder).standardizedFileURL.pathComponents
        let target = URL(fileURLWithPath: path).standardizedFileURL.pathComponents
        var common = 0
        while common < base.count, common < target.count, base[common] == target[common] { common += 1 }
        if common <= 1 { return URL(fileURLWithPath: path).standardizedFileURL.path }
        let ups = Array(repeating: "..", count: base.count - common)
        let rest = Array(target[common...])
        let joined = (ups + rest).joined(separator: "/")
        return joined.isEmpty ? "." : joined
    }
}
