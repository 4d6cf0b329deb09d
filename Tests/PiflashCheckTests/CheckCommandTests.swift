import Foundation
import Testing

@testable import PiflashCheck

/// The built `piflash` next to the test bundle, when `swift build` made it.
let piflashBinary: String? = {
    let folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [folder, folder.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("piflash").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}()

/// The JSON objects a `--json` run printed, one per line.
func jsonLines(_ output: String) throws -> [[String: Any]] {
    try output.split(separator: "\n").map { line in
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(object as? [String: Any], "not a JSON object: \(line)")
    }
}

/// `piflash check` run as a user runs it: the binary, its exit status and its JSON lines.
@Suite(
    "piflash check, the command, against a real sshd", .serialized,
    .enabled(if: SSHServerFixture.available, "skipped: /usr/sbin/sshd is absent (apt-get install openssh-server)"),
    .enabled(if: piflashBinary != nil, "skipped: the piflash binary is not built next to the tests (run swift build)"))
struct CheckCommandTests {
    /// Runs `piflash check ARGUMENTS` with `HOME` set to `home` (for `~/.ssh/known_hosts`).
    private func piflash(_ arguments: [String], home: String) throws -> (status: Int32, output: String, errors: String) {
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = home
        return try runTool(piflashBinary!, ["check"] + arguments, environment: environment)
    }

    @Test("--pinned-key FILE that matches: exit 0, the result names the fingerprint; --write-known-hosts writes it once")
    func matching() throws {
        let server = try SSHServerFixture()
        defer { server.stop() }
        let knownHosts = server.folder.path + "/.ssh/known_hosts"
        let arguments = [
            "test-host", "--hosts", server.folder.path, "--address", "127.0.0.1", "--ssh-port", String(server.port),
            "--timeout", "10", "--pinned-key", server.publicKeyPath, "--write-known-hosts",
            "--json",
        ]
        let run = try piflash(arguments, home: server.folder.path)
        #expect(run.status == 0, "\(run.output) \(run.errors)")
        let lines = try jsonLines(run.output)
        let result = try #require(lines.last)
        #expect(result["event"] as? String == "result")
        #expect(result["ok"] as? Bool == true)
        #expect(result["host"] as? String == "test-host")
        #expect(result["address"] as? String == "127.0.0.1")
        #expect(result["port"] as? Int == server.port)
        #expect(result["expected_fingerprint"] as? String == server.fingerprint)
        #expect(result["observed_fingerprint"] as? String == server.fingerprint)
        #expect(result["exit_code"] as? Int == 0)
        #expect(lines.contains { $0["event"] as? String == "host_key" && $0["ok"] as? Bool == true })

        let line = "[test-host]:\(server.port),[127.0.0.1]:\(server.port) " + (try SSHHostKey(line: server.publicKeyLine)).line + "\n"
        #expect(try String(contentsOfFile: knownHosts, encoding: .utf8) == line)
        // OpenSSH finds the key under the address it will be asked for.
        let found = try runTool("/usr/bin/ssh-keygen", ["-F", "[127.0.0.1]:\(server.port)", "-f", knownHosts])
        #expect(found.status == 0)
        let again = try piflash(arguments, home: server.folder.path)
        #expect(again.status == 0)
        #expect(try String(contentsOfFile: knownHosts, encoding: .utf8) == line)
    }

    @Test("--pinned-key LINE of another key: exit 4, both fingerprints printed")
    func mismatching() throws {
        let server = try SSHServerFixture()
        defer { server.stop() }
        let other = try otherPublicKey(in: server.folder)
        let run = try piflash([
            "test-host", "--hosts", server.folder.path, "--address", "127.0.0.1", "--ssh-port", String(server.port),
            "--pinned-key", other.line,
        ], home: server.folder.path)
        #expect(run.status == 4)
        #expect(run.errors.contains(server.fingerprint))
        #expect(run.errors.contains(other.fingerprint))
        #expect(run.output.contains("does NOT match"))
    }

    @Test("nothing listening: exit 1 after --timeout, with the time waited")
    func unreachable() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let port = try freeLoopbackPort()
        let other = try otherPublicKey(in: folder)
        let started = Date()
        let run = try piflash([
            "test-host", "--hosts", folder.path, "--address", "127.0.0.1", "--ssh-port", String(port), "--timeout", "1",
            "--pinned-key", other.line, "--json",
        ], home: folder.path)
        let elapsed = Date().timeIntervalSince(started)
        #expect(run.status == 1)
        #expect(elapsed >= 1)
        let result = try #require(try jsonLines(run.output).last)
        #expect(result["ok"] as? Bool == false)
        #expect(result["exit_code"] as? Int == 1)
        let error = try #require(result["error"] as? String)
        #expect(error.contains("did not answer within 1 s (waited 1."))
        #expect(result["observed_fingerprint"] is NSNull)
    }

    @Test("usage errors exit 2")
    func usage() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let badKey = try piflash(["test-host", "--hosts", folder.path, "--pinned-key", "ssh-ed25519 !!!"], home: folder.path)
        #expect(badKey.status == 2)
        #expect(badKey.errors.contains("base64"))
        let badTimeout = try piflash(["test-host", "--timeout", "0", "--pinned-key", "x"], home: folder.path)
        #expect(badTimeout.status == 2)
        #expect(badTimeout.errors.contains("--timeout"))
        // No host file and no --pinned-key: nothing to compare with.
        let noHost = try piflash(["test-host", "--hosts", folder.path], home: folder.path)
        #expect(noHost.status == 2)
        #expect(noHost.errors.contains("test-host"))
    }
}

/// The package root (this file is Tests/PiflashCheckTests/CheckCommandTests.swift).
private let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// `piflash check HOST` with everything from the host file: the pinned key derived from the
/// host's secrets, the address, port and the tcp/http checks from `[check]`.
@Suite(
    "piflash check HOST from its host file", .serialized,
    .enabled(if: SSHServerFixture.available, "skipped: /usr/sbin/sshd is absent (apt-get install openssh-server)"),
    .enabled(if: piflashBinary != nil, "skipped: the piflash binary is not built next to the tests (run swift build)"),
    .enabled(if: HTTPServerFixture.python != nil, "skipped: python3 is absent (needed for python3 -m http.server)"))
struct CheckHostFileTests {
    private func piflash(_ arguments: [String], home: String) throws -> (status: Int32, output: String, errors: String) {
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = home
        for name in ["SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "PIFLASH_HOSTS"] { environment[name] = nil }
        return try runTool(piflashBinary!, ["check"] + arguments, environment: environment)
    }

    /// A host file `bench.toml` in `folder/hosts` whose `[check]` points at the servers.
    private func writeHostFile(
        in folder: TemporaryFolder, secrets: String, sshPort: Int, tcp: [Int], http: [String]
    ) throws -> String {
        let hosts = folder.path + "/hosts"
        try FileManager.default.createDirectory(atPath: hosts, withIntermediateDirectories: true)
        var text = """
            [secrets]
            \(secrets)

            [[files]]
            path = "/var/lib/bootstrap/ssh_host_ed25519_key.pub"
            public_key_of = "ssh_host_ed25519_key"
            mode = "0644"

            [check]
            address = "127.0.0.1"
            ssh_port = \(sshPort)

            """
        for port in tcp { text += "[[check.tcp]]\nport = \(port)\n" }
        for url in http { text += "[[check.http]]\nurl = \"\(url)\"\n" }
        try text.write(toFile: hosts + "/bench.toml", atomically: true, encoding: .utf8)
        return hosts
    }

    @Test("dir secrets: the key matches and every check passes → 0; a closed tcp port → 1 with each check reported")
    func dirSecrets() throws {
        let server = try SSHServerFixture()
        defer { server.stop() }
        let web = try HTTPServerFixture()
        defer { web.stop() }
        let closed = try freeLoopbackPort()
        let secrets = server.folder.path + "/secrets"
        try FileManager.default.createDirectory(atPath: secrets, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: server.privateKeyPath, toPath: secrets + "/ssh_host_ed25519_key")

        let url = "http://{address}:\(web.port)/ok.html"
        var hosts = try writeHostFile(
            in: server.folder, secrets: "dir = \"\(secrets)\"", sshPort: server.port, tcp: [server.port], http: [url])
        let good = try piflash(["bench", "--hosts", hosts, "--json", "--timeout", "10"], home: server.folder.path)
        #expect(good.status == 0, "\(good.output) \(good.errors)")
        let result = try #require(try jsonLines(good.output).last)
        #expect(result["ok"] as? Bool == true)
        #expect(result["host"] as? String == "bench")
        #expect(result["port"] as? Int == server.port)
        #expect(result["expected_fingerprint"] as? String == server.fingerprint)
        #expect(result["observed_fingerprint"] as? String == server.fingerprint)
        let checks = try #require(result["checks"] as? [[String: Any]])
        #expect(checks.map { $0["kind"] as? String } == ["tcp", "http"])
        #expect(checks.map { $0["ok"] as? Bool } == [true, true])
        #expect(checks[1]["target"] as? String == "http://127.0.0.1:\(web.port)/ok.html")
        #expect(checks.allSatisfy { ($0["latency_ms"] as? Double ?? -1) >= 0 })
        // One `check` event per check, before the result.
        #expect(try jsonLines(good.output).filter { $0["event"] as? String == "check" }.count == 2)

        hosts = try writeHostFile(
            in: server.folder, secrets: "dir = \"\(secrets)\"", sshPort: server.port, tcp: [server.port, closed], http: [url])
        let bad = try piflash(["bench", "--hosts", hosts], home: server.folder.path)
        #expect(bad.status == 1)
        #expect(bad.output.contains("✓ tcp 127.0.0.1:\(server.port): connected"))
        #expect(bad.output.contains("✗ tcp 127.0.0.1:\(closed): connection refused"))
        #expect(bad.output.contains("✓ http http://127.0.0.1:\(web.port)/ok.html: 200 OK"))
        #expect(bad.errors.contains("1 of 3 checks failed"))
    }

    @Test(
        "age secrets (the demo host's, decrypted with its identity): the pinned key matches → 0",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/age"), "skipped: age is absent"))
    func ageSecrets() throws {
        let identity = packageRoot + "/hosts/demo-age-identity.txt"
        let encrypted = packageRoot + "/hosts/secrets/example.yaml.age"
        try #require(FileManager.default.fileExists(atPath: encrypted), "hosts/secrets/example.yaml.age is missing")
        // The host key, decrypted by the age tool itself (independent of piflash), served by sshd.
        let decrypted = try runTool("/usr/bin/age", ["-d", "-i", identity, encrypted])
        try #require(decrypted.status == 0, "age -d failed: \(decrypted.errors)")
        var privateKey = ""
        var inside = false
        for line in decrypted.output.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("ssh_host_ed25519_key: |") {
                inside = true
            } else if inside && line.hasPrefix("  ") {
                privateKey += line.dropFirst(2) + "\n"
            } else if inside {
                break
            }
        }
        try #require(privateKey.contains("BEGIN OPENSSH PRIVATE KEY"))
        let server = try SSHServerFixture(privateKey: privateKey)
        defer { server.stop() }

        let hosts = try writeHostFile(
            in: server.folder, secrets: "age = \"\(encrypted)\"", sshPort: server.port, tcp: [], http: [])
        let run = try piflash(
            ["bench", "--hosts", hosts, "--age-identity", identity, "--json", "--timeout", "10"], home: server.folder.path)
        #expect(run.status == 0, "\(run.output) \(run.errors)")
        let result = try #require(try jsonLines(run.output).last)
        #expect(result["observed_fingerprint"] as? String == server.fingerprint)
        #expect(result["expected_fingerprint"] as? String == server.fingerprint)

        // Without an identity the secrets cannot be opened: an error, never a silent pass.
        let noIdentity = try piflash(["bench", "--hosts", hosts, "--json"], home: server.folder.path)
        #expect(noIdentity.status != 0)
        #expect(try jsonLines(noIdentity.output).last?["ok"] as? Bool == false)
    }
}
