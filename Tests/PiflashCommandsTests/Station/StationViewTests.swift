import Foundation
@testable import PiflashKit
@testable import PiflashStationViews
import Testing

/// The station's views without a station: the terminal screen, the web API's answers and access
/// rule, and the station file's `[web]` table. Pure logic, runs anywhere.
@Suite("station views: terminal screen, web API, [web] table")
struct StationViewTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func station(_ slots: [SlotStatus]) -> StationSnapshot {
        StationSnapshot(name: "station@bench", machine: "bench", pid: 42, config: "/etc/piflash/station.toml",
                        hosts: "/srv/pis/hosts", startedAt: now, updatedAt: now, running: true, slots: slots)
    }

    var card: SlotCard { SlotCard(model: "SC64G", serial: "0x1234abcd", size: 64 << 30, reader: "pci-0:14.0-usb-0:1") }

    @Test("the screen: header with hosts folder and queue, host, card, a bar with rate and ETA, results with their age and reason; every line fits")
    func screen() {
        let slots = [
            SlotStatus(slot: "A", state: .flashing(phase: "write", done: 1 << 30, total: 4 << 30, rate: Double(20 << 20)),
                       device: "/dev/sdb", card: card, host: "pi-01", since: now.addingTimeInterval(-10)),
            SlotStatus(slot: "B", state: .failed(reason: "the card was pulled during the write"), device: "/dev/sdc",
                       host: "pi-02", since: now.addingTimeInterval(-75)),
            SlotStatus(slot: "C", state: .verified(alreadyProvisioned: false), card: card, host: "pi-03", journalID: 7,
                       since: now.addingTimeInterval(-5)),
            SlotStatus(slot: "D"),
        ]
        let queue = QueueSnapshot(hosts: [
            .init(name: "pi-01", standing: .claimed, claimant: "station@bench:A"), .init(name: "pi-03", standing: .done),
            .init(name: "pi-04", standing: .remaining), .init(name: "pi-05", standing: .remaining),
        ])
        for width in [40, 80, 132] {
            let lines = StationScreen(width: width, now: now).lines(station: station(slots), queue: queue,
                                                                    messages: ["12:00:00 web page on http://127.0.0.1:8480/"])
            #expect(lines.allSatisfy { $0.count <= width - 1 }, "width \(width): \(lines)")
            #expect(lines.count == 2 + 2 * 4 + 1)
            if width >= 80 {
                #expect(lines[0] == "piflash station bench · hosts /srv/pis/hosts")
                #expect(lines[1] == "queue: 1 done, 1 flashing, 2 remaining of 4")
                #expect(lines[2] == "A  flashing  pi-01  SC64G 64.0 GiB #0x1234abcd  /dev/sdb")
                #expect(lines[3].hasPrefix("   write   [") && lines[3].contains("]   25%  1.0 GiB / 4.0 GiB  20.0 MiB/s  ETA 2m34s"),
                        "\(lines[3])")
                let bar = lines[3].split(separator: "[")[1].split(separator: "]")[0]
                #expect(bar.filter { $0 == "#" }.count == bar.count / 4, "a quarter of the bar filled: \(bar)")
                #expect(lines[5] == "   ✗ failed 1m15s ago: the card was pulled during the write")
                #expect(lines[7] == "   ✓ verified 5.0s ago (journal #7)")
                #expect(lines[8] == "D  idle")
                #expect(lines[9] == "   insert a card")
            }
        }
        let wide = StationScreen(width: 200, now: now).lines(station: station(slots), queue: queue, messages: [])[3]
        let narrow = StationScreen(width: 80, now: now).lines(station: station(slots), queue: queue, messages: [])[3]
        #expect(wide.count > narrow.count, "the bar grows with the terminal")
    }

    @Test("the slot's JSON carries the card and the ETA, and reads back")
    func slotJSON() throws {
        let status = SlotStatus(slot: "A", state: .flashing(phase: "write", done: 50, total: 150, rate: 10),
                                device: "/dev/sdb", card: card, host: "pi-01", since: now)
        let text = JSONValue.object(status.jsonFields).serialized()
        #expect(text.contains("\"card_serial\":\"0x1234abcd\"") && text.contains("\"eta_seconds\":10"), "\(text)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(SlotStatus(jsonObject: object) == status)
    }

    /// A source with fixed answers.
    struct FixedSource: StationSnapshotSource {
        var snapshot: StationSnapshot
        var entries: [JournalEntry]
        func stations() throws -> [StationSnapshot] { [snapshot] }
        func queue() throws -> QueueSnapshot { QueueSnapshot(hosts: [.init(name: "pi-01", standing: .done, journalID: 1)]) }
        func journal(limit: Int) throws -> [JournalEntry] { Array(entries.prefix(limit)) }
    }

    func source() -> FixedSource {
        var entry = JournalEntry(command: "station", host: "pi-01", slot: "A", devicePath: "/dev/sdb", deviceModel: "SC64G",
                                 deviceSerial: "0x1234abcd", deviceByPath: "pci-0:14.0-usb-0:1", deviceSize: 64 << 30,
                                 imagePath: "/srv/img.zst", ok: true)
        entry.id = 1
        entry.files = [InjectedFile(path: "/var/lib/bootstrap/wifi_psk", digest: .hmacSHA256(String(repeating: "ab", count: 32)),
                                    mode: 0o600, uid: 0, gid: 0)]
        entry.hostKeyFingerprint = "SHA256:abc"
        return FixedSource(snapshot: station([SlotStatus(slot: "A", card: card)]), entries: [entry, entry])
    }

    @Test("with a token every request needs it (Bearer header or ?token=), else 401; the journal shows no file digests")
    func webAPI() throws {
        let token = "0123456789abcdef0123"
        let api = WebAPI(source: source(), token: token)
        for path in ["/", "/api/slots", "/api/stations", "/api/queue", "/api/journal", "/nothing"] {
            let denied = api.respond(method: "GET", uri: path, authorization: nil)
            #expect(denied.status == 401, "\(path)")
            #expect(denied.headers.contains { $0.0 == "WWW-Authenticate" })
            #expect(api.respond(method: "GET", uri: path + "?token=wrong" + token, authorization: nil).status == 401)
            #expect(api.respond(method: "GET", uri: path, authorization: "Bearer " + token.dropLast() + "x").status == 401)
            #expect(api.respond(method: "GET", uri: path, authorization: "Basic " + token).status == 401)
        }
        #expect(api.respond(method: "GET", uri: "/", authorization: "Bearer " + token).contentType.hasPrefix("text/html"))
        let slots = api.respond(method: "GET", uri: "/api/slots?token=" + token, authorization: nil)
        #expect(slots.status == 200)
        #expect(slots.body.contains("\"station\":\"station@bench\",\"slot\":\"A\",\"state\":\"idle\""), "\(slots.body)")
        let journal = api.respond(method: "GET", uri: "/api/journal?limit=1", authorization: "Bearer \(token)")
        #expect(journal.status == 200)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(journal.body.utf8)) as? [String: Any])
        let entries = try #require(object["entries"] as? [[String: Any]])
        #expect(entries.count == 1)
        #expect(entries[0]["host_key_fingerprint"] as? String == "SHA256:abc")
        #expect(entries[0]["device_serial"] as? String == "0x1234abcd" && entries[0]["reader"] as? String == "pci-0:14.0-usb-0:1")
        #expect(entries[0]["files"] as? Int == 1)
        #expect(!journal.body.contains("abababab"), "file digests stay in the journal")
        #expect(api.respond(method: "GET", uri: "/api/journal?limit=0", authorization: "Bearer \(token)").status == 400)
        #expect(api.respond(method: "GET", uri: "/api/journal?limit=x", authorization: "Bearer \(token)").status == 400)
        #expect(api.respond(method: "POST", uri: "/api/slots", authorization: "Bearer \(token)").status == 405)
        #expect(api.respond(method: "GET", uri: "/api/nothing", authorization: "Bearer \(token)").status == 404)
        // Without a token (a loopback listener without token_file): open.
        #expect(WebAPI(source: source(), token: nil).respond(method: "GET", uri: "/api/queue", authorization: nil).status == 200)
    }

    @Test("the fleet source: this station live and first, the journal's other stations from their heartbeats (stale past the timeout, with the age), the shared queue")
    func fleetSource() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("piflash-fleet-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let journal = try Journal(path: scratch + "/journal.sqlite")
        let remoteSlots = [
            SlotStatus(slot: "C", state: .flashing(phase: "write", done: 1 << 20, total: 4 << 20, rate: 1e6), device: "/dev/sdc",
                       card: card, host: "pi-02", since: now),
            SlotStatus(slot: "D", since: now),
        ]
        let slotsJSON = JSONValue.array(remoteSlots.map { .object($0.jsonFields) }).serialized()
        // This station's own (older) heartbeat row and another station's.
        try journal.heartbeat(StationHeartbeat(name: "bench", machine: "m1", pid: 1, startedAt: now, slots: "[]"), claimants: [])
        try journal.heartbeat(StationHeartbeat(name: "bench-2", machine: "m2", pid: 77, startedAt: now, slots: slotsJSON),
                              claimants: [])
        _ = try journal.claimNextHost(queue: ["pi-02"], claimant: "station@bench-2:C")
        _ = try journal.record(JournalEntry(command: "station", host: "pi-01", slot: "A", imagePath: "/i", ok: true))
        let local = FixedSource(snapshot: station([SlotStatus(slot: "A", state: .verified(alreadyProvisioned: false))]),
                                entries: [])
        let fleet = FleetStationSource(local: local, localName: "bench", journal: journal,
                                       queue: ["pi-01", "pi-02", "pi-03"], heartbeatTimeout: 60)
        let stations = try fleet.stations()
        #expect(stations.map(\.name) == ["station@bench", "station@bench-2"], "this station once, live, first")
        #expect(stations[0].isLocal && stations[0].slots.map(\.slot) == ["A"])
        let remote = stations[1]
        #expect(!remote.isLocal && remote.running && !remote.isStale && remote.machine == "m2" && remote.pid == 77)
        #expect(remote.slots == remoteSlots, "the heartbeat's slots, read back")
        #expect(remote.hosts == nil && remote.config == nil)
        #expect((remote.heartbeatAge ?? -1) >= 0 && (remote.heartbeatAge ?? 99) < 30)

        // Past the timeout: stale, with the age, measured back from now.
        let old = FleetStationSource.snapshot(StationHeartbeat(name: "bench-3", machine: "m3", pid: 5, startedAt: now,
                                                               slots: slotsJSON), age: 90, now: now, heartbeatTimeout: 60)
        #expect(old.isStale && !old.running && old.heartbeatAge == 90 && old.updatedAt == now.addingTimeInterval(-90))
        let json = old.json.serialized()
        #expect(json.contains("\"stale\":true") && json.contains("\"heartbeat_age_seconds\":90"), "\(json)")
        #expect(FleetStationSource.slots(fromHeartbeat: "not json").isEmpty)

        let queue = try fleet.queue()
        #expect(queue.hosts.map(\.standing) == [.done, .claimed, .remaining])
        #expect(queue.hosts[1].claimant == "station@bench-2:C" && queue.hosts[0].journalID != nil)
        // A claim older than the timeout is not claimed any more: the host is remaining.
        let strict = FleetStationSource(local: local, localName: "bench", journal: journal,
                                        queue: ["pi-01", "pi-02", "pi-03"], heartbeatTimeout: -1)
        #expect(try strict.queue().hosts.map(\.standing) == [.done, .remaining, .remaining])
        #expect(try fleet.journal(limit: 5).map(\.host) == ["pi-01"])

        let api = WebAPI(source: fleet, token: nil)
        let slots = api.respond(method: "GET", uri: "/api/slots", authorization: nil).body
        #expect(slots.contains("\"station\":\"station@bench-2\",\"slot\":\"C\",\"state\":\"flashing\""), "\(slots)")
        #expect(slots.contains("\"station_stale\":false"))
    }

    @Test("[web]: listen parsed; anything but loopback needs token_file; a short token is refused")
    func webTable() throws {
        let slot = "[[slot]]\nname = \"A\"\nmatch = { PIFLASH_SLOT = \"A\" }\nhost = \"x\"\n"
        let path = "/etc/piflash/station.toml"
        let local = try StationConfig.parse(slot + "[web]\nlisten = \"127.0.0.1:8480\"\n", path: path)
        #expect(local.web == WebConfig(host: "127.0.0.1", port: 8480))
        #expect(local.web?.isLoopback == true)
        for listen in ["0.0.0.0:8480", "192.0.2.2:80", "[::]:8480", "[fd00::2]:8480"] {
            #expect(throws: PiflashError.self, "\(listen)") {
                try StationConfig.parse(slot + "[web]\nlisten = \"\(listen)\"\n", path: path)
            }
            let withToken = try StationConfig.parse(slot + "[web]\nlisten = \"\(listen)\"\ntoken_file = \"web-token\"\n", path: path)
            #expect(withToken.web?.tokenFile == "/etc/piflash/web-token")
            #expect(withToken.web?.isLoopback == false)
        }
        for listen in ["[::1]:1", "localhost:8480", "127.0.0.2:8480"] {
            #expect(try StationConfig.parse(slot + "[web]\nlisten = \"\(listen)\"\n", path: path).web?.isLoopback == true)
        }
        for bad in ["8480", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "example.org:80", "[::1:80"] {
            #expect(throws: PiflashError.self, "\(bad)") { try StationConfig.parse(slot + "[web]\nlisten = \"\(bad)\"\n", path: path) }
        }
        #expect(throws: PiflashError.self) { try StationConfig.parse(slot + "[web]\nlisten = \"127.0.0.1:1\"\ntoken = \"x\"\n", path: path) }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("piflash-token-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try "short\n".write(toFile: scratch, atomically: true, encoding: .utf8)
        #expect(throws: PiflashError.self) { try WebConfig(host: "0.0.0.0", port: 1, tokenFile: scratch).readToken() }
        try "  0123456789abcdef0123  \nsecond line\n".write(toFile: scratch, atomically: true, encoding: .utf8)
        #expect(try WebConfig(host: "0.0.0.0", port: 1, tokenFile: scratch).readToken() == "0123456789abcdef0123")
    }
}
