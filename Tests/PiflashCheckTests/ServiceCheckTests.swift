import Foundation
import NIOPosix
import Testing

@testable import PiflashCheck

@Suite(
    "tcp and http checks against real local servers", .serialized,
    .enabled(if: HTTPServerFixture.python != nil, "skipped: python3 is absent (needed for python3 -m http.server)"))
struct ServiceCheckTests {
    @Test("tcp: an open port passes, a closed one fails with the reason")
    func tcp() async throws {
        let web = try HTTPServerFixture()
        defer { web.stop() }
        let closed = try freeLoopbackPort()
        let (open, shut) = try await withEventLoopGroup { group in
            (
                await TCPCheck.run(host: "127.0.0.1", port: web.port, timeout: 5, group: group),
                await TCPCheck.run(host: "127.0.0.1", port: closed, timeout: 5, group: group)
            )
        }
        #expect(open.ok)
        #expect(open.kind == .tcp)
        #expect(open.target == "127.0.0.1:\(web.port)")
        #expect(open.detail == "connected")
        #expect(open.latencyMs > 0)
        #expect(!shut.ok)
        #expect(shut.detail == "connection refused")
    }

    @Test("http: 200 passes; 404, a closed port, https and a non-HTTP answer fail")
    func http() async throws {
        let web = try HTTPServerFixture()
        defer { web.stop() }
        let closed = try freeLoopbackPort()
        let base = "http://127.0.0.1:\(web.port)"
        let outcomes = try await withEventLoopGroup { group in
            var outcomes: [CheckOutcome] = []
            for url in [
                "\(base)/ok.html", "\(base)/missing", "http://127.0.0.1:\(closed)/", "https://127.0.0.1:\(web.port)/",
                "\(base)/ok.html?x=1#frag",
            ] {
                outcomes.append(await HTTPCheck.run(url: url, timeout: 5, group: group))
            }
            return outcomes
        }
        #expect(outcomes.map(\.ok) == [true, false, false, false, true])
        #expect(outcomes[0].detail == "200 OK")
        #expect(outcomes[0].kind == .http)
        #expect(outcomes[1].detail == "404 File not found")
        #expect(outcomes[2].detail == "connection refused")
        #expect(outcomes[3].detail.contains("https is not supported"))
    }

    @Test("http: a server that accepts but never answers times out")
    func notHTTP() async throws {
        // A listening socket that accepts (the kernel completes the handshake) but never speaks.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(fd, pointer, length) == 0, listen(fd, 4) == 0 else { return -1 }
                return getsockname(fd, pointer, &length)
            }
        }
        try #require(bound == 0)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let started = Date()
        let silent = try await withEventLoopGroup { group in
            await HTTPCheck.run(url: "http://127.0.0.1:\(port)/", timeout: 0.5, group: group)
        }
        #expect(!silent.ok)
        #expect(silent.detail.contains("no HTTP response within"))
        #expect(Date().timeIntervalSince(started) < 3)
    }
}

@Suite("host keys, URLs and known_hosts")
struct PureLogicTests {
    @Test("a .pub line gives the blob, algorithm and the fingerprint ssh-keygen -lf prints")
    func keyLine() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let other = try otherPublicKey(in: folder)
        let key = try SSHHostKey(line: other.line)
        #expect(key.algorithm == "ssh-ed25519")
        #expect(key.blob.count == 51)
        #expect(key.fingerprint == other.fingerprint)
        #expect(other.line.hasPrefix(key.line + " "))
        #expect(try SSHHostKey(blob: key.blob) == key)
        // A known_hosts line holds the same key.
        #expect(try SSHHostKey(line: "[host]:2222 " + key.line) == key)
    }

    @Test("malformed key lines are usage errors")
    func badKeyLines() {
        for line in ["", "ssh-ed25519", "ssh-ed25519 !!!notbase64", "hello world",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIPUGUGKStgJgrkpVcl5ysUCpRWVDLEcvYT/ULG2UZ/cB"] {
            #expect(throws: PiflashError.self, "\(line)") { try SSHHostKey(line: line) }
        }
    }

    @Test("URLs: host, port, path, IPv6 literals; {address} substitution")
    func urls() throws {
        let plain = try HTTPRequestTarget(url: "http://bastet.local:9199/ups_metrics?x=1")
        #expect(plain.host == "bastet.local")
        #expect(plain.port == 9199)
        #expect(plain.path == "/ups_metrics?x=1")
        #expect(plain.hostHeader == "bastet.local:9199")
        let bare = try HTTPRequestTarget(url: "http://bastet")
        #expect(bare.port == 80)
        #expect(bare.path == "/")
        let v6 = try HTTPRequestTarget(url: "http://[::1]:8080/a")
        #expect(v6.host == "::1")
        #expect(v6.port == 8080)
        #expect(v6.hostHeader == "[::1]:8080")
        #expect(throws: PiflashError.self) { try HTTPRequestTarget(url: "http://host:99999/") }
        #expect(throws: PiflashError.self) { try HTTPRequestTarget(url: "ftp://host/") }
        #expect(HostCheckPlan.substitute("http://{address}:9199/m", address: "10.0.0.7") == "http://10.0.0.7:9199/m")
        #expect(HostCheckPlan.substitute("http://{address}:9199/m", address: "fe80::1") == "http://[fe80::1]:9199/m")
        #expect(try HTTPStatusLine(line: "HTTP/1.0 301 Moved Permanently").text == "301 Moved Permanently")
        #expect(throws: PiflashError.self) { try HTTPStatusLine(line: "SSH-2.0-OpenSSH_9.2p1") }
    }

    @Test("known_hosts: the pinned key is added once, found by ssh-keygen -F, also once hashed")
    func knownHosts() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let other = try otherPublicKey(in: folder)
        let key = try SSHHostKey(line: other.line)
        let file = KnownHostsFile(path: folder.path + "/dot-ssh/known_hosts")
        let patterns = ["bastet", KnownHostsFile.hostPattern(address: "bastet.local", port: 2222)]
        #expect(patterns[1] == "[bastet.local]:2222")

        #expect(try file.add(patterns: patterns, key: key) == patterns)
        #expect(try file.add(patterns: patterns, key: key) == [])
        let text = try String(contentsOfFile: file.path, encoding: .utf8)
        #expect(text == "bastet,[bastet.local]:2222 " + key.line + "\n")
        let folderMode = try FileManager.default.attributesOfItem(atPath: folder.path + "/dot-ssh")[.posixPermissions] as? Int
        #expect(folderMode == 0o700)

        // OpenSSH itself finds the key for both names.
        let found = try runTool("/usr/bin/ssh-keygen", ["-F", "[bastet.local]:2222", "-f", file.path])
        #expect(found.status == 0)
        #expect(found.output.contains(key.line))

        // Hashed by ssh-keygen -H (as HashKnownHosts yes writes): still recognised, not added again.
        let hashed = try runTool("/usr/bin/ssh-keygen", ["-H", "-f", file.path])
        #expect(hashed.status == 0)
        let hashedText = try String(contentsOfFile: file.path, encoding: .utf8)
        #expect(hashedText.hasPrefix("|1|"))
        #expect(try file.add(patterns: patterns, key: key) == [])
        // A new name is added alone, on its own line.
        #expect(try file.add(patterns: ["10.0.0.7"] + patterns, key: key) == ["10.0.0.7"])
        #expect(try String(contentsOfFile: file.path, encoding: .utf8) == hashedText + "10.0.0.7 " + key.line + "\n")
    }
}
