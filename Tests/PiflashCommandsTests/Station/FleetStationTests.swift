import Foundation
import PostgreSQLFixture
import Testing

/// Several stations sharing one queue and journal in a real PostgreSQL server (its own cluster in
/// a temporary folder, see ``PostgreSQLTestServer``): each station a `piflash station` process with
/// two loop-device slots (reserved numbers 244–247), real udev events, and independent checks —
/// `psql` on the database, `piflash history`, a read-only kernel mount of every card.
@Suite("piflash station: a fleet sharing a PostgreSQL journal", .serialized,
       .enabled(if: StationEnvironment.available && PostgreSQLTestServer.unavailableReason == nil,
                "needs root, loop devices, systemd-udevd and Debian's postgresql"))
struct FleetStationTests {
    static let hosts = (1...6).map { String(format: "pi-%02d", $0) }

    /// A station file for `name` with the fixture's slots at `slots` (indices into its loops), and
    /// `extra` tables (e.g. `[web]`).
    func stationFile(_ fixture: StationFixture, name: String, journal: String, slots: [Int], queue: [String],
                     timeout: Int = 4, extra: String = "") throws -> String {
        var text = """
            hosts = "hosts"
            journal = "\(journal)"
            name = "\(name)"
            state_file = "run/\(name).json"
            queue = [\(queue.map { "\"\($0)\"" }.joined(separator: ", "))]
            eject = false
            heartbeat_timeout = \(timeout)
            \(extra)

            """
        for index in slots {
            let slot = StationFixture.slotName(index)
            text += "[[slot]]\nname = \"\(slot)\"\nmatch = { PIFLASH_SLOT = \"\(slot)-\(getpid())\" }\n"
        }
        let path = fixture.scratch.file("\(name).toml")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Waits for one `result` from each of `slots`, in any order.
    func results(_ events: StationEvents, _ slots: Set<String>, timeout: TimeInterval = 300) -> [String: [String: Any]] {
        var found: [String: [String: Any]] = [:]
        _ = events.next(timeout: timeout) { event in
            if event["event"] as? String == "result", let slot = event["slot"] as? String, slots.contains(slot) {
                found[slot] = event
            }
            return found.count == slots.count
        }
        return found
    }

    /// The card holds `host`'s key and Wi-Fi file, as the kernel reads its root filesystem.
    func expectCard(_ card: String, holds host: String, _ fixture: StationFixture) throws {
        let secrets = "\(fixture.hostsDir)/secrets/\(host)"
        let expectedKey = try Shell.sh("cat '\(secrets)/ssh_host_ed25519_key'")
        let (key, env) = try StationFixture.withMountedRoot(of: card, in: fixture.scratch) { root throws -> (String, String) in
            (try Shell.sh("cat '\(root)/var/lib/bootstrap/ssh_host_ed25519_key'"),
             try Shell.sh("cat '\(root)/var/lib/networkmanager/system-connections.env'"))
        }
        #expect(key == expectedKey, "\(card) holds \(host)'s host key")
        #expect(env == "WIFI_SSID=net-\(host)\nWIFI_PSK=psk-\(host)\n")
    }

    /// The journal's attempts through `piflash history --json` (the command's own PostgreSQL path).
    func history(_ url: String) throws -> [[String: Any]] {
        let run = try Shell.run([Shell.piflash, "history", "--journal", url, "--json", "--limit", "100"])
        #expect(run.status == 0, "history: \(run.stderr)")
        return run.stdout.split(separator: "\n").compactMap { StationFixture.event(String($0)) }
    }

    @Test("two stations, one queue of six hosts, six cards in waves: each host flashed successfully once, every card verified, the journal complete")
    func sixHostsInWaves() throws {
        let server = try #require(PostgreSQLTestServer.shared, "the PostgreSQL test server started")
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        let fixture = try StationFixture(slots: [244, 245, 246, 247], hosts: Self.hosts)
        // A long timeout: on a loaded machine a live station's claims must never look stale here.
        let one = try stationFile(fixture, name: "bench-1", journal: url, slots: [0, 1], queue: Self.hosts, timeout: 30)
        let two = try stationFile(fixture, name: "bench-2", journal: url, slots: [2, 3], queue: Self.hosts, timeout: 30)
        let first = try fixture.startStation(config: one)
        defer { if first.isRunning { kill(first.pid, SIGKILL) } }
        let second = try fixture.startStation(config: two)
        defer { if second.isRunning { kill(second.pid, SIGKILL) } }
        let events = [StationEvents(first), StationEvents(second)]

        // Wave 1: a card in each of the four slots at once. Wave 2: two of them swapped for new cards.
        var cards: [(file: String, slot: String, result: [String: Any])] = []
        var files: [Int: String] = [:]
        for index in 0..<4 {
            files[index] = try fixture.blankCard("wave1-\(index)")
            try fixture.loops[index].insert(files[index]!)
        }
        let wave1 = [results(events[0], ["TA", "TB"]), results(events[1], ["TC", "TD"])]
        for (index, slot) in ["TA", "TB", "TC", "TD"].enumerated() {
            let result = try #require(wave1[index / 2][slot], "slot \(slot) reported a result")
            cards.append((files[index]!, slot, result))
        }
        for index in [0, 2] {
            fixture.loops[index].detach()
            #expect(events[index / 2].slot(StationFixture.slotName(index), "idle", timeout: 60) != nil)
            files[index] = try fixture.blankCard("wave2-\(index)")
            try fixture.loops[index].insert(files[index]!)
        }
        let wave2 = [results(events[0], ["TA"]), results(events[1], ["TC"])]
        cards.append((files[0]!, "TA", try #require(wave2[0]["TA"])))
        cards.append((files[2]!, "TC", try #require(wave2[1]["TC"])))

        for card in cards {
            #expect(card.result["ok"] as? Bool == true, "\(card.slot): \(card.result["error"] ?? "")")
        }
        let flashed = cards.compactMap { $0.result["host"] as? String }
        #expect(flashed.sorted() == Self.hosts, "each host once across both stations: \(flashed)")
        for card in cards {
            if let host = card.result["host"] as? String { try expectCard(card.file, holds: host, fixture) }
        }

        // A seventh card: nothing left to hand out, anywhere.
        fixture.loops[1].detach()
        #expect(events[0].slot("TB", "idle", timeout: 60) != nil)
        try fixture.loops[1].insert(try fixture.blankCard("seventh"))
        let seventh = try #require(results(events[0], ["TB"])["TB"])
        #expect(seventh["ok"] as? Bool == false)
        #expect((seventh["error"] as? String ?? "").contains("queue is empty"), "\(seventh["error"] ?? "")")

        // The journal, read back by piflash history and by psql: six successes, one per host, each
        // with its station's slot; no unfinished attempt; both stations heart-beat.
        let entries = try history(url)
        let successes = entries.filter { $0["ok"] as? Bool == true }
        #expect(successes.compactMap { $0["host"] as? String }.sorted() == Self.hosts)
        #expect(Set(successes.compactMap { $0["slot"] as? String }) == ["TA", "TB", "TC", "TD"])
        #expect(successes.allSatisfy { $0["command"] as? String == "station" && ($0["files"] as? [Any])?.count == 3 })
        #expect(!entries.contains { $0["result"] as? String == "unfinished" }, "every attempt finished")
        #expect(try server.psql(database, "SELECT count(*), count(DISTINCT host), count(DISTINCT attempt) FROM flashes WHERE ok = 1")
            == "6|6|6")
        #expect(try server.psql(database, "SELECT name FROM stations ORDER BY name") == "bench-1\nbench-2")
        #expect(try server.psql(database, "SELECT count(*) FROM claims") == "0", "every claim was given back")

        for station in [first, second] { kill(station.pid, SIGTERM) }
        #expect(first.finish(timeout: 60).status == 0)
        #expect(second.finish(timeout: 60).status == 0)
    }

    @Test("a station killed with SIGKILL mid-flash: its host returns to the queue after the heartbeat timeout and the other station flashes it")
    func killedStationsHostIsTakenOver() throws {
        let server = try #require(PostgreSQLTestServer.shared, "the PostgreSQL test server started")
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        let fixture = try StationFixture(slots: [244, 245], hosts: ["pi-01"])
        let one = try stationFile(fixture, name: "bench-1", journal: url, slots: [0], queue: ["pi-01"])
        let two = try stationFile(fixture, name: "bench-2", journal: url, slots: [1], queue: ["pi-01"])
        // Station 1 writes at ~2 MB/s: killed while its card is being written.
        let group = try fixture.throttle([(fixture.loops[0].majorMinor, 2_000_000, nil)])
        let first = try fixture.startStation(config: one, cgroup: group)
        defer { if first.isRunning { kill(first.pid, SIGKILL) } }
        let second = try fixture.startStation(config: two)
        defer { if second.isRunning { kill(second.pid, SIGKILL) } }

        let doomed = try fixture.blankCard("doomed")
        try fixture.loops[0].insert(doomed)
        let writing = StationEvents(first).next { event in
            event["event"] as? String == "progress" && event["slot"] as? String == "TA"
                && event["phase"] as? String == "write" && (event["bytes"] as? Int ?? 0) > 0
        }
        #expect(writing != nil, "station 1 is writing pi-01")
        #expect(try server.psql(database, "SELECT host, claimant FROM claims") == "pi-01|station@bench-1:TA")
        kill(first.pid, SIGKILL)
        _ = first.finish(timeout: 30)

        // Station 2's card waits while pi-01's claim is live, then gets it once the claim is stale.
        let card = try fixture.blankCard("card")
        try fixture.loops[1].insert(card)
        let events = StationEvents(second)
        let waiting = events.slot("TB", "waiting", timeout: 60)
        #expect(waiting != nil, "the card waits for the claimed host")
        let result = try #require(results(events, ["TB"])["TB"])
        #expect(result["ok"] as? Bool == true, "\(result["error"] ?? "")")
        #expect(result["host"] as? String == "pi-01")
        try expectCard(card, holds: "pi-01", fixture)

        // The killed attempt stays in the journal as unfinished; pi-01 has exactly one success.
        #expect(try server.psql(database, "SELECT slot, ok, finished_at IS NULL FROM flashes WHERE host = 'pi-01' ORDER BY id")
            == "TA|0|t\nTB|1|f")
        #expect(try server.psql(database, "SELECT count(*) FROM claims") == "0")
        kill(second.pid, SIGTERM)
        #expect(second.finish(timeout: 60).status == 0)
    }

    @Test("a station restarted after SIGKILL takes its own claim back at once (long before the heartbeat timeout)")
    func restartedStationTakesItsClaimBack() throws {
        let server = try #require(PostgreSQLTestServer.shared, "the PostgreSQL test server started")
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        let fixture = try StationFixture(slots: [244], hosts: ["pi-01"])
        // A timeout of an hour: only the restart can give the claim back within this test.
        let one = try stationFile(fixture, name: "bench-1", journal: url, slots: [0], queue: ["pi-01"], timeout: 3600)
        let group = try fixture.throttle([(fixture.loops[0].majorMinor, 2_000_000, nil)])
        let first = try fixture.startStation(config: one, cgroup: group)
        defer { if first.isRunning { kill(first.pid, SIGKILL) } }
        let card = try fixture.blankCard("card")
        try fixture.loops[0].insert(card)
        #expect(StationEvents(first).next { $0["event"] as? String == "progress" && $0["phase"] as? String == "write" } != nil)
        kill(first.pid, SIGKILL)
        _ = first.finish(timeout: 30)
        #expect(try server.psql(database, "SELECT claimant FROM claims WHERE host = 'pi-01'") == "station@bench-1:TA")

        // The same station again: the card still in its slot is handled at start-up, with pi-01.
        fixture.unthrottle(group, fixture.loops[0].majorMinor)
        let again = try fixture.startStation(config: one)
        defer { if again.isRunning { kill(again.pid, SIGKILL) } }
        let result = try #require(results(StationEvents(again), ["TA"], timeout: 120)["TA"])
        #expect(result["ok"] as? Bool == true, "\(result["error"] ?? "")")
        #expect(result["host"] as? String == "pi-01")
        #expect(try server.psql(database, "SELECT ok, finished_at IS NULL FROM flashes ORDER BY id") == "0|t\n1|f")
        kill(again.pid, SIGTERM)
        #expect(again.finish(timeout: 60).status == 0)
    }

    @Test("the database restarted mid-run: no new cards while it is down, running jobs finish and are recorded once it is back, nothing lost or doubled")
    func databaseRestartMidRun() throws {
        // Its own server: this test stops and starts it.
        let server = try PostgreSQLTestServer()
        let url = try server.createDatabase("journal")
        let hosts = ["pi-01", "pi-02", "pi-03"]
        let fixture = try StationFixture(slots: [244, 245, 246], hosts: hosts)
        let one = try stationFile(fixture, name: "bench-1", journal: url, slots: [0, 1], queue: hosts, timeout: 60)
        let two = try stationFile(fixture, name: "bench-2", journal: url, slots: [2], queue: hosts, timeout: 60)
        // ~0.5 MB/s: the writes go on while the database is down (until the test lifts the limit).
        let group = try fixture.throttle([(fixture.loops[0].majorMinor, 500_000, nil),
                                          (fixture.loops[2].majorMinor, 500_000, nil)])
        let first = try fixture.startStation(config: one, cgroup: group)
        defer { if first.isRunning { kill(first.pid, SIGKILL) } }
        let second = try fixture.startStation(config: two, cgroup: group)
        defer { if second.isRunning { kill(second.pid, SIGKILL) } }
        let events = [StationEvents(first), StationEvents(second)]

        var cards: [String: String] = [:]
        for (index, slot) in [(0, "TA"), (2, "TC")] {
            cards[slot] = try fixture.blankCard("card-\(slot)")
            try fixture.loops[index].insert(cards[slot]!)
        }
        for (station, slot) in [(0, "TA"), (1, "TC")] {
            #expect(events[station].next { $0["event"] as? String == "progress" && $0["slot"] as? String == slot
                && $0["phase"] as? String == "write" } != nil, "\(slot) is writing")
        }

        try server.stop()
        for station in events {
            #expect(station.next(timeout: 60) { $0["event"] as? String == "journal" && $0["state"] as? String == "unreachable" }
                != nil, "the station notices the journal is gone")
        }
        // A card inserted now is not taken.
        cards["TB"] = try fixture.blankCard("card-TB")
        try fixture.loops[1].insert(cards["TB"]!)
        let waiting = StationEvents(first).slot("TB", "waiting", timeout: 60)
        #expect(waiting != nil, "no new card while the journal is unreachable")
        // The running jobs finish, verified, with the database still down.
        fixture.unthrottle(group, fixture.loops[0].majorMinor)
        fixture.unthrottle(group, fixture.loops[2].majorMinor)
        let finishedA = try #require(results(events[0], ["TA"])["TA"])
        let finishedC = try #require(results(events[1], ["TC"])["TC"])
        #expect(finishedA["ok"] as? Bool == true && finishedC["ok"] as? Bool == true,
                "\(finishedA["error"] ?? "") \(finishedC["error"] ?? "")")
        #expect((try? server.psql("postgres", "SELECT 1")) == nil, "the server is still down")

        try server.start()
        // The waiting card is taken once the kept records are written.
        let third = try #require(results(events[0], ["TB"])["TB"])
        #expect(third["ok"] as? Bool == true, "\(third["error"] ?? "")")
        let flashed = [finishedA, finishedC, third].compactMap { $0["host"] as? String }
        #expect(flashed.sorted() == hosts)
        for (slot, result) in [("TA", finishedA), ("TC", finishedC), ("TB", third)] {
            if let host = result["host"] as? String { try expectCard(cards[slot]!, holds: host, fixture) }
        }

        for station in [first, second] { kill(station.pid, SIGTERM) }
        #expect(first.finish(timeout: 60).status == 0)
        #expect(second.finish(timeout: 60).status == 0)
        // Nothing lost, nothing twice: one finished row per card, each with its own attempt key.
        let expected = [("TA", finishedA), ("TB", third), ("TC", finishedC)]
            .map { "\($0.0)|\($0.1["host"] as? String ?? "?")|1|t" }.joined(separator: "\n")
        #expect(try server.psql("journal", "SELECT slot, host, ok, finished_at IS NOT NULL FROM flashes ORDER BY slot")
            == expected)
        #expect(try server.psql("journal", "SELECT count(*), count(DISTINCT attempt) FROM flashes") == "3|3")
        #expect(try server.psql("journal", "SELECT count(*) FROM claims") == "0", "every claim was given back")
    }
}

/// The commands that take `--journal` with a `postgresql://` URL: no devices needed.
@Suite("commands with a PostgreSQL journal", .serialized,
       .enabled(if: PostgreSQLTestServer.unavailableReason == nil, "needs Debian's postgresql"))
struct SharedJournalCommandTests {
    @Test("write --output records into PostgreSQL; history reads it back; an unreachable server is exit 1, a bad URL exit 2")
    func writeAndHistory() throws {
        let server = try #require(PostgreSQLTestServer.shared, "the PostgreSQL test server started")
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let zst = try ImageFixture.compress(raw, "zst")
        let run = try runPiflash(["write", zst, "--output", scratch.file("out.img"), "--json", "--journal", url])
        #expect(run.status == 0, "stderr: \(run.stderr)")
        let sha = try #require(run.result?["image_sha256"] as? String)
        #expect(try server.psql(database, "SELECT command, ok, output_path, image_sha256, finished_at IS NOT NULL FROM flashes")
            == "write|1|\(scratch.file("out.img"))|\(sha)|t")

        let history = try Shell.run([Shell.piflash, "history", "--journal", url, "--json"])
        #expect(history.status == 0, "\(history.stderr)")
        let entries = history.stdout.split(separator: "\n").compactMap { StationFixture.event(String($0)) }
        #expect(entries.count == 1 && entries.first?["output"] as? String == scratch.file("out.img"))
        let table = try Shell.run([Shell.piflash, "history", "--journal", url])
        #expect(table.status == 0 && table.stdout.contains("ok"), "\(table.stdout)")

        let port = try PostgreSQLTestServer.freePort()
        let unreachable = try Shell.run([Shell.piflash, "history", "--journal", "postgresql://piflash:hunter2@127.0.0.1:\(port)/j"])
        #expect(unreachable.status == 1, "\(unreachable.stderr)")
        #expect(unreachable.stderr.contains("cannot connect") && !unreachable.stderr.contains("hunter2"), "\(unreachable.stderr)")
        let malformed = try Shell.run([Shell.piflash, "history", "--journal", "postgresql://127.0.0.1/j"])
        #expect(malformed.status == 2 && malformed.stderr.contains("no user"), "\(malformed.stderr)")
    }
}
