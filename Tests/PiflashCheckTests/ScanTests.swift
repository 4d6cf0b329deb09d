import Foundation
import Testing

@testable import PiflashCheck

/// A network namespace this test made (`ip netns add`), with its loopback up: an isolated
/// network where several sshd "hosts" listen on addresses of 127.0.1.0/24. Nothing in it can
/// reach, or be reached from, this machine's own network.
final class NetworkNamespace: @unchecked Sendable {
    static let ip = "/bin/ip"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: ip) && getuid() == 0 }
    private static let counter = Counter()

    let name: String
    let folder: TemporaryFolder
    private var servers: [StartedProcess] = []

    init() throws {
        name = "piflash-scan-\(getpid())-\(Self.counter.next())"
        folder = try TemporaryFolder()
        let added = try runTool(Self.ip, ["netns", "add", name])
        guard added.status == 0 else { throw PiflashError.failure("ip netns add \(name): \(added.errors)") }
        let up = try runTool(Self.ip, ["-n", name, "link", "set", "lo", "up"])
        guard up.status == 0 else { throw PiflashError.failure("ip -n \(name) link set lo up: \(up.errors)") }
    }

    /// Starts a real sshd in the namespace on `address`:22 serving a fresh ed25519 host key; returns
    /// the key's `.pub` path and the fingerprint `ssh-keygen -lf` prints.
    @discardableResult
    func startSSHD(address: String) throws -> (publicKeyPath: String, fingerprint: String) {
        let key = folder.path + "/host-\(address)"
        try runTool("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", address, "-f", key])
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        let config = folder.path + "/sshd-\(address).conf"
        try """
            ListenAddress \(address):22
            HostKey \(key)
            UsePAM no
            PidFile none
            StrictModes no
            PasswordAuthentication no
            KbdInteractiveAuthentication no

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = try StartedProcess(
            Self.ip, ["netns", "exec", name, SSHServerFixture.sshd, "-D", "-e", "-f", config],
            log: folder.path + "/sshd-\(address).log")
        servers.append(server)
        try waitForLog(server, containing: "Server listening on \(address) port 22")
        return (key + ".pub", try sshKeygenFingerprint(key + ".pub"))
    }

    /// Starts a TCP server in the namespace on `address`:22 that speaks no SSH (python's http.server).
    func startNonSSH(address: String) throws {
        guard let python = HTTPServerFixture.python else { throw PiflashError.failure("no python3") }
        let server = try StartedProcess(
            Self.ip, ["netns", "exec", name, python, "-u", "-m", "http.server", "22", "--bind", address],
            log: folder.path + "/http-\(address).log")
        servers.append(server)
        try waitForLog(server, containing: "Serving HTTP on \(address) port 22")
    }

    /// Waits (bounded) for a line in a server's log: the server says when it listens.
    private func waitForLog(_ server: StartedProcess, containing text: String, within seconds: Double = 10) throws {
        let start = Date()
        var pause: UInt32 = 10_000
        while Date().timeIntervalSince(start) < seconds {
            if server.logText.contains(text) { return }
            guard server.isRunning else { throw PiflashError.failure("\(server.executable) exited: \(server.logText)") }
            usleep(pause)
            pause = min(pause * 2, 200_000)
        }
        throw PiflashError.failure("no '\(text)' after \(seconds) s: \(server.logText)")
    }

    /// `piflash ARGUMENTS` run inside the namespace, with `HOME` = the fixture's folder.
    func piflash(_ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = folder.path
        return try runTool(Self.ip, ["netns", "exec", name, piflashBinary!] + arguments, environment: environment)
    }

    func remove() {
        servers.forEach { $0.stop() }
        _ = try? runTool(Self.ip, ["netns", "del", name])
        folder.remove()
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func next() -> Int {
            lock.lock()
            defer { lock.unlock() }
            value += 1
            return value
        }
    }
}

/// `piflash check --scan` against several real sshd hosts with different keys, in a network
/// namespace the test made: only 127.0.1.0/24 inside that namespace is ever scanned.
@Suite(
    "piflash check --scan in a network namespace", .serialized,
    .enabled(if: NetworkNamespace.available, "skipped: needs root and iproute2's ip (apt-get install iproute2)"),
    .enabled(if: SSHServerFixture.available, "skipped: /usr/sbin/sshd is absent (apt-get install openssh-server)"),
    .enabled(if: piflashBinary != nil, "skipped: the piflash binary is not built next to the tests (run swift build)"))
struct ScanTests {
    @Test("finds exactly the host presenting the pinned key, names the others, pins it with that address")
    func findsThePinnedHost() throws {
        let network = try NetworkNamespace()
        defer { network.remove() }
        let other1 = try network.startSSHD(address: "127.0.1.20")
        let pi = try network.startSSHD(address: "127.0.1.77")
        let other2 = try network.startSSHD(address: "127.0.1.200")
        try network.startNonSSH(address: "127.0.1.30")

        let run = try network.piflash([
            "check", "bastet", "--hosts", network.folder.path, "--pinned-key", pi.publicKeyPath,
            "--scan", "127.0.1.0/24", "--timeout", "20", "--write-known-hosts", "--json",
        ])
        #expect(run.status == 0, "\(run.output) \(run.errors)")
        let lines = try jsonLines(run.output)
        let result = try #require(lines.last)
        #expect(result["ok"] as? Bool == true)
        #expect(result["address"] as? String == "127.0.1.77")
        #expect(result["observed_fingerprint"] as? String == pi.fingerprint)
        let scan = try #require(result["scan"] as? [String: Any])
        #expect(scan["matches"] as? [String] == ["127.0.1.77"])
        #expect(scan["range"] as? String == "127.0.1.0/24")
        #expect(scan["answered_without_key"] as? Int == 1)
        let others = try #require(scan["other_keys"] as? [[String: Any]])
        let found = Dictionary(uniqueKeysWithValues: others.map { ($0["address"] as? String ?? "", $0["fingerprint"] as? String ?? "") })
        #expect(found == ["127.0.1.20": other1.fingerprint, "127.0.1.200": other2.fingerprint])
        #expect(try #require(scan["seconds"] as? Double) < 5, "a /24 with nobody else on it takes well under a few seconds")
        #expect(lines.contains { $0["event"] as? String == "scan_found" && $0["address"] as? String == "127.0.1.77" })
        #expect(lines.filter { $0["event"] as? String == "scan_other_key" }.count == 2)

        let knownHosts = try String(contentsOfFile: network.folder.path + "/.ssh/known_hosts", encoding: .utf8)
        let pinned = try String(contentsOfFile: pi.publicKeyPath, encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        #expect(knownHosts.contains("bastet,127.0.1.77 \(pinned)"), "\(knownHosts)")
        #expect(!knownHosts.contains("127.0.1.20"))

        // The human form names the others as not this host.
        let human = try network.piflash([
            "check", "bastet", "--hosts", network.folder.path, "--pinned-key", pi.publicKeyPath,
            "--scan", "127.0.1.0/24", "--timeout", "20",
        ])
        #expect(human.status == 0, "\(human.output) \(human.errors)")
        #expect(human.output.contains("✗ 127.0.1.20: not this host, it presents \(other1.fingerprint)"))
        #expect(human.output.contains("✓ 127.0.1.77 presents the pinned key \(pi.fingerprint)"))
    }

    @Test("exit 1 when no address presents the pinned key within --timeout")
    func noMatch() throws {
        let network = try NetworkNamespace()
        defer { network.remove() }
        try network.startSSHD(address: "127.0.1.20")
        let stranger = try otherPublicKey(in: network.folder)
        let started = Date()
        let run = try network.piflash([
            "check", "bastet", "--hosts", network.folder.path, "--pinned-key", stranger.path,
            "--scan", "127.0.1.0/24", "--timeout", "3", "--json",
        ])
        #expect(run.status == 1, "\(run.output) \(run.errors)")
        #expect(Date().timeIntervalSince(started) < 15)
        let result = try #require(try jsonLines(run.output).last)
        #expect(result["ok"] as? Bool == false)
        let error = try #require(result["error"] as? String)
        #expect(error.contains("no address in 127.0.1.0/24 presents the pinned key of bastet (\(stranger.fingerprint))"), "\(error)")
        let scan = try #require(result["scan"] as? [String: Any])
        #expect((scan["matches"] as? [String])?.isEmpty == true)
        #expect(try #require(scan["rounds"] as? Int) >= 2, "the block is scanned again until the timeout")
        #expect((scan["other_keys"] as? [[String: Any]])?.count == 1)
    }

    @Test("--scan refuses blocks over a /16 and --address with it, before any connection")
    func refusals() throws {
        let network = try NetworkNamespace()
        defer { network.remove() }
        let stranger = try otherPublicKey(in: network.folder)
        let wide = try network.piflash(["check", "bastet", "--pinned-key", stranger.path, "--scan", "127.0.0.0/8"])
        #expect(wide.status == 2, "\(wide.output) \(wide.errors)")
        #expect(wide.errors.contains("piflash scans at most 65536"))
        let both = try network.piflash([
            "check", "bastet", "--pinned-key", stranger.path, "--scan", "127.0.1.0/24", "--address", "127.0.1.1",
        ])
        #expect(both.status == 2)
        #expect(both.errors.contains("either --scan or --address"))
    }
}
