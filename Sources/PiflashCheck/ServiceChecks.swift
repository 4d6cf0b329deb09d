import NIOCore
import NIOPosix

/// The result of one service check: what was checked, whether it passed, how long it took and why.
public struct CheckOutcome: Sendable, Equatable {
    /// What kind of check this was.
    public enum Kind: String, Sendable {
        case tcp
        case http
    }

    public var kind: Kind
    /// `address:port` for tcp, the URL (with `{address}` substituted) for http.
    public var target: String
    public var ok: Bool
    /// Milliseconds until the connection (tcp) or the status line (http), or until it failed.
    public var latencyMs: Double
    /// `connected`, `200 OK`, `connection refused`…
    public var detail: String

    public init(kind: Kind, target: String, ok: Bool, latencyMs: Double, detail: String) {
        self.kind = kind
        self.target = target
        self.ok = ok
        self.latencyMs = latencyMs
        self.detail = detail
    }

    /// The outcome as a JSON object: `kind`, `target`, `ok`, `latency_ms`, `detail`.
    public var json: JSONValue {
        .object([
            ("kind", .string(kind.rawValue)), ("target", .string(target)), ("ok", .bool(ok)),
            ("latency_ms", .double(latencyMs)), ("detail", .string(detail)),
        ])
    }
}

/// A TCP check: the port accepts a connection.
public enum TCPCheck {
    /// Connects once to `host:port` and closes; passes when the connection is accepted within
    /// `timeout` seconds. Never throws: a failure is an outcome.
    public static func run(host: String, port: Int, timeout: Double, group: any EventLoopGroup) async -> CheckOutcome {
        let target = hostPort(host, port)
        let start = monotonicSeconds()
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeAmount(seconds: timeout))
                .connect(host: host, port: port).get()
            let latency = (monotonicSeconds() - start) * 1000
            try? await channel.close()
            return CheckOutcome(kind: .tcp, target: target, ok: true, latencyMs: latency, detail: "connected")
        } catch {
            let latency = (monotonicSeconds() - start) * 1000
            return CheckOutcome(kind: .tcp, target: target, ok: false, latencyMs: latency, detail: describeNetworkError(error))
        }
    }
}

/// An HTTP check: a plain HTTP/1.1 `GET` whose status is 2xx or 3xx (redirects are not followed).
/// `https://` URLs fail with a clear "not supported" outcome.
public enum HTTPCheck {
    /// Fetches `url` up to its status line and passes on 2xx/3xx within `timeout` seconds.
    /// Never throws: a failure is an outcome.
    public static func run(url: String, timeout: Double, group: any EventLoopGroup) async -> CheckOutcome {
        let start = monotonicSeconds()
        func outcome(_ ok: Bool, _ detail: String) -> CheckOutcome {
            CheckOutcome(kind: .http, target: url, ok: ok, latencyMs: (monotonicSeconds() - start) * 1000, detail: detail)
        }
        let request: HTTPRequestTarget
        do {
            request = try HTTPRequestTarget(url: url)
        } catch {
            return outcome(false, describeNetworkError(error))
        }
        let loop = group.next()
        let statusPromise = loop.makePromise(of: HTTPStatusLine.self)
        let requestBytes = request.requestHead
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(timeAmount(seconds: timeout))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            StatusLineReader(request: requestBytes, statusPromise: statusPromise))
                    }
                }
                .connect(host: request.host, port: request.port).get()
        } catch {
            statusPromise.fail(error)
            return outcome(false, describeNetworkError(error))
        }
        let deadline = loop.scheduleTask(in: timeAmount(seconds: timeout)) {
            statusPromise.fail(PiflashError.failure("no HTTP response within \(formatSeconds(timeout))"))
        }
        channel.closeFuture.whenComplete { _ in
            statusPromise.fail(PiflashError.failure("the server closed the connection before an HTTP status line"))
        }
        defer { deadline.cancel() }
        do {
            let status = try await statusPromise.futureResult.get()
            let result = outcome((200..<400).contains(status.code), status.text)
            try? await channel.close()
            return result
        } catch {
            let result = outcome(false, describeNetworkError(error))
            try? await channel.close()
            return result
        }
    }
}

/// Where an `http://` URL points and the request that fetches it.
struct HTTPRequestTarget: Equatable {
    var host: String
    var port: Int
    /// Path and query, at least `/`.
    var path: String
    /// The `Host:` header value.
    var hostHeader: String

    /// Parses `http://host[:port][/path][?query]`, with `[v6]` literals.
    ///
    /// - Throws: ``PiflashError`` (usage) for `https://`, other schemes, a missing host or a bad port.
    init(url: String) throws {
        let lower = url.lowercased()
        if lower.hasPrefix("https://") {
            throw PiflashError.usage("https is not supported by piflash check (\(url)); use http:// or a tcp check")
        }
        guard lower.hasPrefix("http://") else {
            throw PiflashError.usage("not an http:// URL: \(url)")
        }
        var rest = Substring(url.dropFirst("http://".count))
        if let fragment = rest.firstIndex(of: "#") { rest = rest[..<fragment] }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        let pathPart = rest[authorityEnd...]
        path = pathPart.isEmpty ? "/" : (pathPart.hasPrefix("?") ? "/" + pathPart : String(pathPart))
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        hostHeader = String(authority)
        var portText: Substring? = nil
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw PiflashError.usage("bad IPv6 address in \(url)") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw PiflashError.usage("no host in \(url)") }
        if let portText {
            guard let number = Int(portText), (1...65535).contains(number) else {
                throw PiflashError.usage("bad port in \(url)")
            }
            port = number
        } else {
            port = 80
        }
    }

    /// `GET path HTTP/1.1` with `Host`, `User-Agent` and `Connection: close`.
    var requestHead: [UInt8] {
        Array(
            ("GET \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nUser-Agent: piflash-check\r\n"
                + "Accept: */*\r\nConnection: close\r\n\r\n").utf8)
    }
}

/// The status line of an HTTP response: `HTTP/1.1 404 Not Found` → 404, `404 Not Found`.
struct HTTPStatusLine: Sendable, Equatable {
    var code: Int
    /// The code and reason phrase.
    var text: String

    init(line: String) throws {
        let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), parts[1].count == 3, let code = Int(parts[1]) else {
            throw PiflashError.failure("not an HTTP response: \(line.prefix(60))")
        }
        self.code = code
        text = parts.count == 3 && !parts[2].isEmpty ? "\(code) \(parts[2])" : "\(code)"
    }
}

/// Sends the request when the connection is up and reads until the status line.
final class StatusLineReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let request: [UInt8]
    private let statusPromise: EventLoopPromise<HTTPStatusLine>
    private var received: [UInt8] = []

    init(request: [UInt8], statusPromise: EventLoopPromise<HTTPStatusLine>) {
        self.request = request
        self.statusPromise = statusPromise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: request)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received += buffer.readBytes(length: buffer.readableBytes) ?? []
        if let end = received.firstIndex(of: UInt8(ascii: "\n")) {
            var line = String(decoding: received[..<end], as: UTF8.self)
            if line.hasSuffix("\r") { line.removeLast() }
            statusPromise.completeWith(Result { try HTTPStatusLine(line: line) })
            context.close(promise: nil)
        } else if received.count > 8192 {
            statusPromise.fail(PiflashError.failure("no HTTP status line in the first 8 KiB of the response"))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        statusPromise.fail(error)
        context.close(promise: nil)
    }
}
