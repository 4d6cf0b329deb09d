import NIOCore

/// What `piflash check --scan` looks for: the address in a block whose SSH server presents the
/// host's pinned key. Only the block the user named is ever scanned.
public struct HostScanPlan: Sendable {
    /// The host's name, for messages.
    public var host: String
    public var range: AddressRange
    public var port: Int
    public var pinnedKey: SSHHostKey
    /// Seconds until the scan gives up: while nothing matched, the block is scanned again in
    /// rounds (a Pi may still be booting), until then.
    public var timeout: Double
    /// Seconds to wait for each address to accept the connection.
    public var connectTimeout: Double
    /// Seconds for the key exchange once an address accepted.
    public var keyExchangeTimeout: Double
    /// Connections in flight at most.
    public var concurrency: Int
    /// Seconds between rounds.
    public var roundPause: Double

    public init(
        host: String, range: AddressRange, port: Int, pinnedKey: SSHHostKey, timeout: Double,
        connectTimeout: Double = 1, keyExchangeTimeout: Double = 3, concurrency: Int = 256, roundPause: Double = 2
    ) {
        precondition((1...256).contains(concurrency), "at most 256 connections in flight")
        self.host = host
        self.range = range
        self.port = port
        self.pinnedKey = pinnedKey
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.keyExchangeTimeout = keyExchangeTimeout
        self.concurrency = concurrency
        self.roundPause = roundPause
    }
}

/// A server that answered a scan with a host key.
public struct ScannedKey: Sendable, Equatable {
    public var address: String
    public var fingerprint: String
    public var algorithm: String

    var json: JSONValue {
        .object([("address", .string(address)), ("fingerprint", .string(fingerprint)), ("algorithm", .string(algorithm))])
    }
}

/// What a scan found.
public struct HostScanResult: Sendable {
    public var range: String
    public var port: Int
    /// The addresses presenting the pinned key, in ascending address order.
    public var matches: [String]
    /// The servers presenting another key: "not HOST".
    public var otherKeys: [ScannedKey]
    /// Addresses that accepted a connection but sent no SSH host key (in the last round).
    public var answeredWithoutKey: Int
    public var rounds: Int
    public var seconds: Double

    /// The `scan` object of the `--json` result.
    public var json: JSONValue {
        .object([
            ("range", .string(range)), ("port", .int(Int64(port))), ("matches", .array(matches.map { .string($0) })),
            ("other_keys", .array(otherKeys.map(\.json))), ("answered_without_key", .int(Int64(answeredWithoutKey))),
            ("rounds", .int(Int64(rounds))), ("seconds", .double(seconds)),
        ])
    }
}

/// Finds a host by its pinned key among the addresses of a block: a key exchange with every
/// address that accepts a connection on the SSH port, at most ``HostScanPlan/concurrency`` at once.
public enum HostScan {
    /// Scans in rounds until an address presents the pinned key or the plan's timeout passes.
    ///
    /// - Parameter report: ``HostCheckEvent/scanning(range:addresses:port:round:)``, each server
    ///   presenting another key once (``HostCheckEvent/otherKey(_:)``), each match
    ///   (``HostCheckEvent/found(address:fingerprint:)``).
    /// - Returns: the result; its `matches` are empty when no address presented the pinned key
    ///   in time (see ``noMatchError(_:_:)``).
    /// - Throws: only when the task is cancelled.
    public static func run(
        _ plan: HostScanPlan, group: any EventLoopGroup, report: @escaping @Sendable (HostCheckEvent) -> Void
    ) async throws -> HostScanResult {
        let start = monotonicSeconds()
        let addresses = plan.range.addresses
        var result = HostScanResult(
            range: plan.range.description, port: plan.port, matches: [], otherKeys: [], answeredWithoutKey: 0, rounds: 0,
            seconds: 0)
        var reported = Set<String>()
        while true {
            result.rounds += 1
            report(.scanning(range: plan.range.description, addresses: addresses.count, port: plan.port, round: result.rounds))
            let outcomes = await scanOnce(addresses, plan: plan, group: group)
            var matches: [(index: Int, address: String)] = []
            result.answeredWithoutKey = 0
            for (index, outcome) in outcomes {
                let address = addresses[index]
                switch outcome {
                case .key(let blob):
                    guard let key = try? SSHHostKey(blob: blob) else {
                        result.answeredWithoutKey += 1
                        continue
                    }
                    if key.blob == plan.pinnedKey.blob {
                        matches.append((index, address))
                    } else if reported.insert(address).inserted {
                        let other = ScannedKey(address: address, fingerprint: key.fingerprint, algorithm: key.algorithm)
                        result.otherKeys.append(other)
                        report(.otherKey(other))
                    }
                case .noKey:
                    result.answeredWithoutKey += 1
                case .noConnection:
                    break
                }
            }
            result.seconds = monotonicSeconds() - start
            if !matches.isEmpty {
                result.matches = matches.sorted { $0.index < $1.index }.map(\.address)
                for address in result.matches {
                    report(.found(address: address, fingerprint: plan.pinnedKey.fingerprint))
                }
                return result
            }
            let left = plan.timeout - result.seconds
            guard left > 0 else { break }
            try await Task.sleep(nanoseconds: UInt64(min(plan.roundPause, left) * 1e9))
        }
        return result
    }

    /// The error (exit 1) for a scan that found no address presenting the pinned key.
    public static func noMatchError(_ plan: HostScanPlan, _ result: HostScanResult) -> PiflashError {
        let others = result.otherKeys.isEmpty
            ? "no server presented another key"
            : "\(result.otherKeys.count) presented other keys (not \(plan.host))"
        return PiflashError.failure(
            "no address in \(plan.range) presents the pinned key of \(plan.host) (\(plan.pinnedKey.fingerprint)) on port "
                + "\(plan.port) after \(result.rounds) round\(result.rounds == 1 ? "" : "s") in \(formatElapsed(result.seconds)): "
                + "\(others), \(result.answeredWithoutKey) answered without an SSH host key",
            hint: "is the Pi booted and on this network? check the block (--scan), the port (--ssh-port) and --timeout")
    }

    /// One key exchange with every address, at most `plan.concurrency` at once; outcomes by index.
    static func scanOnce(
        _ addresses: [String], plan: HostScanPlan, group: any EventLoopGroup
    ) async -> [(Int, HostKeyProbe.Outcome)] {
        await withTaskGroup(of: (Int, HostKeyProbe.Outcome).self) { tasks in
            var next = 0
            func startNext() {
                guard next < addresses.count else { return }
                let index = next
                next += 1
                tasks.addTask {
                    let outcome = await HostKeyProbe.probe(
                        host: addresses[index], port: plan.port, connectTimeout: plan.connectTimeout,
                        timeout: plan.keyExchangeTimeout, group: group)
                    return (index, outcome)
                }
            }
            for _ in 0..<plan.concurrency { startNext() }
            var outcomes: [(Int, HostKeyProbe.Outcome)] = []
            outcomes.reserveCapacity(addresses.count)
            while let outcome = await tasks.next() {
                outcomes.append(outcome)
                startNext()
            }
            return outcomes
        }
    }
}
