import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import PiflashKit

/// The web page's HTTP/1.1 server: SwiftNIO's HTTP codec on one event-loop thread of its own,
/// every request answered by ``WebAPI``. Read-only and small, so no framework: the station
/// already links swift-nio.
public final class WebServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let channel: any NIOCore.Channel

    /// Binds and starts serving.
    /// - Parameters:
    ///   - config: the `[web]` table (address and port).
    ///   - api: the page and API.
    /// - Throws: ``PiflashError`` (exit 1) when the address cannot be bound (in use, not this
    ///   machine's).
    public init(config: WebConfig, api: WebAPI) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(WebRequestHandler(api: api))
                }
            }
            .childChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        do {
            channel = try bootstrap.bind(host: config.host, port: config.port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw PiflashError.failure("the web page cannot listen on \(config.listen): \(error)",
                                       hint: "is another program using the port? change [web] listen in the station file")
        }
    }

    /// The bound port (the configured one; useful when it was 0).
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// Stops listening and closes the connections.
    public func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// Collects one request (head and end; bodies are ignored: the API is read-only) and writes the
/// ``WebAPI`` response.
private final class WebRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: WebAPI
    private var head: HTTPRequestHead?

    init(api: WebAPI) {
        self.api = api
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            respond(to: request, context: context)
        }
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        let response = api.respond(method: request.method.rawValue, uri: request.uri,
                                   authorization: request.headers.first(name: "Authorization"))
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "Referrer-Policy", value: "no-referrer")
        headers.add(name: "Content-Security-Policy",
                    value: "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        var buffer = context.channel.allocator.buffer(capacity: response.body.utf8.count)
        buffer.writeString(response.body)
        headers.add(name: "Content-Length", value: "\(buffer.readableBytes)")
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
                      promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
