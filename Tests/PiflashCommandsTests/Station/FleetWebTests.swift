import Foundation
import PostgreSQLFixture
import Testing

/// The web page of a fleet: two `piflash station` processes (two loop-device slots each, reserved
/// numbers 240–243) sharing one real PostgreSQL journal; the page and API served by the first show
/// the second's slots from its heartbeats and both stations' journal entries. Checked with curl,
/// a headless Chromium (a live page never reloaded, and `--dump-dom`) and psql on the database.
@Suite("piflash station: the web page shows every station of a shared journal", .serialized,
       .enabled(if: StationEnvironment.available && PostgreSQLTestServer.unavailableReason == nil && Chromium.path != nil,
                "needs root, loop devices, systemd-udevd, Debian's postgresql and chromium"))
struct FleetWebTests {
    static let hosts = (1...4).map { String(format: "pi-%02d", $0) }

    /// `/api/stations` as an array, or nil.
    func stations(_ base: String) throws -> [[String: Any]]? {
        try Web.get(base + "/api/stations").json?["stations"] as? [[String: Any]]
    }

    @Test("station A's page and API show station B's slots (live from its heartbeats, then stale with its age once it is killed), the queue and the entries of both")
    func pageShowsEveryStation() throws {
        let server = try #require(PostgreSQLTestServer.shared, "the PostgreSQL test server started")
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        let fixture = try StationFixture(slots: [240, 241, 242, 243], hosts: Self.hosts)
        let port = try Web.freePort()
        let base = "http://127.0.0.1:\(port)"
        let fleet = FleetStationTests()
        let timeout = 6
        let one = try fleet.stationFile(fixture, name: "bench-1", journal: url, slots: [0, 1], queue: Self.hosts,
                                        timeout: timeout, extra: "[web]\nlisten = \"127.0.0.1:\(port)\"\n")
        let two = try fleet.stationFile(fixture, name: "bench-2", journal: url, slots: [2, 3], queue: Self.hosts,
                                        timeout: timeout)
        // Station B writes its card at ~3 MB/s: its progress is seen on A's page while it lasts.
        let group = try fixture.throttle([(fixture.loops[2].majorMinor, 3_000_000, nil)])
        let first = try fixture.startStation(config: one)
        defer { if first.isRunning { kill(first.pid, SIGKILL) } }
        let second = try fixture.startStation(config: two, cgroup: group)
        defer { if second.isRunning { kill(second.pid, SIGKILL) } }
        let events = (a: StationEvents(first), b: StationEvents(second))

        // Both stations are listed once B's first heartbeat is in: A first (live), then B.
        let listed = try Web.waitFor(timeout: 30) { try stations(base).flatMap { $0.count == 2 ? $0 : nil } }
        let answer = try Web.get(base + "/api/stations").body
        let both = try #require(listed, "A's API lists two stations: \(answer)")
        #expect(both.map { $0["name"] as? String } == ["station@bench-1", "station@bench-2"])
        #expect(both.map { $0["local"] as? Bool } == [true, false])
        #expect(both.map { $0["stale"] as? Bool } == [false, false])
        #expect(both[1]["pid"] as? Int == Int(second.pid), "B's pid, from its heartbeat")
        #expect(both[1]["hosts"] is NSNull && both[0]["hosts"] as? String == fixture.hostsDir)
        #expect(((both[1]["slots"] as? [[String: Any]]) ?? []).map { $0["slot"] as? String } == ["TC", "TD"])

        // The page, open in a browser from now on (never reloaded).
        let page = try Chromium.LivePage(base + "/", profile: fixture.scratch.file("chromium-live"))
        #expect(Web.waitFor(timeout: 60, { page.title().flatMap { $0.contains("bench-2:TC idle") ? $0 : nil } }) != nil,
                "the page shows B's idle slot: \(page.title() ?? "no title")")

        let cardA = try fixture.blankCard("card-a")
        let cardB = try fixture.blankCard("card-b")
        try fixture.loops[0].insert(cardA)
        try fixture.loops[2].insert(cardB)
        let resultA = try #require(events.a.result("TA"))
        #expect(resultA["ok"] as? Bool == true, "\(resultA["error"] ?? "")")

        // B's slot writing, as A's API shows it from B's heartbeat: phase, bytes, rate.
        let remoteBusy = try Web.waitFor(timeout: 60) { () -> [String: Any]? in
            let slots = try Web.get(base + "/api/slots").json?["slots"] as? [[String: Any]]
            return slots?.first { $0["station"] as? String == "station@bench-2" && $0["slot"] as? String == "TC"
                && $0["state"] as? String == "flashing" && $0["phase"] as? String == "write"
                && ($0["bytes"] as? Int ?? 0) > 0 && ($0["rate"] as? Double ?? 0) > 0 }
        }
        let busy = try #require(remoteBusy, "A's API shows B's slot writing")
        #expect(busy["device"] as? String == fixture.loops[2].path && busy["station_stale"] as? Bool == false)
        #expect(Web.waitFor(timeout: 30, { page.title().flatMap { $0.contains("bench-2:TC flashing") ? $0 : nil } }) != nil,
                "the open page shows B's slot flashing: \(page.title() ?? "")")

        fixture.unthrottle(group, fixture.loops[2].majorMinor)
        let resultB = try #require(events.b.result("TC"))
        #expect(resultB["ok"] as? Bool == true, "\(resultB["error"] ?? "")")
        let hostA = try #require(resultA["host"] as? String)
        let hostB = try #require(resultB["host"] as? String)
        #expect(hostA != hostB && Self.hosts.contains(hostA) && Self.hosts.contains(hostB))
        #expect(Web.waitFor(timeout: 30, { page.title().flatMap { $0.contains("bench-2:TC verified") ? $0 : nil } }) != nil,
                "the open page follows B's card to the end: \(page.title() ?? "")")

        // The journal as psql reads it: the API's entries are the same rows, both stations'.
        let rows = try server.psql(database, "SELECT id, host, slot, station FROM flashes WHERE ok = 1 ORDER BY id DESC")
            .split(separator: "\n").map { $0.split(separator: "|").map(String.init) }
        #expect(Set(rows.map { $0[1] + "@" + $0[2] + "/" + $0[3] }) == ["\(hostA)@TA/bench-1", "\(hostB)@TC/bench-2"],
                "each entry names its station: \(rows)")
        let entries = try #require(try Web.get(base + "/api/journal?limit=10").json?["entries"] as? [[String: Any]])
        #expect(entries.map {
            "\($0["id"] as? Int ?? -1)|\($0["host"] as? String ?? "")|\($0["slot"] as? String ?? "")|"
                + ($0["station"] as? String ?? "").replacingOccurrences(of: "station@", with: "")
        } == rows.map { $0.joined(separator: "|") }, "the API's entries are the journal's, newest first")
        #expect(entries.allSatisfy { ($0["station"] as? String ?? "").hasPrefix("station@") })
        #expect(entries.allSatisfy { $0["ok"] as? Bool == true && ($0["host_key_fingerprint"] as? String ?? "").hasPrefix("SHA256:") })

        // B's slots from A's API, and the queue: two done, two remaining, nothing claimed.
        let slots = try #require(try Web.get(base + "/api/slots").json?["slots"] as? [[String: Any]])
        #expect(slots.map { "\($0["station"] as? String ?? ""):\($0["slot"] as? String ?? "")" }
            == ["station@bench-1:TA", "station@bench-1:TB", "station@bench-2:TC", "station@bench-2:TD"])
        let remoteDone = try #require(slots.first { $0["slot"] as? String == "TC" })
        #expect(remoteDone["state"] as? String == "verified" && remoteDone["host"] as? String == hostB)
        let idB = rows.first { $0[2] == "TC" }.flatMap { Int($0[0]) }
        #expect(remoteDone["journal_id"] as? Int == idB, "B's slot names its journal row")
        // Several requests on one kept-alive connection (curl reuses it): answered in order.
        let many = try Shell.run(["curl", "-s", "-m", "20", "-w", "\\n", base + "/api/queue", base + "/api/stations",
                                  base + "/api/journal?limit=1", base + "/api/slots"])
        #expect(many.stdout.split(separator: "\n").filter { !$0.isEmpty }.map { String($0.prefix(12)) }
            == ["{\"done\":2,\"c", "{\"stations\":", "{\"entries\":[", "{\"slots\":[{\""], "\(many.stdout.prefix(400))")
        let queue = try #require(try Web.get(base + "/api/queue").json)
        #expect(queue["done"] as? Int == 2 && queue["claimed"] as? Int == 0 && queue["remaining"] as? Int == 2, "\(queue)")

        // The page shows the same: B's station and verified slot, both entries, the queue.
        let dom = try Chromium.dumpDOM(base + "/", profile: fixture.scratch.file("chromium-dump1"), width: 390, height: 844)
        #expect(dom.contains("data-station=\"station@bench-2\" data-stale=\"false\""), "\(dom.suffix(4000))")
        #expect(dom.contains("data-slot=\"TC\" data-state=\"verified\" data-host=\"\(hostB)\""))
        #expect(dom.contains("data-slot=\"TA\" data-state=\"verified\" data-host=\"\(hostA)\""))
        for row in rows {
            #expect(dom.contains("data-entry=\"\(row[0])\" data-result=\"ok\" data-host=\"\(row[1])\""), "entry \(row)")
        }
        #expect(dom.contains("2 done · 0 claimed · 2 remaining"))

        // Never a secret, in any answer.
        for host in [hostA, hostB] {
            let key = try String(contentsOfFile: "\(fixture.hostsDir)/secrets/\(host)/ssh_host_ed25519_key", encoding: .utf8)
            let keyLine = String(key.split(separator: "\n")[1])
            for path in ["/api/stations", "/api/slots", "/api/queue", "/api/journal?limit=500", "/"] {
                let body = try Web.get(base + path).body
                #expect(!body.contains("psk-\(host)") && !body.contains(keyLine), "\(path) shows no secret of \(host)")
            }
            #expect(!dom.contains("psk-\(host)") && !dom.contains(keyLine))
        }

        // B killed: after the heartbeat timeout A shows it stale, with the heartbeat's age, its
        // slots as last seen.
        kill(second.pid, SIGKILL)
        _ = second.finish(timeout: 30)
        let stale = try #require(try Web.waitFor(timeout: 60) { () -> [String: Any]? in
            try stations(base)?.first { $0["name"] as? String == "station@bench-2" && $0["stale"] as? Bool == true }
        }, "B is shown stale")
        #expect(stale["running"] as? Bool == false)
        #expect((stale["heartbeat_age_seconds"] as? Double ?? 0) >= Double(timeout), "\(stale)")
        #expect(((stale["slots"] as? [[String: Any]]) ?? []).first?["state"] as? String == "verified")
        #expect(try stations(base)?.first?["stale"] as? Bool == false, "A itself is never stale")
        let after = try Chromium.dumpDOM(base + "/", profile: fixture.scratch.file("chromium-dump2"))
        #expect(after.contains("data-station=\"station@bench-2\" data-stale=\"true\""), "\(after.suffix(4000))")
        #expect(after.contains("stale: no heartbeat for "))

        kill(first.pid, SIGTERM)
        #expect(first.finish(timeout: 60).status == 0)
    }

    @Test("the journal's database stopped: the page still shows this station live and why the others are unknown, queue and journal answer 503, the password never shows; all back once it answers")
    func databaseDown() throws {
        // Its own server: this test stops and starts it.
        let server = try PostgreSQLTestServer()
        _ = try server.createDatabase("journal")
        // Trust authentication ignores the password: it is there to be looked for in every answer.
        let password = "pw-" + UUID().uuidString.prefix(12).lowercased()
        let url = "postgresql://\(server.user):\(password)@127.0.0.1:\(server.port)/journal"
        let fixture = try StationFixture(slots: [240, 241], hosts: ["pi-01"])
        let port = try Web.freePort()
        let base = "http://127.0.0.1:\(port)"
        let fleet = FleetStationTests()
        let one = try fleet.stationFile(fixture, name: "bench-1", journal: url, slots: [0], queue: ["pi-01"], timeout: 6,
                                        extra: "[web]\nlisten = \"127.0.0.1:\(port)\"\n")
        let two = try fleet.stationFile(fixture, name: "bench-2", journal: url, slots: [1], queue: ["pi-01"], timeout: 6)
        let first = try fixture.startStation(config: one)
        defer { if first.isRunning { kill(first.pid, SIGKILL) } }
        let second = try fixture.startStation(config: two)
        defer { if second.isRunning { kill(second.pid, SIGKILL) } }
        let listed = try Web.waitFor(timeout: 30) { try stations(base).flatMap { $0.count == 2 ? $0 : nil } }
        #expect(listed != nil, "both stations are listed while the database answers")

        try server.stop()
        #expect(StationEvents(first).next(timeout: 60) { $0["event"] as? String == "journal" && $0["state"] as? String == "unreachable" }
            != nil, "station A notices the journal is gone")
        let alone = try #require(try stations(base), "/api/stations answers without the database")
        #expect(alone.count == 1 && alone.first?["name"] as? String == "station@bench-1")
        #expect(((alone.first?["slots"] as? [[String: Any]]) ?? []).map { $0["slot"] as? String } == ["TA"])
        let reason = try #require(alone.first?["journal_error"] as? String, "the reason the others are unknown")
        #expect(reason.contains("127.0.0.1:\(server.port)"), "\(reason)")
        for path in ["/api/queue", "/api/journal?limit=5"] {
            let reply = try Web.get(base + path)
            #expect(reply.status == 503, "\(path): \(reply.status) \(reply.body)")
        }
        let dom = try Chromium.dumpDOM(base + "/", profile: fixture.scratch.file("chromium-down"))
        #expect(dom.contains("data-station=\"station@bench-1\""), "\(dom.suffix(3000))")
        #expect(dom.contains("data-slot=\"TA\" data-state=\"idle\""), "this station's slot is still drawn")
        #expect(dom.contains("other stations unknown: "))
        #expect(dom.contains("/api/queue: HTTP 503"), "the page says what it cannot show")
        for path in ["/api/stations", "/api/slots", "/api/queue", "/api/journal?limit=5", "/"] {
            #expect(!(try Web.get(base + path).body.contains(password)), "\(path) shows no password")
        }
        #expect(!dom.contains(password))

        try server.start()
        let back = try Web.waitFor(timeout: 60) { () -> [[String: Any]]? in
            guard let list = try stations(base), list.count == 2, list[0]["journal_error"] is NSNull,
                  list[1]["stale"] as? Bool == false else { return nil }
            return list
        }
        #expect(back != nil, "both stations again once the database answers")
        #expect(try Web.get(base + "/api/queue").status == 200)

        for station in [first, second] { kill(station.pid, SIGTERM) }
        #expect(first.finish(timeout: 60).status == 0)
        #expect(second.finish(timeout: 60).status == 0)
    }
}
