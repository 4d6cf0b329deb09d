import ArgumentParser
import Foundation
import PiflashKit

/// `piflash hosts recipient NAME`: the host's age recipient from its pinned key.
struct HostsRecipient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recipient",
        abstract: "Print the host's age recipient (ssh-to-age of its pinned SSH host key).",
        discussion: """
            Decrypts the host's secrets, takes its pinned SSH host key (as known-hosts does) and \
            prints the age recipient (age1…) its private half decrypts for once converted, as \
            ssh-to-age and sops-nix convert it: the Edwards point mapped to Montgomery form. Add it \
            to .sops.yaml so the host can decrypt its runtime secrets with its own key.
            """
    )

    @Argument(help: "The host (a NAME.toml in the hosts folder, or a path to a host file).")
    var host: String

    @OptionGroup var hosts: HostsFolderOptions
    @OptionGroup var age: AgeIdentityOptions

    func run() async throws {
        let file = try hosts.catalog().load(host)
        let needsIdentities: Bool
        switch file.secrets {
        case .sops?, .age?: needsIdentities = true
        default: needsIdentities = false
        }
        let secrets = try HostSecrets.load(for: file, identities: needsIdentities ? try age.identities() : [])
        guard let key = try file.pinnedHostKey(secrets: secrets) else {
            throw PiflashError.usage(
                "\(file.filePath) pins no SSH host key: it has no `public_key_of` file and its secrets have no `ssh_host_ed25519_key`",
                path: file.filePath)
        }
        writeAll(try key.ageRecipient().description + "\n", to: STDOUT_FILENO)
    }
}
