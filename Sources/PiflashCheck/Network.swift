#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix

/// Runs `body` with a one-thread event loop group and shuts the group down afterwards, also when
/// `body` throws.
public func withEventLoopGroup<T: Sendable>(
    _ body: (any EventLoopGroup) async throws -> T
) async throws -> T {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let result: Result<T, any Error>
    do {
        result = .success(try await body(group))
    } catch {
        result = .failure(error)
    }
    try await group.shutdownGracefully()
    return try result.get()
}

/// `host:port`, with brackets around an IPv6 address.
func hostPort(_ host: String, _ port: Int) -> String {
    host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
}

/// Seconds as a NIO time amount (at least one millisecond).
func timeAmount(seconds: Double) -> TimeAmount {
    .milliseconds(max(1, Int64((seconds * 1000).rounded())))
}

/// Seconds for a message: `2 s`, `0.5 s`, `12.3 s`.
func formatSeconds(_ seconds: Double) -> String {
    let tenths = (seconds * 10).rounded() / 10
    return tenths == tenths.rounded() ? "\(Int(tenths)) s" : "\(tenths) s"
}

/// A measured duration for a message: `0.03 s`, `1.5 s`, `12.0 s`.
func formatElapsed(_ seconds: Double) -> String {
    seconds < 1 ? "\((seconds * 100).rounded() / 100) s" : "\((seconds * 10).rounded() / 10) s"
}

/// A network error in words: `connection refused`, `cannot resolve bastet.local`, `timed out after 5 s`.
func describeNetworkError(_ error: any Error) -> String {
    switch error {
    case let error as NIOConnectionError:
        if let failure = error.connectionErrors.first {
            return describeNetworkError(failure.error)
        }
        if error.dnsAError != nil || error.dnsAAAAError != nil {
            return "cannot resolve \(error.host)"
        }
        return "no address found for \(error.host)"
    case let error as IOError:
        return String(cString: strerror(error.errnoCode)).lowercased()
    case ChannelError.connectTimeout(let amount):
        return "connection timed out after \(formatSeconds(Double(amount.nanoseconds) / 1e9))"
    case let error as PiflashError:
        return error.message
    default:
        return String(describing: error)
    }
}
