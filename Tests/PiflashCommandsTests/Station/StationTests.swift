import Foundation
import Testing

/// `piflash station` end to end: a real systemd-udevd, loop devices as card readers (reserved
/// numbers 230–239), a runtime udev rule naming their slots, the station as a child process read
/// line by line, and independent checks (sfdisk, a read-only kernel mount, sha256sum, piflash
/// history).
@Suite("piflash station on loop-device readers", .serialized,
       .enabled(if: StationEnvironment.available, "needs root, loop devices and systemd-udevd"))
struct StationTests {
    @Test("two cards inserted together are flashed in parallel with different hosts from the queue")
    func twoCardsInParallel() throws {
        let fixture = try StationFixture(slots: [230, 231])
        let station = try fixture.startStation()
        defer { if station.isRunning { kill(station.pid, SIGKILL) } }
        let cardA = try fixture.blankCard("card-a")
        let cardB = try fixture.blankCard("card-b")
        try fixture.loops[0].insert(cardA)
        try fixture.loops[1].insert(cardB)

        let events = StationEvents(station)
        var results: [String: [String: Any]] = [:]
        var flashingTogether = false
        var writing: Set<String> = []
        _ = events.next(timeout: 300) { event in
            let slot = event["slot"] as? String ?? ""
            if event["event"] as? String == "slot", event["state"] as? String == "flashing",
               event["phase"] as? String == "write" {
                writing.insert(slot)
                if writing.count == 2 && results.isEmpty { flashingTogether = true }
            }
            if event["event"] as? String == "result" { results[slot] = event }
            return results.count == 2
        }
        #expect(flashingTogether, "both slots were writing before either finished")
        let a = try #require(results["TA"], "slot TA reported a result")
        let b = try #require(results["TB"], "slot TB reported a result")
        #expect(a["ok"] as? Bool == true, "TA: \(a["error"] ?? "")")
        #expect(b["ok"] as? Bool == true, "TB: \(b["error"] ?? "")")
        let hosts = Set([a["host"] as? String, b["host"] as? String].compactMap { $0 })
        #expect(hosts == ["pi-01", "pi-02"], "each card got its own host from the queue: \(hosts)")

        // Independently: each card holds its host's files, as the kernel reads them.
        for (card, result) in [(cardA, a), (cardB, b)] {
            let host = try #require(result["host"] as? String)
            let secrets = "\(fixture.hostsDir)/secrets/\(host)"
            let expectedKey = try Shell.sh("cat '\(secrets)/ssh_host_ed25519_key'")
            let expectedPub = try Shell.sh("ssh-keygen -y -f '\(secrets)/ssh_host_ed25519_key'")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            try StationFixture.withMountedRoot(of: card, in: fixture.scratch) { root in
                let key = try Shell.sh("cat '\(root)/var/lib/bootstrap/ssh_host_ed25519_key'")
                #expect(key == expectedKey)
                let pub = try Shell.sh("cat '\(root)/var/lib/bootstrap/ssh_host_ed25519_key.pub'")
                #expect(pub.hasPrefix(expectedPub), "the public key on the card is \(host)'s")
                let env = try Shell.sh("cat '\(root)/var/lib/networkmanager/system-connections.env'")
                #expect(env == "WIFI_SSID=net-\(host)\nWIFI_PSK=psk-\(host)\n")
                let modes = try Shell.sh("stat -c '%a %u %g' '\(root)/var/lib/bootstrap/ssh_host_ed25519_key' '\(root)/var/lib/bootstrap/ssh_host_ed25519_key.pub'")
                #expect(modes == "600 0 0\n644 0 0\n")
            }
        }

        // The journal (through piflash history) holds both, with their slots.
        let history = try Shell.run([Shell.piflash, "history", "--journal", fixture.journal, "--json"])
        #expect(history.status == 0)
        let entries = history.stdout.split(separator: "\n").compactMap { StationFixture.event(String($0)) }
        let okSlots = Set(entries.filter { $0["ok"] as? Bool == true && $0["command"] as? String == "station" }
            .compactMap { $0["slot"] as? String })
        #expect(okSlots == ["TA", "TB"], "history: \(history.stdout)")

        // The state file says the same; --status prints it.
        let status = try Shell.run([Shell.piflash, "station", "--status", "--config", fixture.configPath])
        #expect(status.status == 0)
        #expect(status.stdout.contains("TA  verified ✓"), "status: \(status.stdout)")
        #expect(status.stdout.contains("TB  verified ✓"), "status: \(status.stdout)")

        // Reinserted as it is: the journal and the card show it was just provisioned, so it is not flashed again.
        fixture.loops[0].detach()
        #expect(events.slot("TA", "idle", timeout: 60) != nil, "pulling the card makes the slot idle")
        try fixture.loops[0].insert(cardA)
        let again = events.next(timeout: 120) { event in
            event["event"] as? String == "slot" && event["slot"] as? String == "TA"
                && (event["state"] as? String == "verified" || event["state"] as? String == "flashing")
        }
        let reinserted = try #require(again)
        #expect(reinserted["state"] as? String == "verified" && reinserted["already_provisioned"] as? Bool == true,
                "a just-provisioned card is not flashed again: \(reinserted)")

        // One byte changed in a block the injection wrote: the card map no longer matches, so the
        // card is not "already provisioned" and is flashed again.
        fixture.loops[0].detach()
        #expect(events.slot("TA", "idle", timeout: 60) != nil)
        let rootA = try rootPartition(of: cardA)
        let blockSize = UInt64(try Shell.sh("dumpe2fs -h '\(cardA)?offset=\(rootA.offset)' 2>/dev/null | awk -F: '/^Block size/ {print $2}'")
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        let keyBlock = UInt64(try Shell.sh("debugfs -R 'bmap /var/lib/bootstrap/ssh_host_ed25519_key 0' '\(cardA)?offset=\(rootA.offset)' 2>/dev/null")
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        try Shell.sh("printf '\\x00' | dd of='\(cardA)' bs=1 seek=\(rootA.offset + keyBlock * blockSize) conv=notrunc status=none")
        try fixture.loops[0].insert(cardA)
        let changed = try #require(events.next(timeout: 120) { event in
            event["event"] as? String == "slot" && event["slot"] as? String == "TA"
                && (event["state"] as? String == "verified" || event["state"] as? String == "flashing")
        })
        #expect(changed["state"] as? String == "flashing", "a card whose injected block changed is flashed again: \(changed)")
        #expect(events.next(timeout: 300) { $0["event"] as? String == "result" && $0["slot"] as? String == "TA" } != nil)

        // SIGTERM: a clean stop, exit 0, and the state file says it stopped.
        kill(station.pid, SIGTERM)
        let end = station.finish(timeout: 60)
        #expect(end.status == 0, "stderr: \(end.stderr)")
        let state = try String(contentsOfFile: fixture.stateFile, encoding: .utf8)
        #expect(state.contains("\"running\":false"))
    }

    @Test("a card pulled mid-write fails cleanly, the station carries on, a card in no slot is never touched")
    func cardPulledMidWrite() throws {
        let fixture = try StationFixture(slots: [233], unslotted: [234], hosts: ["pi-01"])
        let slow = fixture.loops[0]
        let bystander = fixture.loops[1]
        // A card in a reader that is in no slot (but a candidate): its bytes must never change.
        let bystanderCard = fixture.scratch.file("bystander")
        try Shell.sh("head -c \(8 << 20) /dev/urandom > '\(bystanderCard)'")
        let bystanderBefore = try ImageFixture.sha256(bystanderCard)
        try bystander.insert(bystanderCard)

        // ~4 MB/s: the write takes many seconds, long enough to pull the card on a progress event.
        let group = try fixture.throttle([(slow.majorMinor, 4_000_000, nil)])
        let station = try fixture.startStation(cgroup: group)
        defer { if station.isRunning { kill(station.pid, SIGKILL) } }

        let first = try fixture.blankCard("first")
        try slow.insert(first)
        let events = StationEvents(station)
        let writing = events.next { event in
            event["event"] as? String == "progress" && event["slot"] as? String == "TA"
                && event["phase"] as? String == "write" && (event["bytes"] as? Int ?? 0) > 0
        }
        #expect(writing != nil, "the write started")
        try slow.pull()
        let result = try #require(events.result("TA", timeout: 120))
        #expect(result["ok"] as? Bool == false)
        #expect(result["exit_code"] as? Int == 1, "an operational failure: \(result["error"] ?? "")")
        let reason = result["error"] as? String ?? ""
        #expect(!reason.isEmpty)
        #expect(events.slot("TA", "failed", timeout: 30) != nil, "the slot shows the failure")

        // The journal holds the failure with its slot; the host went back to the queue.
        let history = try Shell.run([Shell.piflash, "history", "--journal", fixture.journal, "--json"])
        let entries = history.stdout.split(separator: "\n").compactMap { StationFixture.event(String($0)) }
        #expect(entries.contains { $0["slot"] as? String == "TA" && $0["ok"] as? Bool == false && $0["error"] as? String != nil },
                "history: \(history.stdout)")

        // The next card in the same slot works (and gets the host the failed card gave back).
        fixture.unthrottle(group, slow.majorMinor)
        slow.detach()
        let second = try fixture.blankCard("second")
        try slow.insert(second)
        // (The truncated loop device may come back with the few MiB the last in-flight writes
        // left in its file: the station then refuses that "card" as too small, which is right.)
        let next = events.next(timeout: 300) {
            $0["event"] as? String == "result" && $0["slot"] as? String == "TA" && $0["ok"] as? Bool == true
        }
        let ok = try #require(next, "the next card in the slot is flashed")
        #expect(ok["ok"] as? Bool == true, "\(ok["error"] ?? "")")
        #expect(ok["host"] as? String == "pi-01")
        #expect(try Shell.run(["cmp", "-n", "\(1 << 20)", fixture.scratch.file("nixos.img"), second]).status == 0,
                "the second card holds the image's partition table")

        kill(station.pid, SIGTERM)
        let end = station.finish(timeout: 60)
        #expect(end.status == 0, "stderr: \(end.stderr)")
        #expect(try ImageFixture.sha256(bystanderCard) == bystanderBefore, "the disk in no slot was never written")
        #expect(!end.lines.contains { $0.contains(bystander.path) }, "the station never even mentioned the unslotted disk")
    }

    @Test("SIGTERM during a write stops the job safely: card left unbootable, failure journaled, exit 0")
    func sigtermMidWrite() throws {
        let fixture = try StationFixture(slots: [235], hosts: ["pi-01"])
        let slot = fixture.loops[0]
        let group = try fixture.throttle([(slot.majorMinor, 4_000_000, nil)])
        let station = try fixture.startStation(cgroup: group)
        defer { if station.isRunning { kill(station.pid, SIGKILL) } }
        let card = try fixture.blankCard("card")
        // The card held a valid image before: afterwards it must not look valid.
        try Shell.sh("zstd -dc '\(fixture.image)' | dd of='\(card)' conv=notrunc status=none")
        try slot.insert(card)
        let writing = StationEvents(station).next { event in
            event["event"] as? String == "progress" && event["phase"] as? String == "write" && (event["bytes"] as? Int ?? 0) > 0
        }
        #expect(writing != nil)
        kill(station.pid, SIGTERM)
        let end = station.finish(timeout: 120)
        #expect(end.status == 0, "stderr: \(end.stderr)")
        let result = try #require(PiflashProcess.result(end.lines))
        #expect(result["ok"] as? Bool == false)
        #expect((result["error"] as? String ?? "").contains("SIGTERM"))
        #expect(try headIsZeroed(card), "the unfinished card has no partition table")
        let history = try Shell.run([Shell.piflash, "history", "--journal", fixture.journal, "--json"])
        #expect(history.stdout.contains("SIGTERM"), "the journal records the interruption")
    }
}

extension StationTests {
    @Test("a card already in a slot at start-up is flashed with the slot's fixed host; reflash = true flashes it again; READY=1 and STOPPING=1 reach $NOTIFY_SOCKET")
    func cardPresentAtStartUp() throws {
        let fixture = try StationFixture(
            slots: [236], hosts: ["pi-01"], slotHosts: [0: "demo"], ageHost: "demo",
            extraConfig: "reflash = true\nage_identity = \"\(Shell.packageRoot)/hosts/demo-age-identity.txt\"")
        let card = try fixture.blankCard("card")
        try fixture.loops[0].insert(card)
        let notify = try NotifySocket(in: fixture.scratch)
        let station = try fixture.startStation(environment: ["NOTIFY_SOCKET=\(notify.path)"])
        defer { if station.isRunning { kill(station.pid, SIGKILL) } }
        #expect(notify.waitFor("READY=1"), "systemd readiness over $NOTIFY_SOCKET")
        let events = StationEvents(station)
        let first = try #require(events.result("TA"))
        #expect(first["ok"] as? Bool == true, "\(first["error"] ?? "")")
        #expect(first["host"] as? String == "demo", "the slot's fixed host, not the queue's first")
        #expect((first["host_key_fingerprint"] as? String)?.hasPrefix("SHA256:") == true)
        // The age-encrypted secrets were decrypted with the station file's age_identity and injected.
        let env = try StationFixture.withMountedRoot(of: card, in: fixture.scratch) { root in
            try Shell.sh("cat '\(root)/var/lib/networkmanager/system-connections.env'")
        }
        #expect(env.hasPrefix("WIFI_SSID=") && env.contains("\nWIFI_PSK="), "\(env.count) bytes")
        // reflash = true: the same card, reinserted, is flashed again.
        fixture.loops[0].detach()
        #expect(events.slot("TA", "idle", timeout: 60) != nil)
        try fixture.loops[0].insert(card)
        let second = try #require(events.result("TA"))
        #expect(second["ok"] as? Bool == true)
        kill(station.pid, SIGTERM)
        #expect(notify.waitFor("STOPPING=1"))
        #expect(station.finish(timeout: 60).status == 0)
        let history = try Shell.run([Shell.piflash, "history", "--journal", fixture.journal, "--json"])
        let entries = history.stdout.split(separator: "\n").compactMap { StationFixture.event(String($0)) }
        #expect(entries.filter { $0["ok"] as? Bool == true && $0["host"] as? String == "demo" }.count == 2)
    }
}

extension PiflashProcess {
    /// Whether the process has not exited yet.
    var isRunning: Bool { kill(pid, 0) == 0 }
}
