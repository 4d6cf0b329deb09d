import Foundation
import Testing

/// `--help` and the man pages never disagree: every command has a section in piflash(1) (the
/// station its own page, piflash-station(8)), and each section names exactly the long options the
/// command takes.
@Suite("--help and man/piflash.1 agree")
struct ManPageTests {
    struct Command {
        var name: String
        var options: Set<String>
        /// A command that only groups subcommands (`hosts`): documented by its subcommands.
        var isGroup = false
    }

    /// The commands and their long options, from ArgumentParser's own description of the CLI.
    static func commands() throws -> [Command] {
        let dump = try Shell.run([Shell.piflash, "--experimental-dump-help"])
        let root = try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as! [String: Any]
        let command = root["command"] as! [String: Any]
        // Nested commands (`hosts new`) are named with their parent, as their man sections are.
        func collect(_ subcommands: [[String: Any]], prefix: String) -> [Command] {
            subcommands.flatMap { sub -> [Command] in
                let name = sub["commandName"] as! String
                guard name != "help" else { return [] }
                var options = Set<String>()
                for argument in sub["arguments"] as? [[String: Any]] ?? [] {
                    for entry in argument["names"] as? [[String: Any]] ?? [] where entry["kind"] as? String == "long" {
                        options.insert("--" + (entry["name"] as! String))
                    }
                }
                options.subtract(["--help", "--version"])
                let full = prefix + name
                let children = sub["subcommands"] as? [[String: Any]] ?? []
                return [Command(name: full, options: options, isGroup: options.isEmpty && !children.isEmpty)]
                    + collect(children, prefix: full + " ")
            }
        }
        return collect(command["subcommands"] as! [[String: Any]], prefix: "")
    }

    /// The `.SS "piflash NAME…"` section of a roff page, up to the next `.SS` or `.SH`.
    static func section(_ page: String, command: String) -> String? {
        var lines: [Substring] = []
        var inside = false
        for line in page.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix(".SS") || line.hasPrefix(".SH") {
                if inside { break }
                let title = line.dropFirst(3).trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "\"", with: "")
                    .replacingOccurrences(of: "\\-", with: "-")
                inside = title.hasPrefix("piflash \(command) ") || title == "piflash \(command)"
                    || title.hasPrefix("piflash \(command),")
                continue
            }
            if inside { lines.append(line) }
        }
        return inside ? lines.joined(separator: "\n") : nil
    }

    /// Long options named in roff text (`\-\-device`).
    static func options(in roff: String) -> Set<String> {
        let text = roff.replacingOccurrences(of: "\\-", with: "-").replacingOccurrences(of: "\\fB", with: " ")
            .replacingOccurrences(of: "\\fR", with: " ").replacingOccurrences(of: "\\fI", with: " ")
        var found = Set<String>()
        let pattern = try! NSRegularExpression(pattern: "(?<![A-Za-z0-9-])--[a-z][a-z0-9-]*")
        for match in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            found.insert(String(text[Range(match.range, in: text)!]))
        }
        return found
    }

    static func page(_ name: String) throws -> String {
        try String(contentsOfFile: Shell.packageRoot + "/man/" + name, encoding: .utf8)
    }

    @Test("every command has its section in piflash(1) with exactly its options")
    func sectionsMatchHelp() throws {
        let page = try Self.page("piflash.1")
        for command in try Self.commands() where command.name != "station" && !command.isGroup {
            let section = try #require(Self.section(page, command: command.name), "man/piflash.1 has no section for \(command.name)")
            let documented = Self.options(in: section)
            #expect(command.options.subtracting(documented).isEmpty,
                    "piflash \(command.name): in --help but not in the man page: \(command.options.subtracting(documented).sorted())")
            #expect(documented.subtracting(command.options).isEmpty,
                    "piflash \(command.name): in the man page but not in --help: \(documented.subtracting(command.options).sorted())")
        }
    }

    @Test("piflash-station(8) documents exactly the station's options")
    func stationPageMatchesHelp() throws {
        let station = try #require(try Self.commands().first { $0.name == "station" })
        let page = try Self.page("piflash-station.8")
        let options = page.components(separatedBy: ".SH OPTIONS").dropFirst().first?.components(separatedBy: "\n.SH ").first
        let documented = Self.options(in: try #require(options, "piflash-station.8 has an OPTIONS section"))
        #expect(station.options == documented)
    }

    @Test("the synopsis names every command")
    func synopsisNamesEveryCommand() throws {
        let page = try Self.page("piflash.1")
        let synopsis = page.components(separatedBy: ".SH SYNOPSIS").last!.components(separatedBy: ".SH DESCRIPTION").first!
            .replacingOccurrences(of: "\\-", with: "-")
        for command in try Self.commands() {
            #expect(synopsis.contains("piflash \(command.name)"), "synopsis lacks \(command.name)")
        }
    }
}
