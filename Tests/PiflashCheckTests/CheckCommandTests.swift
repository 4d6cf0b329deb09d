import Foundation
import Testing

@testable import PiflashCheck

/// The built `piflash` next to the test bundle, when `swift build` made it.
private let piflashBinary: String? = {
    let folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [folder, folder.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("piflash").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}()

/// The JSON objects a `--json` run printed, one per line.
private func jsonLines(_ output: String) throws -> [[String: Any]] {
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
