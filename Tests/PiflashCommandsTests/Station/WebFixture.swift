import Foundation
import Testing

/// The web page's side of the station tests: a free port, HTTP through curl (independent of the
/// server's code), a headless Chromium, a network namespace.
enum Web {
    /// A TCP port free on 127.0.0.1 right now (bound to 0, read back, closed).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw FixtureError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    struct Reply {
        var status: Int
        var body: String
        var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] }
    }

    /// GET with curl, optionally with a header and inside a network namespace.
    static func get(_ url: String, header: String? = nil, netns: String? = nil) throws -> Reply {
        var command = ["curl", "-s", "-m", "10", "-w", "\n%{http_code}"]
        if let header { command += ["-H", header] }
        command.append(url)
        if let netns { command = ["ip", "netns", "exec", netns] + command }
        let output = try Shell.run(command)
        // No connection at all (refused, unreachable): status 0.
        guard output.status == 0 else { return Reply(status: 0, body: "curl exit \(output.status) \(output.stderr)") }
        var lines = output.stdout.components(separatedBy: "\n")
        let status = Int(lines.removeLast()) ?? 0
        return Reply(status: status, body: lines.joined(separator: "\n"))
    }

    /// Waits (bounded, polling the condition) until `body` returns a value.
    static func waitFor<T>(timeout: TimeInterval, every interval: TimeInterval = 0.2, _ body: () throws -> T?) rethrows -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let value = try body() { return value }
            usleep(useconds_t(interval * 1_000_000))
        }
        return try body()
    }
}

/// Debian's chromium, headless: `--dump-dom` after the page's script ran, and a live page whose
/// title is read through the DevTools HTTP endpoint (the same page, never reloaded).
enum Chromium {
    static var path: String? {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func baseArguments(profile: String) -> [String] {
        [path ?? "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=\(profile)",
         "--disable-background-networking", "--disable-component-update"]
    }

    /// The DOM after the page's script has loaded its data (`virtual-time-budget` lets timers and
    /// fetches run first). `width`×`height` is the window (390×844: a phone).
    static func dumpDOM(_ url: String, profile: String, width: Int = 1280, height: Int = 900) throws -> String {
        let output = try Shell.run(baseArguments(profile: profile)
                                   + ["--window-size=\(width),\(height)", "--virtual-time-budget=4000", "--dump-dom", url])
        guard output.status == 0 else { throw FixtureError("chromium --dump-dom: \(output.status) \(output.stderr.suffix(500))") }
        return output.stdout
    }

    /// A screenshot (PNG) of the page.
    static func screenshot(_ url: String, profile: String, file: String, width: Int, height: Int) throws {
        let output = try Shell.run(baseArguments(profile: profile)
                                   + ["--window-size=\(width),\(height)", "--virtual-time-budget=4000",
                                      "--screenshot=\(file)", url])
        guard output.status == 0 else { throw FixtureError("chromium --screenshot: \(output.stderr.suffix(500))") }
    }

    /// A browser kept open on one page; ``title()`` reads the page's current title.
    final class LivePage {
        let process: Process
        let port: Int

        init(_ url: String, profile: String) throws {
            process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = Chromium.baseArguments(profile: profile) + ["--remote-debugging-port=0", url]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let portFile = profile + "/DevToolsActivePort"
            guard let text = Web.waitFor(timeout: 30, { try? String(contentsOfFile: portFile, encoding: .utf8) }),
                  let port = Int(text.split(separator: "\n").first ?? "") else {
                process.terminate()
                throw FixtureError("chromium did not open its DevTools port")
            }
            self.port = port
        }

        /// The title of the page (type `page`), or nil.
        func title() -> String? {
            guard let reply = try? Web.get("http://127.0.0.1:\(port)/json/list"),
                  let targets = try? JSONSerialization.jsonObject(with: Data(reply.body.utf8)) as? [[String: Any]] else {
                return nil
            }
            return targets.first { $0["type"] as? String == "page" }?["title"] as? String
        }

        deinit {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
        }
    }
}

/// A network namespace with a veth pair: the station's side inside it gets `inside`, the test's
/// side `outside`; removed at the end.
final class NetworkNamespace {
    let name: String
    let inside: String
    let outside: String
    private let hostLink: String

    init() throws {
        let id = getpid() % 200 + 20
        name = "piflash-web-\(getpid())"
        hostLink = "pfw\(getpid() % 100000)"
        outside = "10.213.\(id).1"
        inside = "10.213.\(id).2"
        try Shell.sh("""
            ip netns add \(name) && ip link add \(hostLink) type veth peer name \(hostLink)n && \
            ip link set \(hostLink)n netns \(name) && ip addr add \(outside)/30 dev \(hostLink) && ip link set \(hostLink) up && \
            ip -n \(name) addr add \(inside)/30 dev \(hostLink)n && ip -n \(name) link set \(hostLink)n up && \
            ip -n \(name) link set lo up
            """)
    }

    deinit {
        _ = try? Shell.run(["ip", "link", "del", hostLink])
        _ = try? Shell.run(["ip", "netns", "del", name])
    }
}
