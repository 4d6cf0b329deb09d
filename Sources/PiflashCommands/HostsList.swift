import ArgumentParser
import Foundation
import PiflashKit
import PiflashSecrets

/// `piflash hosts list` (or `piflash hosts`): list the host files, or validate them all.
struct HostsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the host files, or check them all (the default of `piflash hosts`).",
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
                switch host.secrets {
                case .dir?, nil:
                    let bootstrap = try host.bootstrap(identities: [])
                    rendered = true
                    fingerprint = bootstrap.hostKey?.fingerprint
                case .sops?, .age?:
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
