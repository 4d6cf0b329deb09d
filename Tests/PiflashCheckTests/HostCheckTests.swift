import Foundation
import Testing

@testable import PiflashCheck

/// Against a real OpenSSH sshd started on 127.0.0.1 with a host key made by ssh-keygen.
@Suite(
    "piflash check against a real sshd", .serialized,
    .enabled(if: SSHServerFixture.available, "skipped: /usr/sbin/sshd is absent (apt-get install openssh-server)"))
struct HostCheckTests {
    @Test("the probe fetches the host key sshd presents, as ssh-keygen fingerprints it")
    func fetchHostKey() async throws {
        let server = try SSHServerFixture()
        defer { server.stop() }
        let blob = try await HostKeyProbe.fetch(host: "127.0.0.1", port: server.port, timeout: 10)
        let key = try SSHHostKey(blob: blob)
        #expect(key.algorithm == "ssh-ed25519")
        #expect(key.fingerprint == server.fingerprint)
        #expect(blob == (try SSHHostKey(line: server.publicKeyLine)).blob)
        // The probe refuses the key after the exchange: sshd never saw an authentication attempt.
        #expect(!server.log.contains("Accepted"))
        #expect(!server.log.contains("Failed"))
    }

    @Test("a server with an ECDSA key listed first still presents its ed25519 key")
    func prefersEd25519() async throws {
        let server = try SSHServerFixture(ecdsaFirst: true)
        defer { server.stop() }
        let ecdsa = try sshKeygenFingerprint(server.folder.path + "/ssh_host_ecdsa_key.pub")
        let blob = try await HostKeyProbe.fetch(host: "127.0.0.1", port: server.port, timeout: 10)
        let key = try SSHHostKey(blob: blob)
        #expect(key.algorithm == "ssh-ed25519")
        #expect(key.fingerprint == server.fingerprint)
        #expect(key.fingerprint != ecdsa)
    }

    @Test("the pinned key matches: exit 0, the fingerprint reported as observed")
    func matchingKey() async throws {
        let server = try SSHServerFixture()
        defer { server.stop() }
        let plan = HostCheckPlan(
            host: "test-host", address: "127.0.0.1", sshPort: server.port, timeout: 10,
            pinnedKey: try SSHHostKey(line: server.publicKeyLine))
        let events = EventLog()
        let result = await HostCheck.run(plan) { events.append($0) }
        #expect(result.exitStatus == .success, "\(result.error?.description ?? "")")
        #expect(result.ok)
        #expect(result.observedFingerprint == server.fingerprint)
        #expect(result.expectedFingerprint == server.fingerprint)
        #expect(events.names == ["waiting", "reachable", "host_key"])
        #expect(result.json["exit_code"] == 0)
        #expect(result.json["observed_fingerprint"] == .string(server.fingerprint))
    }

    @Test("another key is pinned: exit 4, naming both fingerprints")
    func mismatchingKey() async throws {
        let server = try SSHServerFixture()
        defer { server.stop() }
        let other = try otherPublicKey(in: server.folder)
        let plan = HostCheckPlan(
            host: "test-host", address: "127.0.0.1", sshPort: server.port, timeout: 10,
            pinnedKey: try SSHHostKey(line: other.line), tcpPorts: [server.port])
        let result = await HostCheck.run(plan)
        #expect(result.exitStatus == .verificationFailed)
        let message = try #require(result.error?.description)
        #expect(message.contains(server.fingerprint))
        #expect(message.contains(other.fingerprint))
        #expect(result.observedFingerprint == server.fingerprint)
        #expect(result.expectedFingerprint == other.fingerprint)
        // An untrusted host gets no further checks.
        #expect(result.checks.isEmpty)
        #expect(result.json["exit_code"] == 4)
    }

    @Test("nothing listens: exit 1 after the timeout, saying how long it waited")
    func nothingListening() async throws {
        let port = try freeLoopbackPort()
        let key = try SSHHostKey(line: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUGUGKStgJgrkpVcl5ysUCpRWVDLEcvYT/ULG2UZ/cB")
        let plan = HostCheckPlan(host: "test-host", address: "127.0.0.1", sshPort: port, timeout: 1.5, pinnedKey: key)
        let events = EventLog()
        let started = Date()
        let result = await HostCheck.run(plan) { events.append($0) }
        let elapsed = Date().timeIntervalSince(started)
        #expect(result.exitStatus == .failure)
        #expect(elapsed >= 1.5)
        #expect(elapsed < 5)
        let message = try #require(result.error?.description)
        #expect(message.contains("127.0.0.1:\(port) did not answer within 1.5 s"))
        #expect(message.contains("waited 1."))
        #expect(message.contains("connection refused"))
        #expect(result.observedFingerprint == nil)
        // Backoff: several attempts, each pause longer than the one before (until the deadline cut).
        let delays = events.retryDelays
        #expect(delays.count >= 3)
        #expect(delays.count <= 6)
        #expect(delays.dropLast().enumerated().allSatisfy { $0.offset == 0 || $0.element > delays[$0.offset - 1] })
    }

    @Test("a port that answers without SSH: exit 1 with a clear message")
    func notSSH() async throws {
        try #require(HTTPServerFixture.python != nil, "python3 is needed for the HTTP server")
        let web = try HTTPServerFixture()
        defer { web.stop() }
        let key = try SSHHostKey(line: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUGUGKStgJgrkpVcl5ysUCpRWVDLEcvYT/ULG2UZ/cB")
        let plan = HostCheckPlan(
            host: "web", address: "127.0.0.1", sshPort: web.port, timeout: 1.5, pinnedKey: key, keyExchangeTimeout: 3)
        let events = EventLog()
        let started = Date()
        let result = await HostCheck.run(plan) { events.append($0) }
        // Retried (a booting host may answer before its sshd is ready) until the timeout.
        #expect(Date().timeIntervalSince(started) >= 1.5)
        #expect(events.retryDelays.count >= 2)
        #expect(result.exitStatus == .failure)
        #expect(result.error?.description.contains("127.0.0.1:\(web.port) closed the connection before sending its SSH host key") == true)
        #expect(result.observedFingerprint == nil)
    }

    @Test(
        "tcp and http checks after a matching key: all pass → 0, one fails → 1",
        .enabled(if: HTTPServerFixture.python != nil, "skipped: python3 is absent"))
    func serviceChecksAfterKey() async throws {
        let server = try SSHServerFixture()
        defer { server.stop() }
        let web = try HTTPServerFixture()
        defer { web.stop() }
        let closed = try freeLoopbackPort()
        let key = try SSHHostKey(line: server.publicKeyLine)

        let passing = HostCheckPlan(
            host: "test-host", address: "127.0.0.1", sshPort: server.port, timeout: 10, pinnedKey: key,
            tcpPorts: [server.port, web.port], httpURLs: ["http://{address}:\(web.port)/ok.html"])
        let good = await HostCheck.run(passing)
        #expect(good.exitStatus == .success, "\(good.error?.description ?? "")")
        #expect(good.checks.map(\.kind) == [.tcp, .tcp, .http])
        #expect(good.checks.allSatisfy { $0.ok })
        #expect(good.checks[2].target == "http://127.0.0.1:\(web.port)/ok.html")
        #expect(good.checks[2].detail == "200 OK")
        #expect(good.checks.allSatisfy { $0.latencyMs > 0 && $0.latencyMs < 10_000 })

        var failing = passing
        failing.tcpPorts = [server.port, closed]
        failing.httpURLs = [
            "http://{address}:\(web.port)/missing", "http://{address}:\(web.port)/ok.html", "http://{address}:\(server.port)/",
        ]
        let bad = await HostCheck.run(failing)
        #expect(bad.exitStatus == .failure)
        #expect(bad.observedFingerprint == server.fingerprint)
        #expect(bad.checks.map(\.ok) == [true, false, false, true, false])
        #expect(bad.checks[1].detail == "connection refused")
        #expect(bad.checks[2].detail.hasPrefix("404"))
        let message = try #require(bad.error?.description)
        #expect(bad.checks[4].detail.contains("not an HTTP response: SSH-2.0-OpenSSH"))
        #expect(message.contains("3 of 5 checks failed"))
        guard case .array(let checks)? = bad.json["checks"] else {
            Issue.record("result JSON has no checks array")
            return
        }
        #expect(checks.count == 5)
        #expect(checks[1]["kind"] == "tcp")
        #expect(checks[1]["ok"] == false)
        #expect(checks[1]["target"] == .string("127.0.0.1:\(closed)"))
    }
}

/// Events collected from the check's callback.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [HostCheckEvent] = []

    func append(_ event: HostCheckEvent) {
        lock.withLock { events.append(event) }
    }

    var all: [HostCheckEvent] { lock.withLock { events } }
    /// Event names, without the retries.
    var names: [String] { all.map(\.name).filter { $0 != "retry" } }
    var retryDelays: [Double] {
        all.compactMap { if case .retry(_, _, _, let delay) = $0 { return delay } else { return nil } }
    }
}
