import Foundation
import NIOCore
import NIOPosix
import NIOSSH

/// Fetches a server's SSH host key by running an SSH key exchange just far enough: the server
/// signs the exchange with its host key and sends it; the probe records the key and refuses it,
/// so the connection ends before any user authentication is attempted (no `ssh-keyscan`).
///
/// The client offers `ssh-ed25519` first, so a server with several host keys presents its ed25519
/// key when it has one.
public enum HostKeyProbe {
    /// The server's host key as an SSH wire blob (e.g. an `ssh-ed25519` blob).
    ///
    /// Runs on its own one-thread event loop group, shut down before returning.
    ///
    /// - Parameters:
    ///   - host: a name or address.
    ///   - port: the SSH port.
    ///   - timeout: seconds for the connection and the key exchange together.
    /// - Throws: ``PiflashError`` (failure) when the connection fails, the peer closes it or speaks
    ///   no SSH, or no host key arrives within `timeout`.
    public static func fetch(host: String, port: Int, timeout: Double) async throws -> [UInt8] {
        try await withEventLoopGroup { group in
            try await fetch(host: host, port: port, timeout: timeout, group: group)
        }
    }

    /// The server's host key as an SSH wire blob, on a caller-owned event loop group.
    public static func fetch(host: String, port: Int, timeout: Double, group: any EventLoopGroup) async throws -> [UInt8] {
        switch await probe(host: host, port: port, connectTimeout: timeout, timeout: timeout, group: group) {
        case .key(let blob): return blob
        case .noConnection(let error), .noKey(let error): throw error
        }
    }

    /// How a probe ended: with the key, without a connection, or connected but without a key.
    enum Outcome: Sendable {
        case key([UInt8])
        /// Refused, unreachable, or no answer within the connect timeout.
        case noConnection(PiflashError)
        /// Something answered, but no SSH host key arrived.
        case noKey(PiflashError)
    }

    /// Runs the key exchange with `host:port`: `connectTimeout` seconds to connect, then `timeout`
    /// seconds for the key to arrive. Never throws.
    static func probe(
        host: String, port: Int, connectTimeout: Double, timeout: Double, group: any EventLoopGroup
    ) async -> Outcome {
        let target = hostPort(host, port)
        let loop = group.next()
        let keyPromise = loop.makePromise(of: NIOSSHPublicKey.self)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeAmount(seconds: connectTimeout))
            .channelOption(ChannelOptions.socket(SocketOptionLevel(IPPROTO_TCP), TCP_NODELAY), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ssh = NIOSSHHandler(
                        role: .client(
                            SSHClientConfiguration(
                                userAuthDelegate: NoUserAuthentication(),
                                serverAuthDelegate: HostKeyCapture(keyPromise: keyPromise)
                            )
                        ),
                        allocator: channel.allocator,
                        inboundChildChannelInitializer: nil
                    )
                    try channel.pipeline.syncOperations.addHandler(ssh)
                    try channel.pipeline.syncOperations.addHandler(ProbeEnd(keyPromise: keyPromise))
                }
            }

        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            keyPromise.fail(error)
            return .noConnection(
                PiflashError.failure("could not connect to \(target) for the SSH key exchange: \(describeNetworkError(error))"))
        }
        let deadline = loop.scheduleTask(in: timeAmount(seconds: timeout)) {
            keyPromise.fail(ProbeError.timedOut)
        }
        channel.closeFuture.whenComplete { _ in keyPromise.fail(ProbeError.closedBeforeHostKey) }

        let key: NIOSSHPublicKey
        do {
            key = try await keyPromise.futureResult.get()
            deadline.cancel()
            try? await channel.close()
        } catch {
            deadline.cancel()
            try? await channel.close()
            switch error {
            case ProbeError.timedOut:
                return .noKey(PiflashError.failure(
                    "\(target) accepted the connection but sent no SSH host key within \(formatSeconds(timeout))",
                    hint: "is an SSH server listening there?"))
            case ProbeError.closedBeforeHostKey:
                return .noKey(PiflashError.failure(
                    "\(target) closed the connection before sending its SSH host key",
                    hint: "the server may offer no host key algorithm piflash supports (ed25519, ECDSA) or refuse the connection"))
            default:
                return .noKey(PiflashError.failure("the SSH key exchange with \(target) failed: \(describeNetworkError(error))"))
            }
        }

        let openSSH = String(openSSHPublicKey: key)
        let fields = openSSH.split(separator: " ")
        guard fields.count >= 2, let data = Data(base64Encoded: String(fields[1])) else {
            preconditionFailure("NIOSSH produced a malformed OpenSSH public key string: \(openSSH)")
        }
        return .key([UInt8](data))
    }
}

/// Why a probe ended without a host key.
enum ProbeError: Error {
    case timedOut
    case closedBeforeHostKey
    /// Sent to NIOSSH to refuse the host key once it is recorded: the exchange stops there.
    case hostKeyRecorded
}

/// Records the host key the server presents and refuses it, ending the exchange before authentication.
final class HostKeyCapture: NIOSSHClientServerAuthenticationDelegate {
    private let keyPromise: EventLoopPromise<NIOSSHPublicKey>

    init(keyPromise: EventLoopPromise<NIOSSHPublicKey>) {
        self.keyPromise = keyPromise
    }

    func validateHostKey(hostKey: NIOSSHPublicKey, validationCompletePromise: EventLoopPromise<Void>) {
        keyPromise.succeed(hostKey)
        validationCompletePromise.fail(ProbeError.hostKeyRecorded)
    }
}

/// Offers no authentication method: the probe never gets that far.
final class NoUserAuthentication: NIOSSHClientUserAuthenticationDelegate {
    func nextAuthenticationType(
        availableMethods: NIOSSHAvailableUserAuthenticationMethods,
        nextChallengePromise: EventLoopPromise<NIOSSHUserAuthenticationOffer?>
    ) {
        nextChallengePromise.succeed(nil)
    }
}

/// The last handler: an error in the pipeline (a protocol error, or the refusal above) ends the probe.
final class ProbeEnd: ChannelInboundHandler {
    typealias InboundIn = Any
    private let keyPromise: EventLoopPromise<NIOSSHPublicKey>

    init(keyPromise: EventLoopPromise<NIOSSHPublicKey>) {
        self.keyPromise = keyPromise
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        keyPromise.fail(error)
        context.close(promise: nil)
    }
}
