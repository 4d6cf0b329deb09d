import Foundation
import Testing

/// A hosts folder with one host whose secrets are a plain `dir` (an ssh-keygen key, an SSID and a
/// Wi-Fi passphrase that is an 8-character word), and an image from scripts/mk-nixos-like-image.
final class WordPassphraseHost {
    let scratch: ScratchDirectory
    let hostsDirectory: String
    let secrets: String
    let name = "wren"
    let psk = "sunshine"
    /// The environment file as it must land on the card, written here for sha256sum and Python.
    let expectedEnvFile: String
    var keyFile: String { secrets + "/ssh_host_ed25519_key" }
    /// The secrets the host's files use (the digest key's input).
    let secretNames = ["ssh_host_ed25519_key", "wifi_psk", "wifi_ssid"]

    init() throws {
        scratch = try ScratchDirectory("piflash-test-digest")
        hostsDirectory = scratch.file("hosts")
        secrets = "\(hostsDirectory)/secrets/\(name)"
        try Shell.sh("""
            mkdir -p '\(secrets)' '\(scratch.path)/result' \
            && ssh-keygen -q -t ed25519 -N '' -C '' -f '\(secrets)/ssh_host_ed25519_key' \
            && rm '\(secrets)/ssh_host_ed25519_key.pub' && printf 'Pi Net' > '\(secrets)/wifi_ssid' \
            && printf '\(psk)' > '\(secrets)/wifi_psk'
            """)
        expectedEnvFile = scratch.file("env.expected")
        try "WIFI_SSID=Pi Net\nWIFI_PSK=\(psk)\n".write(toFile: expectedEnvFile, atomically: true, encoding: .utf8)
        let raw = scratch.file("result/nixos-image-sd-card-25.05-aarch64-linux.img")
        try Shell.sh("'\(Shell.packageRoot)/scripts/mk-nixos-like-image' '\(raw)' >/dev/null")
        let image = try ImageFixture.compress(raw, "zst")
        try """
            [image]
            path = "../result/\((image as NSString).lastPathComponent)"
            [secrets]
            dir = "secrets/\(name)"
            \(HostFileText.canonicalFiles())
            """.write(toFile: "\(hostsDirectory)/\(name).toml", atomically: true, encoding: .utf8)
    }

    var journal: String { scratch.file("journal.sqlite") }

    func flashArguments(_ extra: [String]) -> [String] {
        ["flash", name, "--hosts", hostsDirectory, "--journal", journal] + extra
    }

    /// The plain SHA-256 digests that must appear nowhere: of the env file, of the private key
    /// file, and of the passphrase itself.
    func plainSecretDigests() throws -> [String: String] {
        [
            "env file": try ImageFixture.sha256(expectedEnvFile),
            "private key file": try ImageFixture.sha256(keyFile),
            "passphrase": try ImageFixture.sha256(secrets + "/wifi_psk"),
        ]
    }

    /// The keyed digests of the env and key files, recomputed by Python from the secrets.
    func keyedDigests() throws -> (env: String, key: String) {
        let macs = try IndependentDigest.hmac(secretsFolder: secrets, names: secretNames, files: [expectedEnvFile, keyFile])
        return (macs[0], macs[1])
    }

    /// The journal's database file and write-ahead log, as bytes.
    func journalBytes() -> [Data] {
        [journal, journal + "-wal"].compactMap { FileManager.default.contents(atPath: $0) }
    }
}

@Suite("what piflash records reveals no secret", .serialized,
       .enabled(if: CandidateTagging.ready, "needs root (loop devices) and systemd-udevd"), .candidateTagging)
struct DigestPrivacyTests {
    static let envPath = "/var/lib/networkmanager/system-connections.env"
    static let keyPath = "/var/lib/bootstrap/ssh_host_ed25519_key"
    static let pubPath = "/var/lib/bootstrap/ssh_host_ed25519_key.pub"

    @Test("flash with an 8-character passphrase: no plain digest of a secret in --json, the summary, history or the journal file; the keyed digests recompute from the secrets",
          arguments: ["--output", "--device"])
    func flashRecordsOnlyKeyedDigests(target: String) throws {
        let host = try WordPassphraseHost()
        var card: CandidateCard?
        let first: [String], second: [String], written: String
        if target == "--device" {
            card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
            first = ["--device", card!.path, "--yes", "--no-eject"]
            second = first
            written = card!.path
        } else {
            written = host.scratch.file("wren.img")
            first = ["--output", written]
            second = ["--output", host.scratch.file("again.img")]
        }
        let run = try runPiflash(host.flashArguments(first + ["--json"]))
        #expect(run.status == 0, "stderr: \(run.stderr)")
        let result = try #require(run.result)
        #expect(result["ok"] as? Bool == true, "\(result["error"] ?? "")")
        let human = try Shell.run([Shell.piflash] + host.flashArguments(second))
        #expect(human.status == 0, "stderr: \(human.stderr)")
        let history = try Shell.run([Shell.piflash, "history", host.name, "--journal", host.journal, "--json"])
        let historyHuman = try Shell.run([Shell.piflash, "history", "--journal", host.journal])
        #expect(history.status == 0 && historyHuman.status == 0)
        #expect(!historyHuman.stderr.contains("note:"), "a new journal has no plain digests to note: \(historyHuman.stderr)")

        // Nowhere: not as hex, not as raw bytes.
        let outputs = [
            ("--json output", Data((run.lines.joined(separator: "\n") + run.stderr).utf8)),
            ("human summary", Data((human.stdout + human.stderr).utf8)),
            ("history", Data((history.stdout + historyHuman.stdout + historyHuman.stderr).utf8)),
        ] + host.journalBytes().map { ("journal database", $0) }
        #expect(outputs.count >= 4, "the journal file exists")
        for (what, hex) in try host.plainSecretDigests() {
            for (place, bytes) in outputs {
                #expect(!IndependentDigest.occurs(hex, in: [bytes]), "the plain SHA-256 of the \(what) is in the \(place)")
            }
        }
        #expect(!human.stdout.contains(host.psk) && !run.lines.joined().contains(host.psk))

        // The keyed digests are there, and recompute (Python, from the secret files) to the same values.
        let keyed = try host.keyedDigests()
        let files = try #require(result["files"] as? [[String: Any]])
        func file(_ path: String, in list: [[String: Any]]) -> [String: Any] { list.first { $0["path"] as? String == path } ?? [:] }
        #expect(file(Self.envPath, in: files)["hmac_sha256"] as? String == keyed.env)
        #expect(file(Self.keyPath, in: files)["hmac_sha256"] as? String == keyed.key)
        #expect(file(Self.envPath, in: files)["sha256"] == nil)
        // The public key file keeps its plain SHA-256, of the bytes debugfs reads from the card.
        let root = try rootPartition(of: written)
        let pubDigest = String(try Shell.sh("debugfs -R 'cat \(Self.pubPath)' '\(written)?offset=\(root.offset)' 2>/dev/null | sha256sum").prefix(64))
        #expect(file(Self.pubPath, in: files)["sha256"] as? String == pubDigest)
        #expect(file(Self.pubPath, in: files)["hmac_sha256"] == nil)
        // The env file on the card is the one the digests describe.
        let onCard = try Shell.sh("debugfs -R 'cat \(Self.envPath)' '\(written)?offset=\(root.offset)' 2>/dev/null")
        #expect(onCard == "WIFI_SSID=Pi Net\nWIFI_PSK=\(host.psk)\n")

        // The `injected` events, the summary and the journal carry the same keyed digests.
        let injected = run.lines.compactMap { StationFixture.event($0) }.filter { $0["event"] as? String == "injected" }
        #expect(file(Self.envPath, in: injected)["hmac_sha256"] as? String == keyed.env)
        #expect(human.stdout.contains("\(Self.envPath)  hmac-sha256 \(keyed.env.prefix(16))…"), "summary: \(human.stdout)")
        #expect(human.stdout.contains("\(Self.pubPath)  sha256 \(pubDigest.prefix(16))…"))
        let entries = history.stdout.split(separator: "\n").compactMap { StationFixture.event(String($0)) }
        #expect(entries.count == 2)
        for entry in entries {
            let recorded = entry["files"] as? [[String: Any]] ?? []
            #expect(file(Self.envPath, in: recorded)["hmac_sha256"] as? String == keyed.env)
            #expect(file(Self.keyPath, in: recorded)["hmac_sha256"] as? String == keyed.key)
        }
        _ = card
    }

    @Test("a journal from before keyed digests lists through piflash history, which names its plain-digest entries; --scrub-plain-digests removes them")
    func oldJournalThroughTheCommand() throws {
        let host = try WordPassphraseHost()
        let plain = try host.plainSecretDigests()
        // The version-1 schema, as piflash before keyed digests created it, written by sqlite3.
        let sql = """
            PRAGMA journal_mode=WAL;
            CREATE TABLE flashes (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
                command TEXT NOT NULL, host TEXT, slot TEXT, device_path TEXT, device_model TEXT, device_serial TEXT,
                device_by_path TEXT, device_size INTEGER, output_path TEXT, image_path TEXT NOT NULL, image_sha256 TEXT,
                bytes INTEGER, write_seconds REAL, verify_seconds REAL, inject_seconds REAL, write_rate REAL,
                verify_rate REAL, host_key_fingerprint TEXT, ok INTEGER NOT NULL DEFAULT 0, error TEXT, exit_code INTEGER);
            CREATE INDEX flashes_by_host ON flashes(host, ok, id);
            CREATE TABLE injected_files (flash_id INTEGER NOT NULL REFERENCES flashes(id) ON DELETE CASCADE,
                position INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, mode INTEGER NOT NULL,
                uid INTEGER NOT NULL, gid INTEGER NOT NULL, PRIMARY KEY (flash_id, position));
            CREATE TABLE claims (host TEXT PRIMARY KEY, claimant TEXT NOT NULL, claimed_at TEXT NOT NULL, claimed_unix REAL NOT NULL);
            PRAGMA user_version = 1;
            INSERT INTO flashes (started_at, finished_at, command, host, output_path, image_path, ok, exit_code)
                VALUES ('2026-01-01T00:00:00.000Z', '2026-01-01T00:01:00.000Z', 'flash', 'wren', '/tmp/w.img', '/i.img', 1, 0);
            INSERT INTO injected_files VALUES (1, 0, '\(Self.keyPath)', '\(plain["private key file"]!)', 384, 0, 0);
            INSERT INTO injected_files VALUES (1, 1, '\(Self.envPath)', '\(plain["env file"]!)', 384, 0, 0);
            INSERT INTO flashes (started_at, finished_at, command, host, output_path, image_path, ok, exit_code)
                VALUES ('2026-01-02T00:00:00.000Z', '2026-01-02T00:01:00.000Z', 'write', NULL, '/tmp/x.img', '/i.img', 1, 0);
            """
        #expect(try Shell.run(["sqlite3", "-batch", host.journal], input: sql).status == 0)

        let list = try Shell.run([Shell.piflash, "history", "--journal", host.journal])
        #expect(list.status == 0, "stderr: \(list.stderr)")
        #expect(list.stdout.contains("wren") && list.stdout.split(separator: "\n").count == 3, "both entries listed: \(list.stdout)")
        #expect(list.stderr.contains("note: entry 1 carries plain SHA-256 digests"), "the note names the entry: \(list.stderr)")
        #expect(list.stderr.contains("--scrub-plain-digests"))
        let json = try Shell.run([Shell.piflash, "history", "--journal", host.journal, "--json"])
        #expect(json.stdout.contains("\"legacy_plain_digest\":true"))
        #expect(json.stdout.contains(plain["env file"]!), "old digests are read and shown")

        // A new flash into the old journal adds only keyed digests.
        let output = host.scratch.file("new.img")
        let flash = try runPiflash(host.flashArguments(["--output", output, "--json"]))
        #expect(flash.status == 0, "stderr: \(flash.stderr)")

        let scrub = try Shell.run([Shell.piflash, "history", "--journal", host.journal, "--scrub-plain-digests"])
        #expect(scrub.status == 0, "stderr: \(scrub.stderr)")
        #expect(scrub.stdout.contains("entry 1") && scrub.stdout.contains("2 file digests"), "\(scrub.stdout)")
        let after = try Shell.run([Shell.piflash, "history", "--journal", host.journal, "--json"])
        #expect(!after.stderr.contains("note:"), "nothing left to note: \(after.stderr)")
        #expect(after.stdout.contains("\"digest_scrubbed\":true"))
        #expect(after.stdout.contains("\"hmac_sha256\":\"\(try host.keyedDigests().env)\""), "the new entry's keyed digest stays")
        for (what, hex) in plain {
            #expect(!IndependentDigest.occurs(hex, in: host.journalBytes()), "the plain SHA-256 of the \(what) left the journal file")
        }
        #expect(try Shell.sh("sqlite3 '\(host.journal)' 'PRAGMA integrity_check'") == "ok\n")
    }
}
