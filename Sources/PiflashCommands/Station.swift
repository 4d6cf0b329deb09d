import ArgumentParser
import Foundation
import PiflashKit
import PiflashStationViews

/// `piflash station --config FILE`: the unattended, udev-triggered station; `--status` prints
/// the state a running station publishes.
struct Station: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "station",
        abstract: "Run the unattended flashing station: flash every card inserted in a configured reader slot.",
        discussion: """
            Listens to udev (a libudev monitor) for cards arriving in the readers the station file allows \
            ([[slot]] tables matched on udev properties such as PIFLASH_SLOT or ID_PATH): a `change` event whose \
            size goes from 0 to N, or an `add`. Cards already in a slot at start-up are handled too. Each card \
            gets its slot's fixed host, or the next host of the queue that the journal shows was never flashed \
            successfully (claimed atomically in the journal, given back when the card fails; with journal = \
            "postgresql://…" several stations share one queue), and is flashed like \
            `piflash flash` does, on its own thread, in parallel across slots. A card the journal shows was just \
            provisioned in that slot, and which still holds the files injected then, is not flashed again unless \
            reflash = true. SIGTERM or SIGINT: no new cards, running jobs stop safely (their cards are left \
            unbootable and recorded as failed), exit 0. Under systemd (Type=notify) it sends READY=1, STATUS= and \
            STOPPING=1. On a terminal the station shows a screen redrawn in place: a header (station, hosts \
            folder, queue done/flashing/remaining) and per slot the host, the card (model, size, serial), a \
            progress bar with rate and ETA, or how long ago the last result came and why it failed; not on a \
            terminal, a log line per change; with --json, `slot` events. The state is also written to the state \
            file. With a [web] table the station serves a read-only web page and a JSON API under /api/ \
            (stations, slots, queue, journal?limit=N) showing every station of its journal: itself live, the \
            others as their last heartbeat left them, marked stale past heartbeat_timeout; a listener that is \
            not loopback needs token_file, and requests without the token (Authorization: Bearer, or ?token=) \
            get 401. See piflash-station(8).
            """
    )

    @Option(name: .long, help: ArgumentHelp("The station file (TOML, see piflash-station(8)).", valueName: "FILE"))
    var config: String?

    @Flag(name: .long, help: "Print the state published by a running station (its state file) and exit.")
    var status = false

    @Flag(name: .long, help: "Print one JSON object per line on stdout: slot events, the jobs' events (with slot) and a result per job.")
    var json = false

    func validate() throws {
        if !status && config == nil {
            throw ValidationError("give the station file with --config FILE")
        }
    }

    func run() async throws {
        if status {
            try printStatus()
            return
        }
        let stationConfig = try StationConfig.load(path: config!)
        let daemon: StationDaemon
        var web: WebServer?
        do {
            // One journal for the station and its jobs: what a lost PostgreSQL connection keeps
            // back is written by the station's heartbeat once the server answers again.
            let journal = try Journal(path: Journal.defaultPath(explicit: stationConfig.journal))
            let stationName = StationDaemon.name(for: stationConfig)
            daemon = try StationDaemon(config: stationConfig, journal: journal) { job, hostName, slot, reporter in
                runRecorded(job, command: "station", journalPath: stationConfig.journal, journal: journal,
                            hostName: hostName, slot: slot, station: stationName, reporter: reporter)
            }
            // Every view reads the one stream of the station; the terminal screen reads this
            // station's state, the web page every station of the journal (this one live).
            let source = LocalStationSource(daemon: daemon)
            if json {
                daemon.stream.add(JSONLinesView(board: daemon.board))
            } else {
                daemon.stream.add(ConsoleView(mode: isatty(STDOUT_FILENO) == 1 ? .terminal : .log, source: source))
            }
            if let webConfig = stationConfig.web {
                web = try WebServer(config: webConfig, api: WebAPI(source: FleetStationSource(daemon: daemon),
                                                                   token: try webConfig.readToken()))
                daemon.stream.send(.note("web page on http://\(webConfig.listen)/"
                                         + (webConfig.tokenFile.map { " (token in \($0))" } ?? "")))
            }
        } catch let error as PiflashError {
            if json { writeAll(JSONValue.object([("event", "error"), ("error", .string(error.description)),
                                                 ("exit_code", .int(Int64(error.status.rawValue)))]).serialized() + "\n", to: 1) }
            throw error
        }
        defer { web?.stop() }
        // The event loop blocks in poll(2): it gets its own thread, like every job, never the
        // Swift concurrency pool.
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            _ = WorkerThread {
                do {
                    try daemon.run()
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    private func printStatus() throws {
        let path: String
        if let config {
            path = try StationConfig.load(path: config).defaultStateFile()
        } else {
            path = StationConfig(path: "", slots: []).defaultStateFile()
        }
        let file = StationStatusFile(path: path)
        if json {
            writeAll(try file.text(), to: 1)
        } else {
            writeAll(try file.read().lines.joined(separator: "\n") + "\n", to: 1)
        }
    }
}
