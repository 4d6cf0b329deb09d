import ArgumentParser
import Foundation
import PiflashKit

/// `piflash hosts rotate-key NAME`: a new SSH host key in the host's SOPS file.
struct HostsRotateKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Put a new SSH host key in a host's SOPS file; every other value is kept.",
        discussion: """
            Decrypts the host's SOPS file (its MAC checked), replaces the host key secret (the \
            secret of its public_key_of file, else ssh_host_ed25519_key) with a new ed25519 key, \
            and encrypts the whole file again with a fresh data key for the same age recipients: \
            every other value is kept byte for byte. Prints the old and new fingerprints, the new \
            known_hosts line and age recipient. The journal is not touched. Cards flashed before \
            carry the old key: flash the host again.
            """
    )

    @Argument(help: "The host (a NAME.toml in the hosts folder, or a path to a host file).")
    var host: String

    @OptionGroup var hosts: HostsFolderOptions
    @OptionGroup var age: AgeIdentityOptions

    @Flag(help: "Print one JSON object with the result on stdout.")
    var json = false

    func run() async throws {
        try withJSONErrors(json, host: host) { try rotate() }
    }

    func rotate() throws {
        let file = try hosts.catalog().load(host)
        let result = try HostKeyRotation.rotate(host: file, identities: try age.identities())
        if let note = SecretMemory.lockNote { writeAll("note: \(note)\n", to: STDERR_FILENO) }
        if json {
            printJSON(.object([
                ("ok", true), ("host", .string(file.catalogName)), ("secrets", .string(result.secretsPath)),
                ("old_host_key_fingerprint", .string(result.oldFingerprint)),
                ("host_key_fingerprint", .string(result.newKey.fingerprint)), ("known_hosts", .string(result.knownHostsLine)),
                ("age_recipient", .string(result.hostRecipient.description)),
            ]))
            return
        }
        writeAll(
            """
            new host key in \(displayPath(result.secretsPath)) (`\(result.secretName)`)
              old: \(result.oldFingerprint ?? "(none)")
              new: \(result.newKey.fingerprint)

            known_hosts line (replace the old one):
            \(result.knownHostsLine)

            age recipient of the host (replace the old one in .sops.yaml and run sops updatekeys):
            \(result.hostRecipient)

            """, to: STDOUT_FILENO)
    }
}
