import ArgumentParser
import Foundation
import PiflashKit
import PiflashSecrets

/// `--hosts DIR`: where host files are looked up. Shared by every command that names a host.
struct HostsFolderOptions: ParsableArguments {
    @Option(
        name: .customLong("hosts"),
        help: ArgumentHelp(
            "The folder of host files (NAME.toml). Default: $PIFLASH_HOSTS, else ./hosts, else /etc/piflash/hosts.",
            valueName: "dir"))
    var directory: String?

    /// The catalog these options select.
    func catalog() throws -> HostCatalog {
        try HostCatalog(directory: directory)
    }
}

/// `--age-identity FILE`: an extra age identity for SOPS/age secrets.
struct AgeIdentityOptions: ParsableArguments {
    @Option(
        name: .customLong("age-identity"),
        help: ArgumentHelp(
            "An age identity file (AGE-SECRET-KEY-1… lines), used before $SOPS_AGE_KEY, $SOPS_AGE_KEY_FILE and ~/.config/sops/age/keys.txt.",
            valueName: "file"))
    var file: String?

    /// The identities to try, in order.
    func identities() throws -> [AgeIdentity] {
        try AgeIdentity.load(explicitFile: file, environment: ProcessInfo.processInfo.environment)
    }

    /// Whether any identity source exists at all, without reading it.
    var anySourceAvailable: Bool {
        let environment = ProcessInfo.processInfo.environment
        if file != nil || environment["SOPS_AGE_KEY"] != nil || environment["SOPS_AGE_KEY_FILE"] != nil { return true }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return FileManager.default.fileExists(atPath: home + "/.config/sops/age/keys.txt")
    }
}

/// `piflash hosts`: the host files — list and check them (the default), make a new host, rotate a
/// host's key, print its age recipient.
struct Hosts: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hosts",
        abstract: "List and check the host files; make a new host, rotate its key, print its age recipient.",
        discussion: """
            `piflash hosts [--check]` is `piflash hosts list`. `hosts new NAME` makes a new host \
            (SSH host key, SOPS secrets, host file), `hosts rotate-key NAME` puts a new host key in \
            its SOPS file, `hosts recipient NAME` prints its age recipient. See piflash(1) and \
            piflash-hosts(5).
            """,
        subcommands: [HostsList.self, HostsNew.self, HostsRotateKey.self, HostsRecipient.self],
        defaultSubcommand: HostsList.self
    )
}

/// A path relative to the current folder when it is inside it, else as is.
func displayPath(_ path: String) -> String {
    let current = FileManager.default.currentDirectoryPath
    let prefix = current.hasSuffix("/") ? current : current + "/"
    return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
}

/// Runs `body`; with `--json`, an error becomes one `{"ok":false,"host":…,"error":…,"exit_code":N}`
/// object on stdout (and the exit status), so a script reading JSON always gets a result.
func withJSONErrors(_ json: Bool, host: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as PiflashError where json {
        printJSON(.object([
            ("ok", false), ("host", .string(host)), ("error", .string(error.description)),
            ("exit_code", .int(Int64(error.status.rawValue))),
        ]))
        throw ExitCode(error.status.rawValue)
    }
}

/// Prints one JSON object on its own line on stdout.
func printJSON(_ value: JSONValue) {
    writeAll(value.serialized() + "\n", to: STDOUT_FILENO)
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
func formatTable(_ rows: [[String]]) -> String {
    guard let columns = rows.map(\.count).max(), columns > 0 else { return "" }
    var widths = Array(repeating: 0, count: columns)
    for row in rows {
        for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
    }
    var out = ""
    for row in rows {
        var line = ""
        for (index, cell) in row.enumerated() {
            if index == row.count - 1 {
                line += cell
            } else {
                line += cell + String(repeating: " ", count: widths[index] - cell.count + 2)
            }
        }
        while line.hasSuffix(" ") { line.removeLast() }
        out += line + "\n"
    }
    return out
}
