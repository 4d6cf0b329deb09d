import Foundation
import PiflashKit
import PostgreSQLFixture
import Synchronization
import Testing

/// Runs the `sqlite3` CLI on a database: an independent reader of what the journal wrote.
private func sqlite3(_ database: String, _ sql: String) throws -> String {
    let result = try hostsRunTool(["sqlite3", "-batch", "-noheader", "-separator", "|", database, sql])
    #expect(result.status == 0, "sqlite3 failed on: \(sql)")
    return result.output.trimmingCharacters(in: .newlines)
}

private let sqliteCLI = hostsToolExists("sqlite3")

private func sampleEntry(host: String = "bastet") -> JournalEntry {
    JournalEntry(
        startedAt: Date(timeIntervalSince1970: 1_795_000_000.25), command: "flash", host: host, slot: nil,
        devicePath: "/dev/sdb", deviceModel: "STORAGE DEVICE", deviceSerial: "000000001206",
        deviceByPath: "pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0", deviceSize: 31_914_983_424,
        imagePath: "/nix/store/abc-sd-image/sd-image/nixos.img.zst")
}

/// The journal's two databases: every behaviour below is checked on both.
enum JournalBackend: String, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgresql

    var testDescription: String { rawValue }

    /// SQLite always; PostgreSQL where Debian's `postgresql` is installed (else said once).
    static let all: [JournalBackend] = {
        if let reason = PostgreSQLTestServer.unavailableReason {
            print("skipping the PostgreSQL journal tests: \(reason)")
            return [.sqlite]
        }
        // The server starts here, while the test plan is made: before any test runs a program.
        guard PostgreSQLTestServer.shared != nil else {
            print("skipping the PostgreSQL journal tests: the test server did not start")
            return [.sqlite]
        }
        return [.sqlite, .postgresql]
    }()
}

/// A fresh journal location of `backend`: a file in `folder`, or a new database on the shared
/// test server.
func freshJournal(_ backend: JournalBackend, in folder: HostsTempFolder, file: String = "j.sqlite") throws -> String {
    switch backend {
    case .sqlite: return folder.path + "/" + file
    case .postgresql:
        let server = try #require(PostgreSQLTestServer.shared, "the PostgreSQL test server started")
        return try server.createDatabase()
    }
}

/// Runs SQL on a journal with an independent client (`sqlite3` or `psql`), or nil when that
/// client is not installed.
func independentSQL(_ backend: JournalBackend, _ location: String, _ sql: String) throws -> String? {
    switch backend {
    case .sqlite:
        return sqliteCLI ? try sqlite3(location, sql) : nil
    case .postgresql:
        let server = try #require(PostgreSQLTestServer.shared)
        return try server.psql(String(location.split(separator: "/").last!), sql)
    }
}

@Suite("The journal")
struct JournalTests {
    @Test("default path: --journal, else root's /var/lib, else $XDG_STATE_HOME, else ~/.local/state")
    func defaultPath() {
        #expect(Journal.defaultPath(explicit: "/tmp/j.sqlite", environment: [:], isRoot: true) == "/tmp/j.sqlite")
        #expect(Journal.defaultPath(explicit: nil, environment: ["XDG_STATE_HOME": "/s"], isRoot: true)
            == "/var/lib/piflash/journal.sqlite")
        #expect(Journal.defaultPath(explicit: nil, environment: ["XDG_STATE_HOME": "/s", "HOME": "/home/u"], isRoot: false)
            == "/s/piflash/journal.sqlite")
        #expect(Journal.defaultPath(explicit: nil, environment: ["HOME": "/home/u"], isRoot: false)
            == "/home/u/.local/state/piflash/journal.sqlite")
        // A relative XDG_STATE_HOME is invalid by the XDG spec and ignored.
        #expect(Journal.defaultPath(explicit: nil, environment: ["XDG_STATE_HOME": "rel", "HOME": "/home/u"], isRoot: false)
            == "/home/u/.local/state/piflash/journal.sqlite")
    }

    @Test("begin leaves an unfinished row; finish completes it; the round trip keeps every field",
          arguments: JournalBackend.all)
    func roundTrip(_ backend: JournalBackend) throws {
        let folder = try HostsTempFolder()
        let path = try freshJournal(backend, in: folder, file: "nested/state/journal.sqlite")
        let journal = try Journal(path: path)
        if backend == .sqlite { #expect(FileManager.default.fileExists(atPath: path)) }

        var entry = sampleEntry()
        let id = try journal.begin(entry)
        let started = try #require(try journal.entries().first)
        #expect(started.id == id)
        #expect(started.finishedAt == nil)
        #expect(started.outcome == "unfinished")
        #expect(try journal.lastSuccess(host: "bastet") == nil)

        entry.id = id
        entry.finishedAt = Date(timeIntervalSince1970: 1_795_000_090.5)
        entry.imageSHA256 = String(repeating: "ab", count: 32)
        entry.bytes = 2_147_483_648
        entry.writeSeconds = 60.5
        entry.verifySeconds = 25.25
        entry.injectSeconds = 0.75
        entry.writeRate = 35_495_597.0
        entry.verifyRate = 85_048_000.5
        entry.files = [
            InjectedFile(path: "/var/lib/bootstrap/ssh_host_ed25519_key", digest: .hmacSHA256(String(repeating: "0", count: 64)), mode: 0o600, uid: 0, gid: 0),
            InjectedFile(path: "/var/lib/bootstrap/ssh_host_ed25519_key.pub", digest: .sha256(String(repeating: "1", count: 64)), mode: 0o644, uid: 0, gid: 0),
            InjectedFile(path: "/var/lib/x", digest: .hmacSHA256(String(repeating: "2", count: 64)), mode: 0o4755, uid: 1000, gid: 100),
        ]
        entry.hostKeyFingerprint = "SHA256:5fEFhhsioEBdFJcRBapCJ4LhqIzjzmDCP53ednmNSmI"
        entry.ok = true
        entry.exitCode = 0
        // A mapped flash by a station: what it wrote, and where, with the image's digests there.
        entry.station = "bench-2"
        entry.imageBytes = 2_147_483_648
        entry.mappedBytes = 1_300_000_768
        entry.writtenRanges = [
            WrittenRange(offset: 0, length: 42 << 20, sha256: String(repeating: "3", count: 64)),
            WrittenRange(offset: 64 << 20, length: 1_300_000_768 - (42 << 20), sha256: String(repeating: "4", count: 64)),
        ]
        try journal.finish(entry)

        let stored = try #require(try journal.entry(id: id))
        #expect(stored == entry)
        #expect(try journal.lastSuccess(host: "bastet") == entry)

        // A fresh connection (another process would see the same) reads it back identically.
        let reopened = try Journal(path: path)
        #expect(try reopened.entries(host: "bastet") == [entry])

        if backend == .postgresql {
            #expect(try independentSQL(backend, path, "SELECT version FROM schema_version") == "\(Journal.schemaVersion)")
            #expect(try independentSQL(backend, path,
                                       "SELECT data_type FROM information_schema.columns WHERE table_name = 'flashes' "
                                       + "AND column_name IN ('device_size', 'write_rate') ORDER BY column_name")
                == "bigint\ndouble precision")
        }
        if backend == .postgresql || sqliteCLI {
            #expect(try independentSQL(backend, path, "SELECT host, ok, device_serial, bytes, exit_code FROM flashes WHERE id = \(id)")
                == "bastet|1|000000001206|2147483648|0")
            #expect(try independentSQL(backend, path, "SELECT started_at, finished_at FROM flashes WHERE id = \(id)")
                == "2026-11-18T11:06:40.250Z|2026-11-18T11:08:10.500Z")
            #expect(try independentSQL(backend, path, "SELECT count(*), sum(CASE WHEN mode = 384 THEN 1 ELSE 0 END), max(uid) FROM injected_files WHERE flash_id = \(id)")
                == "3|1|1000")
            #expect(try independentSQL(backend, path, "SELECT station, image_bytes, mapped_bytes FROM flashes WHERE id = \(id)")
                == "bench-2|2147483648|1300000768")
            #expect(try independentSQL(backend, path, "SELECT count(*), sum(length) FROM written_ranges WHERE flash_id = \(id)")
                == "2|1300000768")
        }
        if backend == .sqlite && sqliteCLI {
            #expect(try sqlite3(path, "PRAGMA journal_mode") == "wal")
            #expect(try sqlite3(path, "PRAGMA user_version") == "\(Journal.schemaVersion)")
            #expect(try sqlite3(path, "SELECT host, ok, device_serial, bytes, exit_code FROM flashes WHERE id = \(id)")
                == "bastet|1|000000001206|2147483648|0")
            #expect(try sqlite3(path, "SELECT started_at, finished_at FROM flashes WHERE id = \(id)")
                == "2026-11-18T11:06:40.250Z|2026-11-18T11:08:10.500Z")
            #expect(try sqlite3(path, "SELECT count(*), sum(mode = 384), max(uid) FROM injected_files WHERE flash_id = \(id)")
                == "3|1|1000")
        }
    }

    @Test("a failed attempt records its error and exit code; entries filter by host and limit, newest first",
          arguments: JournalBackend.all)
    func failuresAndQueries(_ backend: JournalBackend) throws {
        let folder = try HostsTempFolder()
        let journal = try Journal(path: try freshJournal(backend, in: folder))
        var failed = sampleEntry(host: "pi-01")
        failed.error = "pwrite failed: Input/output error at byte 1048576"
        failed.exitCode = 1
        let failedID = try journal.record(failed)
        var ok = sampleEntry(host: "pi-01")
        ok.ok = true
        ok.outputPath = "/tmp/pi-01.img"
        ok.devicePath = nil
        let okID = try journal.record(ok)
        _ = try journal.record(sampleEntry(host: "pi-02"))

        let pi01 = try journal.entries(host: "pi-01")
        #expect(pi01.map(\.id) == [okID, failedID])
        #expect(pi01[1].outcome == "failed")
        #expect(pi01[1].error == failed.error)
        #expect(pi01[1].exitCode == 1)
        #expect(pi01[0].outputPath == "/tmp/pi-01.img" && pi01[0].devicePath == nil)
        #expect(try journal.entries(limit: 2).count == 2)
        #expect(try journal.entries(limit: 2).first?.host == "pi-02")
        #expect(try journal.lastSuccess(host: "pi-01")?.id == okID)
        #expect(try journal.lastSuccess(host: "pi-02") == nil)

        let json = pi01[0].json
        #expect(json["ok"] == .bool(true))
        #expect(json["output"] == .string("/tmp/pi-01.img"))
        #expect(json["result"] == .string("ok"))
        #expect(json["started_at"] == .string("2026-11-18T11:06:40.250Z"))
    }

    @Test("a version-1 journal opens, migrates to version 2 keeping its rows, and keeps a card map")
    func migratesVersion1() throws {
        try #require(sqliteCLI, "needs the sqlite3 CLI")
        let folder = try HostsTempFolder()
        let path = folder.path + "/v1.sqlite"
        // The version-1 schema as piflash wrote it, with one row, made by the sqlite3 CLI.
        _ = try sqlite3(path, """
            CREATE TABLE flashes (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
              command TEXT NOT NULL, host TEXT, slot TEXT, device_path TEXT, device_model TEXT, device_serial TEXT,
              device_by_path TEXT, device_size INTEGER, output_path TEXT, image_path TEXT NOT NULL, image_sha256 TEXT,
              bytes INTEGER, write_seconds REAL, verify_seconds REAL, inject_seconds REAL, write_rate REAL,
              verify_rate REAL, host_key_fingerprint TEXT, ok INTEGER NOT NULL DEFAULT 0, error TEXT, exit_code INTEGER);
            CREATE TABLE injected_files (flash_id INTEGER NOT NULL REFERENCES flashes(id) ON DELETE CASCADE,
              position INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, mode INTEGER NOT NULL,
              uid INTEGER NOT NULL, gid INTEGER NOT NULL, PRIMARY KEY (flash_id, position));
            CREATE TABLE claims (host TEXT PRIMARY KEY, claimant TEXT NOT NULL, claimed_at TEXT NOT NULL, claimed_unix REAL NOT NULL);
            INSERT INTO flashes (started_at, finished_at, command, host, image_path, ok)
              VALUES ('2026-11-23T17:48:47.123Z', '2026-11-23T17:50:00.000Z', 'flash', 'old', '/img', 1);
            PRAGMA user_version = 1;
            """)
        let journal = try Journal(path: path)
        #expect(try sqlite3(path, "PRAGMA user_version") == String(Journal.schemaVersion))
        let old = try #require(try journal.lastSuccess(host: "old"))
        #expect(old.injectedBlocks.isEmpty)

        var entry = sampleEntry()
        entry.ok = true
        entry.injectedBlocks = [
            InjectedBlock(offset: 39_845_888 + 1024, length: 1024, digest: .hmacSHA256(String(repeating: "a", count: 64))),
            InjectedBlock(offset: 41_000_960, length: 4096, digest: .sha256(String(repeating: "b", count: 64))),
        ]
        let id = try journal.record(entry)
        let back = try #require(try journal.entry(id: id))
        #expect(back.injectedBlocks == entry.injectedBlocks)
        // Stored in plain columns an independent reader understands: the keyed digest as hmac_sha256.
        #expect(try sqlite3(path, "SELECT byte_offset, length, coalesce(sha256, '-'), coalesce(hmac_sha256, '-') FROM injected_blocks WHERE flash_id = \(id) ORDER BY position")
            == "39846912|1024|-|\(String(repeating: "a", count: 64))\n41000960|4096|\(String(repeating: "b", count: 64))|-")
        let json = back.json.serialized()
        #expect(json.contains("\"hmac_sha256\":\"\(String(repeating: "a", count: 64))\""))
        // A second open of a version-2 journal changes nothing.
        _ = try Journal(path: path)
        #expect(try sqlite3(path, "SELECT count(*) FROM injected_blocks") == "2")
    }

    @Test("finish of an id that does not exist throws", arguments: JournalBackend.all)
    func finishUnknown(_ backend: JournalBackend) throws {
        let folder = try HostsTempFolder()
        let journal = try Journal(path: try freshJournal(backend, in: folder))
        var entry = sampleEntry()
        entry.id = 42
        #expect(throws: PiflashError.self) { try journal.finish(entry) }
    }

    @Test("ISO 8601 UTC round trip")
    func timestamps() {
        let date = Date(timeIntervalSince1970: 0.5)
        #expect(iso8601UTC(date) == "1970-01-01T00:00:00.500Z")
        #expect(parseISO8601UTC("1970-01-01T00:00:00.500Z") == date)
        #expect(parseISO8601UTC("2026-11-23T17:48:47Z") == Date(timeIntervalSince1970: 1_795_456_127))
        #expect(parseISO8601UTC("yesterday") == nil)
    }
}

@Suite("The journal: station claims")
struct JournalClaimTests {
    @Test("claims go in queue order, skip hosts flashed ok and live claims; a released claim is handed out again",
          arguments: JournalBackend.all)
    func sequentialClaims(_ backend: JournalBackend) throws {
        let folder = try HostsTempFolder()
        let path = try freshJournal(backend, in: folder)
        let journal = try Journal(path: path)
        let queue = ["pi-01", "pi-02", "pi-03", "pi-04"]
        var done = sampleEntry(host: "pi-02")
        done.ok = true
        _ = try journal.record(done)
        var failed = sampleEntry(host: "pi-03")
        failed.error = "card removed"
        _ = try journal.record(failed)

        #expect(try journal.claimNextHost(queue: queue, claimant: "A") == "pi-01")
        #expect(try journal.claimNextHost(queue: queue, claimant: "B") == "pi-03")  // pi-02 done; a failure does not count
        #expect(try journal.claimNextHost(queue: queue, claimant: "C") == "pi-04")
        #expect(try journal.claimNextHost(queue: queue, claimant: "D") == nil)

        try journal.releaseClaim(host: "pi-03", claimant: "B")
        #expect(try journal.claimNextHost(queue: queue, claimant: "D") == "pi-03")
        // Releasing someone else's claim does nothing.
        try journal.releaseClaim(host: "pi-01", claimant: "B")
        #expect(try journal.claimNextHost(queue: queue, claimant: "E") == nil)

        // pi-01 flashed ok and released: never handed out again.
        var ok = sampleEntry(host: "pi-01")
        ok.ok = true
        _ = try journal.record(ok)
        try journal.releaseClaim(host: "pi-01", claimant: "A")
        #expect(try journal.claimNextHost(queue: queue, claimant: "E") == nil)

        // A stale claim (its station died) is taken over.
        #expect(try journal.claimNextHost(queue: queue, claimant: "F", staleAfter: -1) == "pi-03")

        #expect(try journal.claims().map(\.host) == ["pi-03", "pi-04"])
        if let claims = try independentSQL(backend, path, "SELECT host, claimant FROM claims ORDER BY host") {
            #expect(claims == "pi-03|F\npi-04|C")
        }
    }

    @Test("a claim written by another process (the sqlite3 CLI, psql) is respected", arguments: JournalBackend.all)
    func claimFromAnotherProcess(_ backend: JournalBackend) throws {
        guard backend == .postgresql || sqliteCLI else {
            print("skipping: the sqlite3 CLI is not installed")
            return
        }
        let folder = try HostsTempFolder()
        let path = try freshJournal(backend, in: folder)
        let journal = try Journal(path: path)
        let now = backend == .sqlite ? "strftime('%s','now')" : "extract(epoch from now())"
        _ = try independentSQL(backend, path, "INSERT INTO claims VALUES ('pi-01', 'other', '2026-01-01T00:00:00.000Z', \(now))")
        #expect(try journal.claimNextHost(queue: ["pi-01", "pi-02"], claimant: "me") == "pi-02")
    }

    @Test("many connections opening a fresh journal at once all succeed and agree on one schema",
          arguments: JournalBackend.all)
    func concurrentFirstOpen(_ backend: JournalBackend) throws {
        let folder = try HostsTempFolder()
        let path = try freshJournal(backend, in: folder, file: "fresh/j.sqlite")
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 6) { worker in
            do {
                let journal = try Journal(path: path)
                _ = try journal.record(sampleEntry(host: "w\(worker)"))
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(try Journal(path: path).entries().count == 6)
        if backend == .sqlite && sqliteCLI {
            #expect(try sqlite3(path, "PRAGMA journal_mode") == "wal")
        }
    }

    @Test("many claimants on separate connections at once never get the same host", arguments: JournalBackend.all)
    func concurrentClaims(_ backend: JournalBackend) throws {
        let folder = try HostsTempFolder()
        let path = try freshJournal(backend, in: folder)
        _ = try Journal(path: path)
        let queue = (1...40).map { String(format: "pi-%02d", $0) }
        let claimed = Mutex<[String: [String]]>([:])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 6) { worker in
            do {
                let journal = try Journal(path: path)  // its own connection, like another station
                let name = "worker-\(worker)"
                while let host = try journal.claimNextHost(queue: queue, claimant: name) {
                    claimed.withLock { $0[name, default: []].append(host) }
                }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let all = claimed.withLock { $0.values.flatMap { $0 } }
        #expect(all.count == queue.count)
        #expect(Set(all) == Set(queue))
        if let counts = try independentSQL(backend, path, "SELECT count(DISTINCT host), count(*) FROM claims") {
            #expect(counts == "40|40")
        }
    }
}

/// What only a journal shared through PostgreSQL does: heartbeats that keep claims alive, and
/// writes kept in memory while the server is down, written once when it is back.
@Suite("The journal on PostgreSQL: heartbeats, lost connections", .serialized,
       .enabled(if: PostgreSQLTestServer.unavailableReason == nil, "needs Debian's postgresql"))
struct SharedJournalTests {
    @Test("a heartbeat records the station and renews its claims; an unrenewed claim goes stale and is taken over")
    func heartbeatsKeepClaims() throws {
        let server = try #require(PostgreSQLTestServer.shared)
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        let a = try Journal(path: url)
        let b = try Journal(path: url)  // another station's connection
        let queue = ["pi-01", "pi-02"]
        #expect(try a.claimNextHost(queue: queue, claimant: "station@a:A", staleAfter: 60) == "pi-01")
        #expect(try b.claimNextHost(queue: queue, claimant: "station@b:A", staleAfter: 60) == "pi-02")

        // Both claims are made 120 s old by the database's clock: station a heart-beats, b does not.
        _ = try server.psql(database, "UPDATE claims SET claimed_unix = claimed_unix - 120")
        let beat = StationHeartbeat(name: "a", machine: "bench", pid: 42, startedAt: Date(timeIntervalSince1970: 1_795_000_000),
                                    slots: #"[{"slot":"A","state":"flashing"}]"#)
        try a.heartbeat(beat, claimants: ["station@a:A", "station@a:B"])
        #expect(try server.psql(database, "SELECT name, machine, pid, slots FROM stations")
            == #"a|bench|42|[{"slot":"A","state":"flashing"}]"#)
        let stations = try b.stations()
        #expect(stations.map(\.station) == [beat])
        #expect(stations.first.map { $0.age >= 0 && $0.age < 30 } == true, "age \(stations.first?.age ?? -1)")

        // pi-01 (renewed) stays a's; pi-02 (b's, not renewed for 120 s > 60 s) goes to the next claimant.
        #expect(try b.claimNextHost(queue: queue, claimant: "station@c:A", staleAfter: 60) == "pi-02")
        #expect(try server.psql(database, "SELECT host, claimant FROM claims ORDER BY host")
            == "pi-01|station@a:A\npi-02|station@c:A")
    }

    @Test("with the server down, writes are kept in order and written exactly once when it is back")
    func writesSurviveARestart() throws {
        // Its own server: this test stops it.
        let server = try PostgreSQLTestServer()
        let url = try server.createDatabase("journal")
        let journal = try Journal(path: url)
        #expect(journal.isAvailable)
        #expect(try journal.claimNextHost(queue: ["pi-01"], claimant: "station@a:A") == "pi-01")
        var running = sampleEntry(host: "pi-01")
        running.slot = "A"
        running.id = try journal.begin(running)
        #expect(running.id! > 0)

        try server.stop()
        // The flash goes on; its outcome, a second attempt and the claim's release wait in memory.
        running.ok = true
        running.bytes = 1234
        try journal.finish(running)
        #expect(!journal.isAvailable)
        var second = sampleEntry(host: "pi-02")
        second.id = try journal.begin(second)
        #expect(second.id! < 0, "a provisional id while the server is down")
        second.error = "card removed"
        second.exitCode = 1
        try journal.finish(second)
        try journal.releaseClaim(host: "pi-01", claimant: "station@a:A")
        #expect(journal.pendingWrites == 4)
        #expect(throws: PiflashError.self) { try journal.flushPending() }
        #expect(journal.pendingWrites == 4, "nothing is dropped while the server is down")

        try server.start()
        #expect(try journal.flushPending() == 0)
        #expect(journal.isAvailable)
        #expect(try journal.flushPending() == 0, "flushing again writes nothing twice")
        #expect(try server.psql("journal", "SELECT host, ok, bytes, error FROM flashes ORDER BY id")
            == "pi-01|1|1234|\npi-02|0||card removed")
        #expect(try server.psql("journal", "SELECT count(*), count(DISTINCT attempt) FROM flashes") == "2|2")
        #expect(try server.psql("journal", "SELECT count(*) FROM claims") == "0")
        // pi-01 is done fleet-wide; pi-02's attempt failed, so it is handed out.
        #expect(try journal.claimNextHost(queue: ["pi-01", "pi-02"], claimant: "station@b:A") == "pi-02")
    }

    @Test("a malformed journal URL is a usage error naming the problem; an unreachable server is exit 1")
    func badURLs() throws {
        #expect(Journal.isDatabaseURL("postgresql://u@h/db") && Journal.isDatabaseURL("postgres://u@h/db"))
        #expect(!Journal.isDatabaseURL("/var/lib/piflash/journal.sqlite"))
        for (url, words) in [("postgresql://127.0.0.1/db", "no user"), ("postgresql://u@127.0.0.1", "no database"),
                             ("postgresql://u@127.0.0.1/db?sslmode=maybe", "sslmode"),
                             ("postgresql://u@127.0.0.1/db?colour=red", "unknown parameter")] {
            do {
                try Journal.checkDatabaseURL(url)
                Issue.record("\(url) was accepted")
            } catch let error as PiflashError {
                #expect(error.status == .usage && error.message.contains(words), "\(url): \(error)")
            }
        }
        let port = try PostgreSQLTestServer.freePort()
        do {
            _ = try Journal(path: "postgresql://u:secret@127.0.0.1:\(port)/db")
            Issue.record("a journal on a port nothing listens on opened")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(!error.description.contains("secret"), "the password is never shown: \(error)")
        }
    }
}
