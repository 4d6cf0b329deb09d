import Foundation
import Testing

/// The station's web page and JSON API against a running station (loop-device readers, real
/// udevd): curl for the API, Debian's headless Chromium for the page, a network namespace for a
/// listener that is not loopback.
@Suite("piflash station: web page and JSON API", .serialized,
       .enabled(if: StationEnvironment.available, "needs root, loop devices and systemd-udevd"))
struct StationWebTests {
    @Test("the JSON API and a headless Chromium show the slots, queue and journal of a running station, and the open page updates when the card finishes")
    func pageAndAPI() throws {
        let chromium = try #require(Chromium.path, "Debian's chromium is needed (make deps installs it)")
        _ = chromium
        let port = try Web.freePort()
        let fixture = try StationFixture(slots: [250], hosts: ["pi-01", "pi-02"],
                                         extraConfig: "[web]\nlisten = \"127.0.0.1:\(port)\"\n")
        let base = "http://127.0.0.1:\(port)"
        let slot = fixture.loops[0]
        let group = try fixture.throttle([(slot.majorMinor, 3_000_000, nil)])
        let station = try fixture.startStation(cgroup: group)
        defer { if station.isRunning { kill(station.pid, SIGKILL) } }
        let events = StationEvents(station)

        // Before any card: one station, its slot idle, the whole queue remaining, no entries.
        let stations = try Web.get(base + "/api/stations")
        #expect(stations.status == 200)
        let listed = try #require(stations.json?["stations"] as? [[String: Any]])
        #expect(listed.count == 1)
        #expect(listed.first?["hosts"] as? String == fixture.hostsDir)
        #expect((listed.first?["slots"] as? [[String: Any]])?.map { $0["state"] as? String } == ["idle"])
        let queue = try #require(try Web.get(base + "/api/queue").json)
        #expect(queue["remaining"] as? Int == 2 && queue["done"] as? Int == 0)
        #expect((try Web.get(base + "/api/journal?limit=5").json?["entries"] as? [Any])?.isEmpty == true)

        // The page, open in a real browser from now on (never reloaded).
        let profile = fixture.scratch.file("chromium-live")
        let page = try Chromium.LivePage(base + "/", profile: profile)
        #expect(Web.waitFor(timeout: 60, { page.title().flatMap { $0.contains("TA idle") ? $0 : nil } }) != nil,
                "the page shows the idle slot: \(page.title() ?? "no title")")

        let cardFile = try fixture.blankCard("card")
        let cardSize = try FileManager.default.attributesOfItem(atPath: cardFile)[.size] as! UInt64
        try slot.insert(cardFile)
        let writing = events.next { event in
            event["event"] as? String == "progress" && event["phase"] as? String == "write" && (event["bytes"] as? Int ?? 0) > 0
        }
        #expect(writing != nil, "the write started")
        let flashing = try Web.waitFor(timeout: 30) { () -> [String: Any]? in
            let slots = try Web.get(base + "/api/slots").json?["slots"] as? [[String: Any]]
            return slots?.first { $0["state"] as? String == "flashing" && $0["phase"] as? String == "write"
                && ($0["rate"] as? Double ?? 0) > 0 }
        }
        let busy = try #require(flashing, "the API shows the slot writing")
        #expect(busy["slot"] as? String == "TA" && busy["host"] as? String == "pi-01")
        #expect(busy["card_size"] as? Int == Int(cardSize), "the card's size")
        #expect(busy["device"] as? String == slot.path)
        #expect((busy["percent"] as? Int).map { (0...100).contains($0) } == true)
        #expect(Web.waitFor(timeout: 30, { page.title().flatMap { $0.contains("TA flashing") ? $0 : nil } }) != nil,
                "the open page shows the slot flashing: \(page.title() ?? "")")
        let during = try Chromium.dumpDOM(base + "/", profile: fixture.scratch.file("chromium-dump1"))
        #expect(during.contains("data-slot=\"TA\" data-state=\"flashing\""), "\(during.suffix(3000))")
        #expect(during.contains("class=\"bar\""), "a progress bar")
        #expect(during.contains("ETA "), "with an ETA")

        fixture.unthrottle(group, slot.majorMinor)
        let result = try #require(events.result("TA"))
        #expect(result["ok"] as? Bool == true, "\(result["error"] ?? "")")
        // The same page, without reloading, follows the card to the end.
        #expect(Web.waitFor(timeout: 30, { page.title().flatMap { $0.contains("TA verified") ? $0 : nil } }) != nil,
                "the open page updates when the card finishes: \(page.title() ?? "")")

        // The API's journal entry against independent sources: ssh-keygen's fingerprint of the
        // host's key, piflash history for the card.
        let entries = try #require(try Web.get(base + "/api/journal?limit=5").json?["entries"] as? [[String: Any]])
        let entry = try #require(entries.first)
        #expect(entries.count == 1)
        #expect(entry["host"] as? String == "pi-01" && entry["ok"] as? Bool == true && entry["slot"] as? String == "TA")
        let fingerprint = try Shell.sh("ssh-keygen -lf '\(fixture.hostsDir)/secrets/pi-01/ssh_host_ed25519_key'")
            .split(separator: " ")[1]
        #expect(entry["host_key_fingerprint"] as? String == String(fingerprint))
        #expect((entry["write_rate"] as? Double ?? 0) > 0 && (entry["verify_rate"] as? Double ?? 0) > 0)
        let history = try Shell.run([Shell.piflash, "history", "--journal", fixture.journal, "--json"])
        let recorded = try #require(history.stdout.split(separator: "\n").compactMap { StationFixture.event(String($0)) }.first)
        #expect(entry["id"] as? Int == recorded["id"] as? Int)
        #expect(entry["device_serial"] as? String == recorded["device_serial"] as? String)
        #expect(entry["reader"] as? String == recorded["device_by_path"] as? String)
        let doneQueue = try #require(try Web.get(base + "/api/queue").json)
        #expect(doneQueue["done"] as? Int == 1 && doneQueue["remaining"] as? Int == 1, "\(doneQueue)")

        // Never a secret: neither the Wi-Fi PSK nor the private key appear in any answer.
        let key = try String(contentsOfFile: "\(fixture.hostsDir)/secrets/pi-01/ssh_host_ed25519_key", encoding: .utf8)
        let keyLine = key.split(separator: "\n")[1]
        for path in ["/api/stations", "/api/slots", "/api/queue", "/api/journal?limit=500", "/"] {
            let body = try Web.get(base + path).body
            #expect(!body.contains("psk-pi-01") && !body.contains(keyLine), "\(path) shows no secret")
        }

        // The page as a phone shows it: the slot, the entry with host, reader and fingerprint.
        let after = try Chromium.dumpDOM(base + "/", profile: fixture.scratch.file("chromium-dump2"), width: 390, height: 844)
        #expect(after.contains("data-slot=\"TA\" data-state=\"verified\" data-host=\"pi-01\""), "\(after.suffix(3000))")
        #expect(after.contains("data-entry=\"\(recorded["id"] as? Int ?? -1)\" data-result=\"ok\" data-host=\"pi-01\""))
        #expect(after.contains(String(fingerprint)))
        #expect(after.contains("data-host=\"pi-01\" data-state=\"done\""), "the queue shows pi-01 done")
        #expect(after.contains("1 done · 0 claimed · 1 remaining"))

        kill(station.pid, SIGTERM)
        #expect(station.finish(timeout: 60).status == 0)
    }

    @Test("a listener that is not loopback answers 401 without the token, 200 with it (Bearer or ?token=), from another network namespace")
    func tokenOnNonLoopbackListener() throws {
        let namespace = try NetworkNamespace()
        let port = 8480
        let token = "t0k3n-" + UUID().uuidString
        let fixture = try StationFixture(slots: [251], hosts: ["pi-01"],
                                         extraConfig: "[web]\nlisten = \"\(namespace.inside):\(port)\"\ntoken_file = \"web-token\"\n")
        try (token + "\n").write(toFile: fixture.scratch.file("web-token"), atomically: true, encoding: .utf8)
        let station = try fixture.startStation(netns: namespace.name)
        defer { if station.isRunning { kill(station.pid, SIGKILL) } }
        let base = "http://\(namespace.inside):\(port)"
        for path in ["/", "/api/slots", "/api/stations", "/api/queue", "/api/journal?limit=3"] {
            let denied = try Web.get(base + path)
            #expect(denied.status == 401, "\(path) without the token: \(denied.status)")
            #expect(!denied.body.contains("TA"), "no state without the token")
            #expect(try Web.get(base + path, header: "Authorization: Bearer wrong-\(token)").status == 401)
        }
        let withHeader = try Web.get(base + "/api/slots", header: "Authorization: Bearer \(token)")
        #expect(withHeader.status == 200)
        #expect((withHeader.json?["slots"] as? [[String: Any]])?.first?["slot"] as? String == "TA")
        #expect(try Web.get(base + "/api/queue?token=\(token)").status == 200)
        #expect(try Web.get(base + "/?token=\(token)").body.contains("<title>piflash</title>"))
        // From inside the station's namespace, its loopback is not served: the listener is the veth address only.
        #expect(try Web.get("http://127.0.0.1:\(port)/api/slots", netns: namespace.name).status == 0, "nothing on loopback")
        kill(station.pid, SIGTERM)
        #expect(station.finish(timeout: 60).status == 0)
    }

    @Test("a non-loopback [web] without token_file is refused at start (exit 2)")
    func nonLoopbackWithoutToken() throws {
        let scratch = try ScratchDirectory("piflash-station-test")
        let config = scratch.file("station.toml")
        try "queue = [\"x\"]\n[[slot]]\nname = \"A\"\nmatch = { PIFLASH_SLOT = \"nothing\" }\n[web]\nlisten = \"0.0.0.0:8480\"\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let run = try Shell.run([Shell.piflash, "station", "--config", config])
        #expect(run.status == 2)
        #expect(run.stderr.contains("token_file"), "\(run.stderr)")
    }
}
