import ArgumentParser
import Foundation
import PiflashKit

/// `piflash history`: the flash journal.
struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Show the flash journal: every attempt, newest first.",
        discussion: """
            Each attempt shows when it started, the host, the card (device, model) or output \
            file, the result (ok, failed, or unfinished when the process died mid-flash), the \
            write rate and the error. The journal is an SQLite database: --journal PATH, else \
            /var/lib/piflash/journal.sqlite for root, else $XDG_STATE_HOME/piflash/journal.sqlite \
            (~/.local/state/piflash/journal.sqlite); or a PostgreSQL database shared by several \
            machines: --journal postgresql://USER@HOST[:PORT]/DB (the password from the URL or \
            $PGPASSWORD). It holds file paths and SHA-256 digests, never secrets.
            """
    )

    @Argument(help: "Only this host's attempts.")
    var host: String?

    @Option(help: ArgumentHelp("The journal: an SQLite file, or postgresql://USER@HOST[:PORT]/DB.", valueName: "path"))
    var journal: String?

    @Option(help: "Show at most this many attempts.")
    var limit: Int = 20

    @Flag(help: "One JSON object per attempt on stdout (all fields, including injected files and digests).")
    var json = false

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        let path = Journal.defaultPath(explicit: journal)
        guard Journal.isDatabaseURL(path) || FileManager.default.fileExists(atPath: path) else {
            if journal != nil {
                throw PiflashError.usage("there is no journal at \(path)", path: path)
            }
            if !json { writeAll("no flashes recorded yet (no journal at \(path))\n", to: STDERR_FILENO) }
            return
        }
        let opened = try Journal(path: path)
        let entries = try opened.entries(host: host, limit: limit)
        if json {
            for entry in entries { printJSON(entry.json) }
            return
        }
        if entries.isEmpty {
            writeAll("no flashes recorded\(host.map { " for \($0)" } ?? "") in \(opened.path)\n", to: STDERR_FILENO)
            return
        }
        var rows: [[String]] = [["TIME (UTC)", "HOST", "TARGET", "RESULT", "MB/s", "ERROR"]]
        for entry in entries {
            let time = String(iso8601UTC(entry.startedAt).prefix(19)).replacingOccurrences(of: "T", with: " ")
            var target = entry.outputPath ?? entry.devicePath ?? "-"
            if let model = entry.deviceModel, !model.isEmpty { target += " (\(model))" }
            if let slot = entry.slot { target = "[\(slot)] " + target }
            let rate = entry.writeRate.map { String(format: "%.1f", $0 / 1e6) } ?? "-"
            let error = (entry.error ?? "").split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            rows.append([time, entry.host ?? "-", target, entry.outcome, rate, error])
        }
        writeAll(formatTable(rows), to: STDOUT_FILENO)
    }
}
