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

/// `piflash hosts`: list the host files, or validate them all.
struct Hosts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hosts",
        abstract: "List the host files, or check them all.",
        discussion: """
            Lists every NAME.toml in the hosts folder with its image, where its secrets come from \
            and how many files it injects.

            With --check, every host file is parsed and validated (unknown keys, paths, modes, \
            templates). Hosts whose secrets are a plain `dir` are also rendered; SOPS and age \
            secrets are decrypted and rendered too when an age identity is available \
            (--age-identity FILE, $SOPS_AGE_KEY, $SOPS_AGE_KEY_FILE or ~/.config/sops/age/keys.txt). \
            Nothing secret is printed. Exits 2 when any host file is bad. See piflash-hosts(5).
            """
    )

    @OptionGroup var hosts: HostsFolderOptions
    @OptionGroup var age: AgeIdentityOptions

    @Flag(help: "Parse, validate and (with an age identity) decrypt and render every host file.")
    var check = false

    @Flag(help: "One JSON object per host on stdout.")
    var json = false

    func run() async throws {
        let catalog = try hosts.catalog()
        let names = try catalog.names()
        if names.isEmpty && !json {
            writeAll("no host files (*.toml) in \(catalog.directory) (from \(catalog.origin))\n", to: STDERR_FILENO)
        }
        if check {
            try runCheck(catalog, names)
        } else {
            list(catalog, names)
        }
    }

    private func list(_ catalog: HostCatalog, _ names: [String]) {
        var rows: [[String]] = [["HOST", "IMAGE", "SECRETS", "FILES"]]
        for name in names {
            do {
                let host = try catalog.load(name)
                let image = host.image.build.map { "build: " + $0.joined(separator: " ") }
                    ?? host.image.path.map { displayPath($0) } ?? "-"
                if json {
                    printJSON(.object([
                        ("host", .string(name)), ("hostname", .string(host.name)), ("file", .string(host.filePath)),
                        ("image", .string(host.image.path)),
                        ("build", host.image.build.map { .array($0.map { .string($0) }) } ?? .null),
                        ("secrets", .string(secretsKind(host))), ("files", .int(Int64(host.files.count))),
                        ("ok", true),
                    ]))
                } else {
                    rows.append([name, image, secretsKind(host) ?? "-", String(host.files.count)])
                }
            } catch {
                if json {
                    printJSON(.object([("host", .string(name)), ("ok", false), ("error", .string("\(error)"))]))
                } else {
                    rows.append([name, "(invalid: run piflash hosts --check)", "-", "-"])
                }
            }
        }
        if !json && rows.count > 1 { writeAll(formatTable(rows), to: STDOUT_FILENO) }
    }

    private func runCheck(_ catalog: HostCatalog, _ names: [String]) throws {
        var bad = 0
        var identities: [AgeIdentity]?
        var identityError: String?
        for name in names {
            var fields: [(String, JSONValue)] = [("host", .string(name))]
            do {
                let host = try catalog.load(name)
                if json {
                    fields.append(("warnings", .array(host.warnings.map { .string($0) })))
                } else {
                    for warning in host.warnings { writeAll("warning: \(warning)\n", to: STDERR_FILENO) }
                }
                var summary = "\(host.files.count) file\(host.files.count == 1 ? "" : "s")"
                var rendered = false
                var fingerprint: String?
                if !host.needsAgeIdentities {
                    let bootstrap = try host.bootstrap(secrets: HostSecrets.load(for: host, identities: { [] }))
                    rendered = true
                    fingerprint = bootstrap.hostKey?.fingerprint
                } else {
                    if identities == nil && identityError == nil && age.anySourceAvailable {
                        do {
                            identities = try age.identities()
                        } catch {
                            identityError = "\(error)"
                        }
                    }
                    if let identities, !identities.isEmpty {
                        let bootstrap = try host.bootstrap(identities: identities)
                        rendered = true
                        fingerprint = bootstrap.hostKey?.fingerprint
                    } else {
                        summary += ", secrets not decrypted (" + (identityError ?? "no age identity: give --age-identity FILE") + ")"
                    }
                }
                if rendered { summary += ", rendered" }
                if let fingerprint { summary += ", host key \(fingerprint)" }
                if json {
                    fields += [
                        ("ok", true), ("files", .int(Int64(host.files.count))), ("rendered", .bool(rendered)),
                        ("host_key_fingerprint", .string(fingerprint)),
                    ]
                    printJSON(.object(fields))
                } else {
                    writeAll("✓ \(name): \(summary)\n", to: STDOUT_FILENO)
                }
            } catch {
                bad += 1
                let status = (error as? PiflashError)?.status.rawValue ?? ExitStatus.failure.rawValue
                if json {
                    fields += [("ok", false), ("error", .string("\(error)")), ("exit_code", .int(Int64(status)))]
                    printJSON(.object(fields))
                } else {
                    writeAll("✗ \(name): \(error)\n", to: STDOUT_FILENO)
                }
            }
        }
        if bad > 0 {
            if !json {
                writeAll("\(bad) of \(names.count) host file\(names.count == 1 ? "" : "s") failed the check\n", to: STDERR_FILENO)
            }
            throw ExitCode(ExitStatus.usage.rawValue)
        }
    }

    private func secretsKind(_ host: HostFile) -> String? {
        switch host.secrets {
        case .sops?: return "sops"
        case .age?: return "age"
        case .dir?: return "dir"
        case nil: return nil
        }
    }
}

/// A path relative to the current folder when it is inside it, else as is.
func displayPath(_ path: String) -> String {
    let current = FileManager.default.currentDirectoryPath
    let prefix = current.hasSuffix("/") ? current : current + "/"
    return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
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
