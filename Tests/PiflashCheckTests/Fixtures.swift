import Foundation
import Testing

@testable import PiflashCheck

/// Starts a program with `posix_spawn`: stdin from /dev/null, stdout and stderr to the given
/// descriptors, the signal mask cleared. (Foundation's `Process` is avoided: a child started
/// from the test runner's threads inherits their blocked SIGTERM, and `waitUntilExit` can hang
/// when several run at once on a two-core machine.)
func spawnProgram(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdout: Int32, stderr: Int32
) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, stdout, 1)
    posix_spawn_file_actions_adddup2(&actions, stderr, 2)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGTERM, SIGINT, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let environment = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup($0) } + [nil]
    defer {
        argv.forEach { free($0) }
        envp.forEach { free($0) }
    }
    var pid = pid_t()
    let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
    guard result == 0 else { throw PiflashError.system("posix_spawn", errno: result, path: executable) }
    return pid
}

/// Waits for a child and returns its exit status (128 + signal when killed).
@discardableResult
func waitForExit(_ pid: pid_t, hang: Bool = true) -> Int32? {
    var status: Int32 = 0
    while true {
        let result = waitpid(pid, &status, hang ? 0 : WNOHANG)
        if result == -1 && errno == EINTR { continue }
        if result == 0 { return nil }
        guard result == pid else { return -1 }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }
}

/// A server process the tests started, ended by its own pid (never by name).
final class StartedProcess: @unchecked Sendable {
    let executable: String
    let pid: pid_t
    let log: String
    private var exited = false

    init(_ executable: String, _ arguments: [String], log: String) throws {
        self.executable = executable
        self.log = log
        let fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw PiflashError.system("open", errno: errno, path: log) }
        defer { close(fd) }
        pid = try spawnProgram(executable, arguments, stdout: fd, stderr: fd)
    }

    var isRunning: Bool {
        if exited { return false }
        if waitForExit(pid, hang: false) != nil { exited = true }
        return !exited
    }

    /// SIGTERM, then reaps it.
    func stop() {
        guard !exited else { return }
        kill(pid, SIGTERM)
        waitForExit(pid)
        exited = true
    }

    deinit { stop() }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
}

/// Runs a program to completion; returns its status, stdout and stderr (through temporary files,
/// so neither can fill a pipe).
@discardableResult
func runTool(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil
) throws -> (status: Int32, output: String, errors: String) {
    let base = NSTemporaryDirectory() + "piflash-check-run-" + UUID().uuidString
    let out = open(base + ".out", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    let err = open(base + ".err", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    defer {
        close(out)
        close(err)
        unlink(base + ".out")
        unlink(base + ".err")
    }
    guard out >= 0, err >= 0 else { throw PiflashError.system("open", errno: errno, path: base) }
    let pid = try spawnProgram(executable, arguments, environment: environment, stdout: out, stderr: err)
    let status = waitForExit(pid) ?? -1
    let output = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
    let errors = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
    return (status, output, errors)
}

/// A fresh temporary folder, removed by `remove()`.
struct TemporaryFolder {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "piflash-check-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

private func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return address
}

/// A TCP port on 127.0.0.1 that was free a moment ago: the kernel picks it for a socket bound to
/// port 0, which is then closed.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(fd >= 0)
    defer { close(fd) }
    var address = loopbackAddress(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(fd, pointer, length) == 0 else { return -1 }
            return getsockname(fd, pointer, &length)
        }
    }
    guard bound == 0 else { throw PiflashError.failure("cannot bind a loopback socket") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` right now.
func loopbackPortAnswers(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(fd >= 0)
    defer { close(fd) }
    var address = loopbackAddress(port: port)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

/// Polls (bounded) until 127.0.0.1:`port` answers; fails early when the process died.
func waitUntilListening(_ port: Int, process: StartedProcess, within seconds: Double = 10) throws {
    let start = Date()
    var pause: UInt32 = 10_000
    while Date().timeIntervalSince(start) < seconds {
        if loopbackPortAnswers(port) { return }
        guard process.isRunning else {
            throw PiflashError.failure("\(process.executable) exited: \(process.logText)")
        }
        usleep(pause)
        pause = min(pause * 2, 200_000)
    }
    throw PiflashError.failure("nothing listens on 127.0.0.1:\(port) after \(seconds) s: \(process.logText)")
}

/// A real OpenSSH server (Debian's sshd) on 127.0.0.1, on a free port, with one ed25519 host key
/// made by `ssh-keygen`.
final class SSHServerFixture: @unchecked Sendable {
    static let sshd = "/usr/sbin/sshd"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: sshd) }

    let folder: TemporaryFolder
    let port: Int
    /// The host key (private) sshd serves.
    let privateKeyPath: String
    /// The host key's `.pub` file.
    let publicKeyPath: String
    /// The content of the `.pub` file.
    let publicKeyLine: String
    /// The fingerprint `ssh-keygen -lf` prints for the host key.
    let fingerprint: String
    private let server: StartedProcess

    /// - Parameter privateKey: the host key to serve (an OpenSSH private key file's content);
    ///   a fresh one from `ssh-keygen` when nil.
    ///   - ecdsaFirst: also serve an ECDSA host key, listed before the ed25519 one.
    init(privateKey: String? = nil, ecdsaFirst: Bool = false) throws {
        folder = try TemporaryFolder()
        var extraHostKeys = ""
        if ecdsaFirst {
            let ecdsa = folder.path + "/ssh_host_ecdsa_key"
            try runTool("/usr/bin/ssh-keygen", ["-q", "-t", "ecdsa", "-N", "", "-f", ecdsa])
            extraHostKeys = "HostKey \(ecdsa)\n"
        }
        let key = folder.path + "/ssh_host_ed25519_key"
        if let privateKey {
            let fd = open(key, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw PiflashError.system("open", errno: errno, path: key) }
            _ = Array(privateKey.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            let derived = try runTool("/usr/bin/ssh-keygen", ["-y", "-f", key])
            guard derived.status == 0 else { throw PiflashError.failure("ssh-keygen -y: \(derived.errors)") }
            try derived.output.write(toFile: key + ".pub", atomically: true, encoding: .utf8)
        } else {
            try runTool("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test-host", "-f", key])
        }
        privateKeyPath = key
        publicKeyPath = key + ".pub"
        publicKeyLine = try String(contentsOfFile: publicKeyPath, encoding: .utf8)
        fingerprint = try sshKeygenFingerprint(publicKeyPath)
        // The privilege separation folder sshd insists on.
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        var lastError: (any Error)?
        // A port found free may be taken by the time sshd binds it: try a few.
        for _ in 0..<3 {
            let port = try freeLoopbackPort()
            let config = folder.path + "/sshd_config"
            try """
                Port \(port)
                ListenAddress 127.0.0.1
                \(extraHostKeys)HostKey \(key)
                UsePAM no
                PidFile none
                StrictModes no
                PasswordAuthentication no
                KbdInteractiveAuthentication no

                """.write(toFile: config, atomically: true, encoding: .utf8)
            let server = try StartedProcess(Self.sshd, ["-D", "-e", "-f", config], log: folder.path + "/sshd-\(port).log")
            do {
                try waitUntilListening(port, process: server)
                self.port = port
                self.server = server
                return
            } catch {
                server.stop()
                lastError = error
            }
        }
        throw lastError!
    }

    func stop() {
        server.stop()
        folder.remove()
    }

    var log: String { server.logText }
}

/// A local HTTP server (`python3 -m http.server`) on a free port, serving a folder with `ok.html`.
final class HTTPServerFixture: @unchecked Sendable {
    static var python: String? {
        ["/usr/bin/python3", "/usr/local/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    let folder: TemporaryFolder
    let port: Int
    private let server: StartedProcess

    init() throws {
        guard let python = Self.python else { throw PiflashError.failure("no python3") }
        folder = try TemporaryFolder()
        try "ok\n".write(toFile: folder.path + "/ok.html", atomically: true, encoding: .utf8)
        port = try freeLoopbackPort()
        server = try StartedProcess(
            python, ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", folder.path],
            log: folder.path + ".log")
        try waitUntilListening(port, process: server)
    }

    func stop() {
        server.stop()
        folder.remove()
        try? FileManager.default.removeItem(atPath: folder.path + ".log")
    }
}

/// `SHA256:…` as `ssh-keygen -lf FILE` prints it: the independent reference.
func sshKeygenFingerprint(_ publicKeyFile: String) throws -> String {
    let (status, output, _) = try runTool("/usr/bin/ssh-keygen", ["-lf", publicKeyFile])
    let fields = output.split(separator: " ")
    guard status == 0, fields.count >= 2, fields[1].hasPrefix("SHA256:") else {
        throw PiflashError.failure("ssh-keygen -lf \(publicKeyFile) failed: \(output)")
    }
    return String(fields[1])
}

/// A fresh ed25519 key that is not the server's: its `.pub` line and fingerprint.
func otherPublicKey(in folder: TemporaryFolder) throws -> (line: String, path: String, fingerprint: String) {
    let key = folder.path + "/other_key_\(UUID().uuidString.prefix(8))"
    try runTool("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key])
    return (try String(contentsOfFile: key + ".pub", encoding: .utf8), key + ".pub", try sshKeygenFingerprint(key + ".pub"))
}
