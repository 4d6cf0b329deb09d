import Foundation
import PiflashKit
import PiflashSecrets
import Testing

/// The journal schema of piflash before keyed digests (user_version 1), as that version created it.
let journalSchemaVersion1 = """
    PRAGMA journal_mode=WAL;
    CREATE TABLE flashes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT, command TEXT NOT NULL,
        host TEXT, slot TEXT, device_path TEXT, device_model TEXT, device_serial TEXT, device_by_path TEXT,
        device_size INTEGER, output_path TEXT, image_path TEXT NOT NULL, image_sha256 TEXT, bytes INTEGER,
        write_seconds REAL, verify_seconds REAL, inject_seconds REAL, write_rate REAL, verify_rate REAL,
        host_key_fingerprint TEXT, ok INTEGER NOT NULL DEFAULT 0, error TEXT, exit_code INTEGER);
    CREATE INDEX flashes_by_host ON flashes(host, ok, id);
    CREATE TABLE injected_files (
        flash_id INTEGER NOT NULL REFERENCES flashes(id) ON DELETE CASCADE, position INTEGER NOT NULL,
        path TEXT NOT NULL, sha256 TEXT NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
        PRIMARY KEY (flash_id, position));
    CREATE TABLE claims (host TEXT PRIMARY KEY, claimant TEXT NOT NULL, claimed_at TEXT NOT NULL, claimed_unix REAL NOT NULL);
    PRAGMA user_version = 1;
    """

/// A version-1 journal made with the sqlite3 CLI: `bastet` flashed ok (plain digests of its key
/// and env files, as old versions recorded them), `bastet` failed with an old-style mismatch
/// message, `other` flashed ok. Returns the plain digests it holds.
func makeVersion1Journal(_ path: String, env: [UInt8], key: [UInt8]) throws -> (env: String, key: String) {
    let envHex = independentSHA256(env)
    let keyHex = independentSHA256(key)
    let pubHex = independentSHA256(Array("ssh-ed25519 AAAA bastet\n".utf8))
    let sql = journalSchemaVersion1 + """

        INSERT INTO flashes (started_at, finished_at, command, host, output_path, image_path, ok, exit_code)
            VALUES ('2026-01-01T00:00:00.000Z', '2026-01-01T00:01:00.000Z', 'flash', 'bastet', '/tmp/b.img', '/i.img', 1, 0);
        INSERT INTO injected_files VALUES (1, 0, '/var/lib/bootstrap/ssh_host_ed25519_key', '\(keyHex)', 384, 0, 0);
        INSERT INTO injected_files VALUES (1, 1, '/var/lib/bootstrap/ssh_host_ed25519_key.pub', '\(pubHex)', 420, 0, 0);
        INSERT INTO injected_files VALUES (1, 2, '/var/lib/networkmanager/system-connections.env', '\(envHex)', 384, 0, 0);
        INSERT INTO flashes (started_at, finished_at, command, host, device_path, image_path, ok, error, exit_code)
            VALUES ('2026-01-02T00:00:00.000Z', '2026-01-02T00:01:00.000Z', 'flash', 'bastet', '/dev/sdb', '/i.img', 0,
            '/var/lib/networkmanager/system-connections.env as read back differs from what was injected: content SHA-256 is \(String(repeating: "0", count: 64)) (4096 bytes), expected \(envHex) (\(env.count) bytes)', 4);
        INSERT INTO flashes (started_at, finished_at, command, host, output_path, image_path, ok, exit_code)
            VALUES ('2026-01-03T00:00:00.000Z', '2026-01-03T00:01:00.000Z', 'flash', 'other', '/tmp/o.img', '/i.img', 1, 0);
        """
    let result = try hostsRunTool(["sqlite3", "-batch", path], input: Array(sql.utf8))
    #expect(result.status == 0, "sqlite3: \(result.output)")
    return (envHex, keyHex)
}

/// The bytes of the database file and of its write-ahead log (when there is one).
func journalBytes(_ path: String) -> Data {
    var data = FileManager.default.contents(atPath: path) ?? Data()
    data.append(FileManager.default.contents(atPath: path + "-wal") ?? Data())
    return data
}

@Suite("The journal: keyed digests and journals from before them",
       .enabled(if: hostsToolExists("sqlite3"), "needs the sqlite3 CLI (an independent writer and reader)"))
struct JournalDigestTests {
    let env = Array("WIFI_SSID=home\nWIFI_PSK=sunshine\n".utf8)
    let key = Array("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n-----END OPENSSH PRIVATE KEY-----\n".utf8)

    @Test("new entries record the digest kind; a keyed digest is stored as hmac_sha256, never as a plain sha256")
    func kindsAreStored() throws {
        let folder = try HostsTempFolder()
        let path = folder.path + "/j.sqlite"
        let journal = try Journal(path: path)
        let digestKey = try #require(DigestKey(secrets: SecretValues(["wifi_psk": Array("sunshine".utf8)]), names: ["wifi_psk"]))
        var entry = JournalEntry(command: "flash", host: "bastet", imagePath: "/i.img", ok: true)
        entry.files = [
            BootstrapFile(path: "/var/lib/networkmanager/system-connections.env", content: env, mode: 0o600, digestKey: digestKey).record,
            BootstrapFile(path: "/var/lib/motd", content: Array("hi\n".utf8), mode: 0o644).record,
        ]
        let id = try journal.record(entry)
        let rows = try hostsRunTool(["sqlite3", "-batch", path,
                                     "SELECT digest_kind, digest FROM injected_files WHERE flash_id = \(id) ORDER BY position"]).output
        #expect(rows == "hmac_sha256|\(digestKey.macHex(env))\nsha256|\(independentSHA256(Array("hi\n".utf8)))\n")
        #expect(try hostsRunTool(["sqlite3", path, "PRAGMA user_version"]).output == "\(Journal.schemaVersion)\n")
        #expect(Journal.schemaVersion >= 3, "the digest kind came with version 3")
        #expect(try journal.entry(id: id)?.files == entry.files)
        #expect(try journal.entriesWithPlainDigests().isEmpty)
        #expect(journalBytes(path).range(of: Data(independentSHA256(env).utf8)) == nil)
    }

    @Test("a version-1 journal opens, lists its plain digests as legacy, names those entries, and takes new entries")
    func version1Opens() throws {
        let folder = try HostsTempFolder()
        let path = folder.path + "/old.sqlite"
        let plain = try makeVersion1Journal(path, env: env, key: key)
        let journal = try Journal(path: path)
        #expect(try hostsRunTool(["sqlite3", path, "PRAGMA user_version"]).output == "\(Journal.schemaVersion)\n")
        let entries = try journal.entries()
        #expect(entries.map(\.host) == ["other", "bastet", "bastet"])
        let first = try #require(try journal.entry(id: 1))
        #expect(first.files.map(\.digest) == [
            .legacySHA256(plain.key), .legacySHA256(independentSHA256(Array("ssh-ed25519 AAAA bastet\n".utf8))),
            .legacySHA256(plain.env),
        ])
        #expect(first.files[2].describes(BootstrapFile(path: first.files[2].path, content: env, mode: 0o600)))
        #expect(try journal.entriesWithPlainDigests() == [1, 2])
        #expect(try journal.entriesWithPlainDigests(host: "other") == [])
        let json = first.json.serialized()
        #expect(json.contains("\"legacy_plain_digest\":true"))
        // New entries go in beside the old ones.
        _ = try journal.record(JournalEntry(command: "flash", host: "new", imagePath: "/i.img", ok: true))
        #expect(try journal.entries().count == 4)
    }

    @Test("--scrub-plain-digests' work: the plain digests leave the database file and its log; the rest stays")
    func scrub() throws {
        let folder = try HostsTempFolder()
        let path = folder.path + "/old.sqlite"
        let plain = try makeVersion1Journal(path, env: env, key: key)
        #expect(journalBytes(path).range(of: Data(plain.env.utf8)) != nil, "the fixture holds the plain digest")
        let journal = try Journal(path: path)
        let digestKey = try #require(DigestKey(secrets: SecretValues(["wifi_psk": Array("sunshine".utf8)]), names: ["wifi_psk"]))
        var fresh = JournalEntry(command: "flash", host: "bastet", imagePath: "/i.img", ok: true)
        fresh.files = [BootstrapFile(path: "/e", content: env, mode: 0o600, digestKey: digestKey).record]
        let freshID = try journal.record(fresh)

        let done = try journal.scrubPlainDigests()
        #expect(done.entries == [1, 2])
        #expect(done.files == 3)
        #expect(done.errors == 1)
        #expect(done.logEmptied)
        let bytes = journalBytes(path)
        for hex in [plain.env, plain.key] {
            #expect(bytes.range(of: Data(hex.utf8)) == nil, "no plain digest left in the file or its log")
        }
        #expect(try journal.entriesWithPlainDigests().isEmpty)
        let first = try #require(try journal.entry(id: 1))
        #expect(first.files.map(\.digest) == [.scrubbed, .scrubbed, .scrubbed])
        #expect(first.files.map(\.path).last == "/var/lib/networkmanager/system-connections.env", "paths stay")
        let failed = try #require(try journal.entry(id: 2))
        #expect(failed.error?.contains("content digest is (scrubbed), expected (scrubbed)") == true, "\(failed.error ?? "")")
        #expect(failed.error?.contains("bytes") == false, "the sizes are gone too")
        #expect(try journal.entry(id: freshID)?.files == fresh.files, "keyed digests stay")
        // The independent reader agrees, and the database is sound.
        #expect(try hostsRunTool(["sqlite3", path, "PRAGMA integrity_check"]).output == "ok\n")
        #expect(try hostsRunTool(["sqlite3", path, "SELECT count(*) FROM injected_files WHERE digest_kind = 'scrubbed'"]).output == "3\n")
        // A second scrub has nothing to do.
        #expect(try journal.scrubPlainDigests().entries.isEmpty)
    }
}
