import ArgumentParser
import Foundation
import PiflashCheck
import PiflashKit
import PiflashSecrets

/// `piflash check HOST`: after first boot, wait for the host, compare its SSH host key with the
/// pinned one, then run its tcp and http checks.
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "After first boot: wait for a host, check its SSH host key against the pinned one, run its checks.",
        discussion: """
            Waits (with backoff, up to --timeout) until the host's SSH port answers, fetches its SSH \
            host key with a real SSH key exchange (no authentication is attempted) and compares it \
            with the pinned key derived from the host's secrets. Then runs the host file's \
            [[check.tcp]] and [[check.http]] entries ({address} is replaced by the address), \
            reporting each with its latency.

            The address is --address, else [check] address, else HOST.local; the SSH port is \
            --ssh-port, else [check] ssh_port, else 22. With --scan CIDR the address is found instead: \
            piflash runs the SSH key exchange with every address of the block you name that answers \
            on the SSH port (at most 256 connections at once, 1 s to connect and 3 s for the exchange \
            per address, a /16 at most), in rounds until --timeout, and uses the address whose server \
            presents the pinned key — proof that it is the host. Servers presenting other keys are \
            reported as not the host. No address is ever scanned unless you name the block. --pinned-key overrides the pinned key (an \
            `ssh-ed25519 AAAA…` line or a .pub file); the host file is then optional.

            Exit status: 0 when the key matches and every check passes; 1 when the host did not \
            answer in time or a check failed; 2 for a usage or host file error; 4 when the host \
            presents another key than the pinned one (both fingerprints are printed). With --scan, \
            exit 1 when no address in the block presents the pinned key within --timeout.
            """
    )

    @Argument(help: ArgumentHelp("The host: a name in the hosts folder, or the path of a host file.", valueName: "host"))
    var host: String

    @Option(help: ArgumentHelp("The name or address to reach. Default: [check] address, else HOST.local.", valueName: "addr"))
    var address: String?

    @Option(name: .customLong("ssh-port"), help: ArgumentHelp("The SSH port. Default: [check] ssh_port, else 22.", valueName: "n"))
    var sshPort: Int?

    @Option(
        help: ArgumentHelp(
            "Find the host in this address block (e.g. 192.168.1.0/24, at most a /16): the address whose SSH server presents the pinned key.",
            valueName: "cidr"))
    var scan: String?

    @Option(help: ArgumentHelp("Seconds to wait for the SSH port to answer (with --scan: to find the host).", valueName: "seconds"))
    var timeout: Double = 300

    @OptionGroup var hostsFolder: HostsFolderOptions
    @OptionGroup var ageIdentity: AgeIdentityOptions
    @OptionGroup var outputOptions: OutputOptions

    @Option(
        name: .customLong("pinned-key"),
        help: ArgumentHelp(
            "The key the host must present, instead of the one derived from its secrets: an `ssh-ed25519 AAAA…` line or a .pub file.",
            valueName: "line-or-file"))
    var pinnedKey: String?

    @Flag(
        name: .customLong("write-known-hosts"),
        help: "Add the PINNED key (never the observed one) for the host name and address to ~/.ssh/known_hosts, unless it is there already.")
    var writeKnownHosts = false

    func validate() throws {
        guard timeout.isFinite, timeout > 0 else {
            throw ValidationError("--timeout must be a positive number of seconds")
        }
        if let sshPort, !(1...65535).contains(sshPort) {
            throw ValidationError("--ssh-port must be between 1 and 65535")
        }
        if let address, address.isEmpty {
            throw ValidationError("--address must not be empty")
        }
        if scan != nil && address != nil {
            throw ValidationError("--scan finds the address: give either --scan or --address, not both")
        }
    }

    func run() async throws {
        let output = CheckOutput(json: outputOptions.json)
        let plan: HostCheckPlan
        do {
            plan = try makePlan(output: output)
        } catch let error as PiflashError {
            output.finish(host: host, error: error)
            throw ExitCode(error.status.rawValue)
        }
        let result = await HostCheck.run(plan) { event in output.event(event) }
        if writeKnownHosts, let found = result.scan?.matches.first {
            do {
                try pinKnownHosts(name: plan.host, address: found, port: plan.sshPort, key: plan.pinnedKey, output: output)
            } catch let error as PiflashError {
                output.warning(error.description)
            }
        }
        output.finish(result)
        if result.exitStatus != .success {
            throw ExitCode(result.exitStatus.rawValue)
        }
    }

    /// Resolves the host file, the pinned key, the address and the port; writes known_hosts
    /// when asked (the pinned key is trusted before first contact).
    private func makePlan(output: CheckOutput) throws -> HostCheckPlan {
        let hostFile: HostFile?
        do {
            hostFile = try hostsFolder.catalog().load(host)
        } catch let error as PiflashError where pinnedKey != nil {
            output.warning("no usable host file for \(host) (\(error.description)); checking with the command line only")
            hostFile = nil
        }

        let name = hostFile?.name ?? host
        let range = try scan.map { try AddressRange(cidr: $0) }
        let key = try resolvePinnedKey(hostFile: hostFile)
        let address = range.map(\.description) ?? address ?? hostFile?.check?.address ?? "\(name).local"
        let port = sshPort ?? hostFile?.check?.sshPort ?? 22

        // The pinned key is trusted before first contact; with --scan, once the scan found the address.
        if writeKnownHosts && range == nil {
            try pinKnownHosts(name: name, address: address, port: port, key: key, output: output)
        }

        return HostCheckPlan(
            host: name, address: address, sshPort: port, timeout: timeout, pinnedKey: key,
            tcpPorts: hostFile?.check?.tcp ?? [], httpURLs: hostFile?.check?.http ?? [], scan: range)
    }

    /// Adds the pinned key for the host name and `address` to `~/.ssh/known_hosts`, unless it is there.
    private func pinKnownHosts(name: String, address: String, port: Int, key: SSHHostKey, output: CheckOutput) throws {
        let file = try KnownHostsFile.userDefault(environment: ProcessInfo.processInfo.environment)
        var names = [name]
        if address != name { names.append(address) }
        let patterns = names.map { KnownHostsFile.hostPattern(address: $0, port: port) }
        let added = try file.add(patterns: patterns, key: key)
        output.note(
            added.isEmpty
                ? "\(file.path) already pins \(key.fingerprint) for \(patterns.joined(separator: ", "))"
                : "added the pinned key \(key.fingerprint) for \(added.joined(separator: ", ")) to \(file.path)")
    }

    /// `--pinned-key` (a line, or a file holding one), else the key derived from the host's secrets.
    private func resolvePinnedKey(hostFile: HostFile?) throws -> SSHHostKey {
        if let pinnedKey {
            let trimmed = pinnedKey.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.hasPrefix("ssh-") || trimmed.hasPrefix("ecdsa-") {
                return try SSHHostKey(line: trimmed)
            }
            guard let data = FileManager.default.contents(atPath: pinnedKey) else {
                throw PiflashError.usage(
                    "--pinned-key: \(pinnedKey) is neither an `ssh-ed25519 AAAA…` line nor a readable file", path: pinnedKey)
            }
            let line = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
                .first { !$0.hasPrefix("#") && !$0.allSatisfy(\.isWhitespace) }
            do {
                return try SSHHostKey(line: String(line ?? ""))
            } catch var error as PiflashError {
                error.message = "--pinned-key \(pinnedKey): " + error.message
                error.path = pinnedKey
                throw error
            }
        }
        guard let hostFile else {
            preconditionFailure("a host file is loaded unless --pinned-key is given")
        }
        let identities: [AgeIdentity]
        switch hostFile.secrets {
        case .sops?, .age?:
            identities = try ageIdentity.identities()
        case .dir?, nil:
            identities = []
        }
        let secrets = try HostSecrets.load(for: hostFile, identities: identities)
        guard let key = try hostFile.pinnedHostKey(secrets: secrets) else {
            throw PiflashError.usage(
                "\(hostFile.name) pins no SSH host key: its host file has no `public_key_of` file and its secrets no `ssh_host_ed25519_key`",
                path: hostFile.filePath,
                hint: "add the host key to its secrets, or pass the key to expect with --pinned-key")
        }
        return try SSHHostKey(blob: key.blob)
    }
}

/// Where `piflash check` speaks: JSON lines on stdout, or lines for a human (progress and the
/// summary on stdout, the error on stderr).
private struct CheckOutput: Sendable {
    var json: Bool

    func event(_ event: HostCheckEvent) {
        if json {
            writeAll(event.json.serialized() + "\n", to: STDOUT_FILENO)
        } else if let line = event.humanLine {
            writeAll(line + "\n", to: STDOUT_FILENO)
        }
    }

    func note(_ message: String) {
        if json {
            writeAll(JSONValue.object([("event", "info"), ("message", .string(message))]).serialized() + "\n", to: STDOUT_FILENO)
        } else {
            writeAll(message + "\n", to: STDOUT_FILENO)
        }
    }

    func warning(_ message: String) {
        if json {
            writeAll(JSONValue.object([("event", "warning"), ("message", .string(message))]).serialized() + "\n", to: STDOUT_FILENO)
        } else {
            writeAll("warning: " + message + "\n", to: STDERR_FILENO)
        }
    }

    /// The end of a check that ran.
    func finish(_ result: HostCheckResult) {
        if json {
            writeAll(result.json.serialized() + "\n", to: STDOUT_FILENO)
            return
        }
        if let error = result.error {
            writeAll("piflash: error: \(error.description)\n", to: STDERR_FILENO)
            return
        }
        let checks = result.checks.isEmpty ? "" : ", \(result.checks.count) check\(result.checks.count == 1 ? "" : "s") passed"
        writeAll(
            "✓ \(result.host) at \(result.address):\(result.port): host key \(result.observedFingerprint ?? "?") as pinned\(checks)\n",
            to: STDOUT_FILENO)
    }

    /// The end of a check that could not start (bad host file, no pinned key…).
    func finish(host: String, error: PiflashError) {
        if json {
            let object = JSONValue.object([
                ("event", "result"), ("ok", false), ("host", .string(host)), ("address", .null), ("port", .null),
                ("expected_fingerprint", .null), ("observed_fingerprint", .null), ("waited_seconds", .null),
                ("checks", .array([])), ("error", .string(error.description)),
                ("exit_code", .int(Int64(error.status.rawValue))),
            ])
            writeAll(object.serialized() + "\n", to: STDOUT_FILENO)
        } else {
            writeAll("piflash: error: \(error.description)\n", to: STDERR_FILENO)
        }
    }
}
