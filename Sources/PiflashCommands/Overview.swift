import ArgumentParser
import PiflashKit

/// What `piflash` with no arguments prints: the short usage, the commands, and the hosts of the
/// hosts folder (looked up as `piflash HOST` would: `$PIFLASH_HOSTS`, `./hosts`,
/// `/etc/piflash/hosts`), so a new user sees at once what they can flash.
enum Overview {
    /// The whole text, ending with a newline.
    /// - Parameter catalog: finds the hosts folder; its error becomes a line saying where it looked.
    static func text(catalog: () throws -> HostCatalog = { try HostCatalog(directory: nil) }) -> String {
        let commands = Piflash.configuration.subcommands.map { $0.configuration.commandName ?? "" }.filter { !$0.isEmpty }
        var out = """
            usage: piflash HOST [--device DEV | --output PATH] [--yes] [--wait SECONDS] [--json]
                   piflash COMMAND [OPTIONS]

            \(Piflash.configuration.abstract)
            Run `piflash HOST`, insert a card, and confirm.

            commands: \(commands.joined(separator: ", "))
            more: `piflash COMMAND --help`, `piflash --help`, man piflash

            """
        out += "\n" + hostsParagraph(catalog)
        return out
    }

    /// "hosts in DIR (from ORIGIN):" and the names wrapped to 80 columns, or why there are none.
    static func hostsParagraph(_ catalog: () throws -> HostCatalog) -> String {
        let found: HostCatalog
        do {
            found = try catalog()
        } catch {
            return "no hosts folder: neither ./hosts nor /etc/piflash/hosts exists, and $PIFLASH_HOSTS is not set.\n"
                + "Give `--hosts DIR`, or make a host with `piflash hosts new NAME --hosts DIR`.\n"
        }
        let names: [String]
        do {
            names = try found.names()
        } catch {
            return "the hosts folder \(found.directory) (from \(found.origin)) cannot be listed.\n"
        }
        if names.isEmpty {
            return "no host files (*.toml) in \(found.directory) (from \(found.origin)); "
                + "make one with `piflash hosts new NAME`.\n"
        }
        var out = "hosts in \(found.directory) (from \(found.origin)):\n"
        var line = ""
        for name in names {
            if line.count + 2 + name.count > 80, !line.isEmpty {
                out += line + "\n"
                line = ""
            }
            line += "  " + name
        }
        return out + line + "\n"
    }
}
