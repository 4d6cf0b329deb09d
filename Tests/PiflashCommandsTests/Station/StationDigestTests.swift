import Foundation
import Testing

/// The station with a host whose Wi-Fi passphrase is an 8-character word: what it prints, its
/// state file, `--status` and the journal hold keyed digests only, and its "already provisioned"
/// check works with keyed digests and with the plain ones an older piflash recorded.
@Suite("piflash station records keyed digests only", .serialized,
       .enabled(if: StationEnvironment.available, "needs root, loop devices and systemd-udevd"))
struct StationDigestTests {
    static let envPath = "/var/lib/networkmanager/system-connections.env"
    static let keyPath = "/var/lib/bootstrap/ssh_host_ed25519_key"

    @Test("no plain digest of a secret in the station's output, state file, --status or journal; reinserted cards are recognised by keyed and by old plain digests")
    func keyedDigestsOnly() throws {
        let fixture = try StationFixture(slots: [239], hosts: ["pi-01"], psks: ["pi-01": "sunshine"])
        let secrets = "\(fixture.hostsDir)/secrets/pi-01"
        let envFile = fixture.scratch.file("env.expected")
        try "WIFI_SSID=net-pi-01\nWIFI_PSK=sunshine\n".write(toFile: envFile, atomically: true, encoding: .utf8)
        let plain = [
            "env file": try ImageFixture.sha256(envFile), "private key file": try ImageFixture.sha256(secrets + "/ssh_host_ed25519_key"),
            "passphrase": try ImageFixture.sha256(secrets + "/wifi_psk"),
        ]
        let keyed = try IndependentDigest.hmac(
            secretsFolder: secrets, names: ["ssh_host_ed25519_key", "wifi_psk", "wifi_ssid"],
            files: [envFile, secrets + "/ssh_host_ed25519_key"])

        let station = try fixture.startStation()
        defer { if station.isRunning { kill(station.pid, SIGKILL) } }
        let card = try fixture.blankCard("card")
        let slot = fixture.loops[0]
        try slot.insert(card)
        let events = StationEvents(station)
        let result = try #require(events.result("TA"))
        #expect(result["ok"] as? Bool == true, "\(result["error"] ?? "")")
        let files = result["files"] as? [[String: Any]] ?? []
        func digest(_ path: String, _ field: String) -> String? {
            files.first { $0["path"] as? String == path }?[field] as? String
        }
        #expect(digest(Self.envPath, "hmac_sha256") == keyed[0], "the env file's keyed digest recomputes from the secrets")
        #expect(digest(Self.keyPath, "hmac_sha256") == keyed[1])
        #expect(digest(Self.envPath, "sha256") == nil)
        let env = try StationFixture.withMountedRoot(of: card, in: fixture.scratch) { root in
            try Shell.sh("cat '\(root)\(Self.envPath)'")
        }
        #expect(env == "WIFI_SSID=net-pi-01\nWIFI_PSK=sunshine\n")
        let journalFiles = { [fixture.journal, fixture.journal + "-wal"].compactMap { FileManager.default.contents(atPath: $0) } }
        for (what, hex) in plain {
            #expect(!IndependentDigest.occurs(hex, in: journalFiles()), "the plain SHA-256 of the \(what) is in the journal")
        }

        // Reinserted: the keyed digests recomputed from the secrets match the journal's.
        func reinsert() throws -> [String: Any]? {
            slot.detach()
            #expect(events.slot("TA", "idle", timeout: 60) != nil)
            try slot.insert(card)
            return events.next(timeout: 120) { event in
                event["event"] as? String == "slot" && event["slot"] as? String == "TA"
                    && (event["state"] as? String == "verified" || event["state"] as? String == "flashing")
            }
        }
        let again = try #require(try reinsert())
        #expect(again["state"] as? String == "verified" && again["already_provisioned"] as? Bool == true, "\(again)")

        // The same entry as a piflash before keyed digests recorded it (plain SHA-256, no kind):
        // still read, still recognised.
        let update = """
            UPDATE injected_files SET digest = '\(plain["env file"]!)' WHERE path = '\(Self.envPath)';
            UPDATE injected_files SET digest = '\(plain["private key file"]!)' WHERE path = '\(Self.keyPath)';
            UPDATE injected_files SET digest_kind = NULL;
            """
        #expect(try Shell.run(["sqlite3", fixture.journal], input: update).status == 0)
        let legacy = try #require(try reinsert())
        #expect(legacy["state"] as? String == "verified" && legacy["already_provisioned"] as? Bool == true,
                "a journal entry with old plain digests still proves the card: \(legacy)")

        let status = try Shell.run([Shell.piflash, "station", "--status", "--config", fixture.configPath])
        let statusJSON = try Shell.run([Shell.piflash, "station", "--status", "--json", "--config", fixture.configPath])
        #expect(status.status == 0 && status.stdout.contains("\n  TA  "), "\(status.stdout)")
        #expect(statusJSON.status == 0 && statusJSON.stdout.contains("\"slot\":\"TA\""), "\(statusJSON.stdout)")
        kill(station.pid, SIGTERM)
        let end = station.finish(timeout: 60)
        #expect(end.status == 0, "stderr: \(end.stderr)")
        let state = try #require(FileManager.default.contents(atPath: fixture.stateFile))
        let places: [(String, Data)] = [
            ("station output", Data((end.lines.joined(separator: "\n") + end.stderr).utf8)), ("state file", state),
            ("--status", Data((status.stdout + status.stderr + statusJSON.stdout).utf8)),
        ]
        for (what, hex) in plain {
            for (place, bytes) in places {
                #expect(!IndependentDigest.occurs(hex, in: [bytes]), "the plain SHA-256 of the \(what) is in the \(place)")
            }
        }
        #expect(end.lines.contains { $0.contains("\"hmac_sha256\":\"\(keyed[0])\"") }, "the result carries the keyed digest")
    }
}
