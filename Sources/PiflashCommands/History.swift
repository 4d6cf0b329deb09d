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
            $PGPASSWORD). It holds file paths and digests, never \
            secrets: a keyed digest (hmac_sha256) of every file made from secrets, a plain \
            sha256 of public files. Journals written by a piflash before keyed digests hold \
            plain SHA-256 digests of every file, which for a file made from secrets (a Wi-Fi \
            passphrase) can be tested against guesses offline: history names those entries, \
            and --scrub-plain-digests removes their digests.
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

    @Flag(help: """
        Remove the plain SHA-256 digests an older piflash recorded (of HOST's entries, or all), \
        zeroing them in the database file and its write-ahead log; paths, modes and keyed digests stay.
        """)
    var scrubPlainDigests = false

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
        let database = try Journal(path: path)
        if scrubPlainDigests {
            try scrub(database)
            return
        }
        let entries = try database.entries(host: host, limit: limit)
        if json {
            for entry in entries { printJSON(entry.json) }
        } else if entries.isEmpty {
            writeAll("no flashes recorded\(host.map { " for \($0)" } ?? "") in \(database.path)\n", to: STDERR_FILENO)
        } else {
            var rows: [[String]] = [["TIME (UTC)", "HOST", "TARGET", "RESULT", "WRITTEN", "MB/s", "ERROR"]]
            for entry in entries {
                let time = String(iso8601UTC(entry.startedAt).prefix(19)).replacingOccurrences(of: "T", with: " ")
                var target = entry.outputPath ?? entry.devicePath ?? "-"
                if let model = entry.deviceModel, !model.isEmpty { target += " (\(model))" }
                if let slot = entry.slot { target = "[\(slot)] " + target }
                let rate = entry.writeRate.map { String(format: "%.1f", $0 / 1e6) } ?? "-"
                let error = (entry.error ?? "").split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
                // What the card got: the mapped bytes of the image (all of it for --full).
                var written = "-"
                if let image = entry.imageBytes ?? entry.bytes {
                    let mapped = entry.mappedBytes ?? image
                    written = mapped < image ? "\(formatBytes(mapped)) of \(formatBytes(image))" : formatBytes(image)
                }
                rows.append([time, entry.host ?? "-", target, entry.outcome, written, rate, error])
            }
            writeAll(formatTable(rows), to: STDOUT_FILENO)
        }
        let plain = try database.entriesWithPlainDigests(host: host)
        if !plain.isEmpty {
            writeAll(History.plainDigestNote(plain, journal: database.path, host: host), to: STDERR_FILENO)
        }
    }

    private func scrub(_ database: Journal) throws {
        let done = try database.scrubPlainDigests(host: host)
        let scope = host.map { " of \($0)" } ?? ""
        if json {
            printJSON(.object([
                ("event", "scrubbed"), ("journal", .string(database.path)), ("host", .string(host)),
                ("entries", .array(done.entries.map { .int($0) })), ("files", .int(Int64(done.files))),
                ("errors", .int(Int64(done.errors))), ("log_emptied", .bool(done.logEmptied)),
            ]))
        } else if done.entries.isEmpty {
            writeAll("no plain digests\(scope) in \(database.path): nothing to scrub\n", to: STDOUT_FILENO)
        } else {
            writeAll(
                "scrubbed the plain digests\(scope) from \(History.entryList(done.entries)) in \(database.path): "
                    + "\(done.files) file digest\(done.files == 1 ? "" : "s"), \(done.errors) error message\(done.errors == 1 ? "" : "s")\n",
                to: STDOUT_FILENO)
        }
        if !done.logEmptied {
            writeAll(
                "piflash: warning: another process holds \(database.path) open, so its write-ahead log (\(database.path)-wal) "
                    + "may still hold old copies until that process closes it; run --scrub-plain-digests again then\n",
                to: STDERR_FILENO)
        }
    }

    /// `entry 3`, `entries 3, 5, 9`, or the first 20 and how many more.
    static func entryList(_ ids: [Int64]) -> String {
        let shown = ids.prefix(20).map(String.init).joined(separator: ", ")
        let more = ids.count > 20 ? " and \(ids.count - 20) more" : ""
        return (ids.count == 1 ? "entry " : "entries ") + shown + more
    }

    /// The note under the listing: which entries carry plain digests, why that matters, what to do.
    static func plainDigestNote(_ ids: [Int64], journal: String, host: String?) -> String {
        let command = "piflash history\(host.map { " \($0)" } ?? "") --journal \(journal) --scrub-plain-digests"
        return """
            note: \(entryList(ids)) \(ids.count == 1 ? "carries" : "carry") plain SHA-256 digests recorded by a piflash before keyed digests; \
            for files made from secrets (a Wi-Fi passphrase, a private key) a plain digest can be tested \
            against guesses offline. Remove them with: \(command)

            """
    }
}
