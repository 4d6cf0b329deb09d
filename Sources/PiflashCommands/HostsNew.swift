import ArgumentParser
import Foundation
import PiflashKit
import PiflashSecrets

/// `piflash hosts new NAME`: a new Pi's identity made here.
struct HostsNew: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new",
        abstract: "Make a new host: an SSH host key, SOPS secrets and the host file.",
        discussion: """
            Generates an ed25519 host key in memory (comment root@NAME), and writes \
            secrets/NAME.yaml (or .json, .env) in the hosts folder, encrypted natively as sops \
            encrypts it (each value AES-256-GCM, the MAC, the data key age-encrypted to each \
            recipient), with the key and, with --wifi-ssid, the Wi-Fi network name and passphrase; \
            and NAME.toml with the three canonical bootstrap files and [secrets] sops = …. The \
            recipients are --age-recipient, else those of the first creation rule of the nearest \
            .sops.yaml (searched upward from the hosts folder) whose path_regex matches the new \
            file. The passphrase is read from standard input with --wifi-psk-stdin, else asked \
            twice on the terminal without echo. Nothing is written when anything is wrong (exit 2): \
            an existing host, a bad SSID (1–32 bytes) or passphrase (8–63 printable ASCII \
            characters, or 64 hex digits), an unwritable folder. Prints the known_hosts line, the \
            key's fingerprint and the host's age recipient (ssh-to-age of its key), which \
            --add-recipient adds to the matching .sops.yaml rule for sops-nix on the host. \
            Decrypted secrets never reach a disk; see piflash(1).
            """
    )

    @Argument(help: "The new host's name (letters, digits, hyphens): NAME.toml, hostname and key comment.")
    var name: String

    @OptionGroup var hosts: HostsFolderOptions

    @Option(name: .customLong("wifi-ssid"), help: ArgumentHelp("The Wi-Fi network name (1–32 bytes). Without it the host gets no Wi-Fi file.", valueName: "ssid"))
    var wifiSSID: String?

    @Flag(name: .customLong("wifi-psk-stdin"), help: "Read the Wi-Fi passphrase from standard input (one final newline is dropped).")
    var wifiPSKStdin = false

    @Option(
        name: .customLong("age-recipient"),
        help: ArgumentHelp("Encrypt to this age recipient (age1…); repeat for several. Default: the matching .sops.yaml rule's.", valueName: "age"))
    var ageRecipients: [String] = []

    @Option(help: ArgumentHelp("The SOPS file's format: yaml, json or dotenv.", valueName: "format"))
    var format = "yaml"

    @Option(help: ArgumentHelp("The host's image (a file, or a folder with one image) for [image] path.", valueName: "path"))
    var image: String?

    @Flag(name: .customLong("add-recipient"), help: "Add the host's own age recipient to the matching .sops.yaml creation rule.")
    var addRecipient = false

    @Flag(help: "Print one JSON object with the result on stdout.")
    var json = false

    func validate() throws {
        if wifiPSKStdin && wifiSSID == nil { throw ValidationError("--wifi-psk-stdin needs --wifi-ssid") }
        guard ["yaml", "json", "dotenv"].contains(format) else { throw ValidationError("--format is yaml, json or dotenv") }
    }

    func run() async throws {
        try withJSONErrors(json, host: name) { try make() }
    }

    func make() throws {
        let catalog = try hosts.catalog()
        let ssid = wifiSSID.map { Array($0.utf8) }
        if let ssid, let problem = WiFiRules.ssidProblem(ssid) {
            throw PiflashError.usage("--wifi-ssid: \(problem.description)")
        }
        let current = FileManager.default.currentDirectoryPath
        let imagePath = image.map { $0.hasPrefix("/") ? $0 : current + "/" + $0 }
        if let imagePath, !FileManager.default.fileExists(atPath: imagePath) {
            throw PiflashError.usage("--image \(image!): no such file or folder", path: imagePath)
        }
        let plan = try HostCreation.plan(
            HostCreation.Request(
                name: name, hostsFolder: catalog.directory, ageRecipients: ageRecipients, format: format, imagePath: imagePath,
                addRecipient: addRecipient, wifi: ssid != nil))
        // From here on the process holds secrets (the passphrase first): no core file.
        SecretMemory.protectProcess()
        var psk: LockedBytes?
        if let ssid {
            psk = try readPassphrase(ssid: String(decoding: ssid, as: UTF8.self))
        }
        let result = try HostCreation.create(plan, ssid: ssid, psk: psk)
        psk = nil
        report(result)
    }

    /// The passphrase from stdin or the terminal, validated by ``WiFiRules``.
    func readPassphrase(ssid: String) throws -> LockedBytes {
        let passphrase: LockedBytes
        if wifiPSKStdin {
            passphrase = try SecretPrompt.readStandardInput()
        } else if SecretPrompt.isInteractive {
            passphrase = try SecretPrompt.read(prompt: "Wi-Fi passphrase for \(ssid): ")
            let again = try SecretPrompt.read(prompt: "The same passphrase again: ")
            guard passphrase.equals(again) else { throw PiflashError.usage("the two passphrases differ; nothing was written") }
        } else {
            throw PiflashError.usage(
                "--wifi-ssid needs the passphrase: give --wifi-psk-stdin and pipe it in, or run on a terminal to be asked",
                hint: "e.g. pass show wifi/home | piflash hosts new NAME --wifi-ssid home --wifi-psk-stdin")
        }
        var copy = passphrase.bytes
        defer { LockedBytes.wipe(&copy) }
        if let problem = WiFiRules.pskProblem(copy) {
            throw PiflashError.usage("the Wi-Fi passphrase is not usable: \(problem.description); nothing was written")
        }
        return passphrase
    }

    func report(_ result: HostCreation.Result) {
        if let note = SecretMemory.lockNote { writeAll("note: \(note)\n", to: STDERR_FILENO) }
        if json {
            printJSON(.object([
                ("ok", true), ("host", .string(name)), ("host_file", .string(result.hostFilePath)),
                ("secrets", .string(result.secretsPath)), ("host_key_fingerprint", .string(result.hostKey.fingerprint)),
                ("known_hosts", .string(result.knownHostsLine)), ("age_recipient", .string(result.hostRecipient.description)),
                ("recipients", .array(result.recipients.map { .string($0.description) })),
                ("recipients_from", .string(result.recipientsOrigin)),
                ("sops_config_edited", .string(result.editedConfig)),
            ]))
            return
        }
        let count = result.recipients.count
        var text = """
            created \(displayPath(result.hostFilePath)) and \(displayPath(result.secretsPath))
              encrypted to \(count) age recipient\(count == 1 ? "" : "s") from \(result.recipientsOrigin)
            host key: \(result.hostKey.fingerprint) (ED25519, root@\(name))

            known_hosts line (pin it before first boot):
            \(result.knownHostsLine)

            age recipient of the host (ssh-to-age of its key, for sops-nix on the host):
            \(result.hostRecipient)

            """
        if let edited = result.editedConfig {
            text += "added it to \(displayPath(edited)); run `sops updatekeys FILE` on the files the host should read\n"
        } else if result.configAlreadyHadRecipient {
            text += "the matching .sops.yaml rule already lists it\n"
        }
        writeAll(text, to: STDOUT_FILENO)
    }
}
