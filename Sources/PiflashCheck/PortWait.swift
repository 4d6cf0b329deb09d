import NIOCore
import NIOPosix

/// Waits until a TCP port accepts connections, retrying with exponential backoff (0.2 s doubling
/// up to 5 s) until `timeout` seconds have passed. Returns the seconds waited.
///
/// Each attempt's connect is bounded by the time left, so the wait never overruns `timeout` by
/// more than scheduling noise.
///
/// - Parameters:
///   - host: a name or address; a name that does not resolve yet (mDNS before the host is up)
///     counts as not answering.
///   - port: the TCP port.
///   - timeout: seconds to wait in all.
///   - group: the event loop group to connect on.
///   - retrying: called after each failed attempt with the attempt number, the reason, the
///     seconds waited so far, and the delay before the next attempt.
/// - Throws: ``PiflashError`` (failure) "host X:port did not answer within N s" on timeout.
@discardableResult
public func waitForPort(
    host: String, port: Int, timeout: Double, group: any EventLoopGroup,
    retrying: @Sendable (_ attempt: Int, _ reason: String, _ waited: Double, _ nextDelay: Double) -> Void = { _, _, _, _ in }
) async throws -> Double {
    let start = monotonicSeconds()
    var delay = 0.2
    var attempt = 0
    while true {
        attempt += 1
        let remaining = timeout - (monotonicSeconds() - start)
        let reason: String
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeAmount(seconds: max(0.05, min(5, remaining))))
                .connect(host: host, port: port).get()
            try? await channel.close()
            return monotonicSeconds() - start
        } catch {
            reason = describeNetworkError(error)
        }
        let waited = monotonicSeconds() - start
        let left = timeout - waited
        if left <= 0 {
            throw PiflashError.failure(
                "host \(hostPort(host, port)) did not answer within \(formatSeconds(timeout)) "
                    + "(waited \(formatElapsed(waited)), \(attempt) attempt\(attempt == 1 ? "" : "s"), last: \(reason))",
                hint: "check that the host is powered and on the network, and that its address is right: see --address")
        }
        let pause = min(delay, left)
        retrying(attempt, reason, waited, pause)
        try await Task.sleep(nanoseconds: UInt64(pause * 1e9))
        delay = min(delay * 2, 5)
    }
}

/// ``waitForPort(host:port:timeout:group:retrying:)`` on its own one-thread event loop group.
@discardableResult
public func waitForPort(host: String, port: Int, timeout: Double) async throws -> Double {
    try await withEventLoopGroup { group in
        try await waitForPort(host: host, port: port, timeout: timeout, group: group)
    }
}
