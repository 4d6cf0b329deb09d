import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import PiflashKit

/// The web page's HTTP/1.1 server: SwiftNIO's HTTP codec on one event-loop thread of its own,
/// every request answered by ``WebAPI`` on a small thread pool of its own: an answer reads the
/// journal, which blocks (and a PostgreSQL journal waits on its own event loop, which must never
/// be done from an event-loop thread). Read-only and small, so no framework: the station already
/// links swift-nio.
public final class WebServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let pool: NIOThreadPool
    private let channel: any NIOCore.Channel

    /// Binds and starts serving.
    /// - Parameters:
    ///   - config: the `[web]` table (address and port).
    ///   - api: the page and API.
    /// - Throws: ``PiflashError`` (exit 1) when the address cannot be bound (in use, not this
    ///   machine's).
    public init(config: WebConfig, api: WebAPI) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        self.pool = pool
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(WebRequestHandler(api: api, pool: pool))
                }
            }
            .childChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        do {
            channel = try bootstrap.bind(host: config.host, port: config.port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            try? pool.syncShutdownGracefully()
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
        try? pool.syncShutdownGracefully()
    }
}

/// Collects one request (head and end; bodies are ignored: the API is read-only), has the
/// ``WebAPI`` answer it on the thread pool and writes the response back on the event loop, in
/// the order the requests came on the connection.
private final class WebRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: WebAPI
    private let pool: NIOThreadPool
    private var head: HTTPRequestHead?
    /// The previous request's response written: the next waits for it (HTTP/1.1 answers in order).
    private var previous: EventLoopFuture<Void>?

    init(api: WebAPI, pool: NIOThreadPool) {
        self.api = api
        self.pool = pool
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
        let loop = context.eventLoop
        let api = api
        let method = request.method.rawValue
        let uri = request.uri
        let authorization = request.headers.first(name: "Authorization")
        let answer = pool.runIfActive(eventLoop: loop) {
            api.respond(method: method, uri: uri, authorization: authorization)
        }.recover { error in
            WebResponse.error(503, "the station's state cannot be read: \(error)")
        }
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: loop)
        let ready = previous.map { written in written.flatMap { answer } } ?? answer
        previous = ready.flatMap { response in
            bound.value.handler.write(response, for: request, context: bound.value.context)
        }
    }

    /// Writes one response; closes the connection after it unless the client keeps it alive.
    private func write(_ response: WebResponse, for request: HTTPRequestHead, context: ChannelHandlerContext)
        -> EventLoopFuture<Void>
    {
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
        let channel = context.channel
        // A failed write (the client went away) must not hold up nor fail the next answer.
        return done.flatMapError { _ in channel.eventLoop.makeSucceededVoidFuture() }.map {
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
