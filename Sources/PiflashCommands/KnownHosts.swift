import ArgumentParser
import Foundation
import PiflashKit

/// `piflash known-hosts HOST`: the pinned `known_hosts` line(s).
struct KnownHosts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "known-hosts",
        abstract: "Print the known_hosts line pinning a host's SSH host key.",
        discussion: """
            Decrypts the host's secrets and derives the public key of its SSH host key (the \
            secret of its first `public_key_of` file, else the secret `ssh_host_ed25519_key`). \
            Prints `NAMES ssh-ed25519 AAAA…` where NAMES are the host name and its [check] \
            address (as [name]:port when [check] ssh_port is not 22). Append it to \
            ~/.ssh/known_hosts to trust the host before its first boot:

              piflash known-hosts bastet >> ~/.ssh/known_hosts
            """
    )

    @Argument(help: "The host (a NAME.toml in the hosts folder, or a path to a host file).")
    var host: String

    @OptionGroup var hosts: HostsFolderOptions
    @OptionGroup var age: AgeIdentityOptions

    @Option(help: ArgumentHelp("Also name the host by this address in the line.", valueName: "addr"))
    var address: String?

    @Flag(help: "Print the fingerprint (SHA256:…) on stderr too.")
    var fingerprint = false

    func run() async throws {
        let file = try hosts.catalog().load(host)
        for warning in file.warnings { writeAll("warning: \(warning)\n", to: STDERR_FILENO) }
        let secrets = try HostSecrets.load(for: file, identities: { try age.identities() })
        guard let key = try file.pinnedHostKey(secrets: secrets) else {
            throw PiflashError.usage(
                "\(file.filePath) pins no SSH host key: it has no `public_key_of` file and its secrets have no `ssh_host_ed25519_key`",
                path: file.filePath)
        }
        writeAll(file.knownHostsLine(key: key, address: address) + "\n", to: STDOUT_FILENO)
        if fingerprint { writeAll("\(file.name): \(key.fingerprint)\n", to: STDERR_FILENO) }
    }
}
