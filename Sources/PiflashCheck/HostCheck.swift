import Foundation
import NIOCore
import NIOPosix

/// What `piflash check` does for one host, with every input resolved: the address and SSH port
/// to reach, the pinned host key, and the service checks.
public struct HostCheckPlan: Sendable {
    /// The host's name, for messages and the result.
    public var host: String
    /// The name or address to reach.
    public var address: String
    public var sshPort: Int
    /// Seconds to wait for the SSH port to answer.
    public var timeout: Double
    /// The key the host must present.
    public var pinnedKey: SSHHostKey
    /// Ports for tcp checks on `address`.
    public var tcpPorts: [Int]
    /// URLs for http checks; `{address}` is replaced by the address (bracketed when IPv6).
    public var httpURLs: [String]
    /// Seconds for the key exchange once the port answers.
    public var keyExchangeTimeout: Double
    /// Seconds for each tcp or http check.
    public var checkTimeout: Double
    /// `--scan CIDR`: find the address first, as the one whose SSH server presents the pinned key;
    /// ``address`` is then only a placeholder until the scan found it.
    public var scan: AddressRange?

    public init(
        host: String, address: String, sshPort: Int, timeout: Double, pinnedKey: SSHHostKey,
        tcpPorts: [Int] = [], httpURLs: [String] = [], keyExchangeTimeout: Double = 15, checkTimeout: Double = 10,
        scan: AddressRange? = nil
    ) {
        self.scan = scan
        self.host = host
        self.address = address
        self.sshPort = sshPort
        self.timeout = timeout
        self.pinnedKey = pinnedKey
        self.tcpPorts = tcpPorts
        self.httpURLs = httpURLs
        self.keyExchangeTimeout = keyExchangeTimeout
        self.checkTimeout = checkTimeout
    }

    /// `url` with `{address}` replaced by `address` (in brackets when it is an IPv6 address).
    public static func substitute(_ url: String, address: String) -> String {
        let literal = address.contains(":") && !address.hasPrefix("[") ? "[\(address)]" : address
        return url.replacingOccurrences(of: "{address}", with: literal)
    }
}

/// Something `piflash check` reports while it works.
public enum HostCheckEvent: Sendable {
    /// Waiting for the SSH port, up to `timeout` seconds.
    case waiting(address: String, port: Int, timeout: Double)
    /// An attempt failed; the next follows after `nextDelay` seconds.
    case retry(attempt: Int, reason: String, waited: Double, nextDelay: Double)
    /// The SSH port answered after `waited` seconds.
    case reachable(waited: Double)
    /// The host key was fetched and compared.
    case hostKey(expected: String, observed: String, algorithm: String, matches: Bool, latencyMs: Double)
    /// A tcp or http check finished.
    case check(CheckOutcome)
    /// `--scan`: a round of key exchanges with every address of `range` begins.
    case scanning(range: String, addresses: Int, port: Int, round: Int)
    /// `--scan`: a server presented another key than the pinned one (reported once per address).
    case otherKey(ScannedKey)
    /// `--scan`: this address presented the pinned key.
    case found(address: String, fingerprint: String)

    /// The `event` name in `--json` output.
    public var name: String {
        switch self {
        case .waiting: return "waiting"
        case .retry: return "retry"
        case .reachable: return "reachable"
        case .hostKey: return "host_key"
        case .check: return "check"
        case .scanning: return "scanning"
        case .otherKey: return "scan_other_key"
        case .found: return "scan_found"
        }
    }

    /// The event as one JSON object, `{"event": name, …}`.
    public var json: JSONValue {
        var fields: [(String, JSONValue)] = [("event", .string(name))]
        switch self {
        case .waiting(let address, let port, let timeout):
            fields += [("address", .string(address)), ("port", .int(Int64(port))), ("timeout_seconds", .double(timeout))]
        case .retry(let attempt, let reason, let waited, let nextDelay):
            fields += [
                ("attempt", .int(Int64(attempt))), ("reason", .string(reason)), ("waited_seconds", .double(waited)),
                ("next_delay_seconds", .double(nextDelay)),
            ]
        case .reachable(let waited):
            fields += [("waited_seconds", .double(waited))]
        case .hostKey(let expected, let observed, let algorithm, let matches, let latencyMs):
            fields += [
                ("expected_fingerprint", .string(expected)), ("observed_fingerprint", .string(observed)),
                ("algorithm", .string(algorithm)), ("ok", .bool(matches)), ("latency_ms", .double(latencyMs)),
            ]
        case .check(let outcome):
            guard case .object(let pairs) = outcome.json else { preconditionFailure("CheckOutcome.json is an object") }
            fields += pairs
        case .scanning(let range, let addresses, let port, let round):
            fields += [
                ("range", .string(range)), ("addresses", .int(Int64(addresses))), ("port", .int(Int64(port))),
                ("round", .int(Int64(round))),
            ]
        case .otherKey(let key):
            guard case .object(let pairs) = key.json else { preconditionFailure("ScannedKey.json is an object") }
            fields += pairs
        case .found(let address, let fingerprint):
            fields += [("address", .string(address)), ("fingerprint", .string(fingerprint))]
        }
        return .object(fields)
    }

    /// The event as a line for a human, or nil for events too fine for a terminal.
    public var humanLine: String? {
        switch self {
        case .waiting(let address, let port, let timeout):
            return "waiting for \(hostPort(address, port)) (up to \(formatSeconds(timeout)))…"
        case .retry:
            return nil
        case .reachable(let waited):
            return "reachable after \(formatElapsed(waited))"
        case .hostKey(let expected, let observed, let algorithm, let matches, _):
            return matches
                ? "✓ ssh host key \(observed) (\(algorithm)) matches the pinned key"
                : "✗ ssh host key \(observed) (\(algorithm)) does NOT match the pinned key \(expected)"
        case .check(let outcome):
            let latency = (outcome.latencyMs * 10).rounded() / 10
            return "\(outcome.ok ? "✓" : "✗") \(outcome.kind.rawValue) \(outcome.target): \(outcome.detail) (\(latency) ms)"
        case .scanning(let range, let addresses, let port, let round):
            return round == 1
                ? "scanning \(range) (\(addresses) address\(addresses == 1 ? "" : "es"), port \(port)) for the pinned key…"
                : "not found yet; scanning \(range) again (round \(round))…"
        case .otherKey(let key):
            return "✗ \(key.address): not this host, it presents \(key.fingerprint) (\(key.algorithm))"
        case .found(let address, let fingerprint):
            return "✓ \(address) presents the pinned key \(fingerprint)"
        }
    }
}

/// What `piflash check` found.
public struct HostCheckResult: Sendable {
    public var host: String
    public var address: String
    public var port: Int
    public var expectedFingerprint: String
    /// The fingerprint the host presented, when the key exchange got that far.
    public var observedFingerprint: String?
    /// Seconds until the SSH port answered, when it did.
    public var waitedSeconds: Double?
    public var checks: [CheckOutcome]
    /// What `--scan` found, when the address came from a scan.
    public var scan: HostScanResult?
    /// Why the check failed; nil when everything passed.
    public var error: PiflashError?

    /// Everything passed.
    public var ok: Bool { error == nil }

    /// 0 when all passed; 4 on a host key mismatch; 1 when unreachable or a check failed.
    public var exitStatus: ExitStatus { error?.status ?? .success }

    /// The final `result` object of `--json` output.
    public var json: JSONValue {
        .object([
            ("event", "result"), ("ok", .bool(ok)), ("host", .string(host)), ("address", .string(address)),
            ("port", .int(Int64(port))), ("expected_fingerprint", .string(expectedFingerprint)),
            ("observed_fingerprint", .string(observedFingerprint)),
            ("waited_seconds", waitedSeconds.map { .double($0) } ?? .null),
            ("checks", .array(checks.map(\.json))), ("scan", scan?.json ?? .null), ("error", .string(error?.description)),
            ("exit_code", .int(Int64(exitStatus.rawValue))),
        ])
    }
}

/// The check after first boot: wait for the SSH port, compare the host key with the pinned one,
/// then run the tcp and http checks.
public enum HostCheck {
    /// Runs `plan` on its own one-thread event loop group. Never throws: every failure is in the
    /// result, with its exit status.
    ///
    /// - Parameter report: called with each event as it happens.
    public static func run(
        _ plan: HostCheckPlan, report: @escaping @Sendable (HostCheckEvent) -> Void = { _ in }
    ) async -> HostCheckResult {
        var result = HostCheckResult(
            host: plan.host, address: plan.address, port: plan.sshPort,
            expectedFingerprint: plan.pinnedKey.fingerprint, observedFingerprint: nil, waitedSeconds: nil,
            checks: [], error: nil)
        do {
            try await withEventLoopGroup { group in
                try await run(plan, group: group, into: &result, report: report)
            }
        } catch let error as PiflashError {
            result.error = error
        } catch {
            result.error = PiflashError.failure("piflash check failed: \(describeNetworkError(error))")
        }
        return result
    }

    private static func run(
        _ plan: HostCheckPlan, group: any EventLoopGroup, into result: inout HostCheckResult,
        report: @escaping @Sendable (HostCheckEvent) -> Void
    ) async throws {
        var plan = plan
        if let range = plan.scan {
            let scanPlan = HostScanPlan(
                host: plan.host, range: range, port: plan.sshPort, pinnedKey: plan.pinnedKey, timeout: plan.timeout)
            let scan = try await HostScan.run(scanPlan, group: group, report: report)
            result.scan = scan
            guard let address = scan.matches.first else { throw HostScan.noMatchError(scanPlan, scan) }
            plan.address = address
            result.address = address
        }
        report(.waiting(address: plan.address, port: plan.sshPort, timeout: plan.timeout))
        let start = monotonicSeconds()
        let waited = try await waitForPort(
            host: plan.address, port: plan.sshPort, timeout: plan.timeout, group: group
        ) { attempt, reason, waited, nextDelay in
            report(.retry(attempt: attempt, reason: reason, waited: waited, nextDelay: nextDelay))
        }
        result.waitedSeconds = waited
        report(.reachable(waited: waited))

        // A host still booting may accept connections before its sshd is ready: retry the key
        // exchange with backoff while the timeout allows, then report the last failure.
        var started = monotonicSeconds()
        var delay = 0.5
        var attempt = 0
        let blob: [UInt8]
        while true {
            attempt += 1
            do {
                blob = try await HostKeyProbe.fetch(
                    host: plan.address, port: plan.sshPort, timeout: plan.keyExchangeTimeout, group: group)
                break
            } catch let error as PiflashError {
                let elapsed = monotonicSeconds() - start
                let left = plan.timeout - elapsed
                guard left > 0 else { throw error }
                let pause = min(delay, left)
                report(.retry(attempt: attempt, reason: error.message, waited: elapsed, nextDelay: pause))
                try await Task.sleep(nanoseconds: UInt64(pause * 1e9))
                delay = min(delay * 2, 5)
                started = monotonicSeconds()
            }
        }
        let observed = try SSHHostKey(blob: blob)
        result.observedFingerprint = observed.fingerprint
        let matches = observed.blob == plan.pinnedKey.blob
        report(.hostKey(
            expected: plan.pinnedKey.fingerprint, observed: observed.fingerprint, algorithm: observed.algorithm,
            matches: matches, latencyMs: (monotonicSeconds() - started) * 1000))
        guard matches else {
            throw PiflashError(
                .verificationFailed,
                "the SSH host key of \(plan.host) at \(hostPort(plan.address, plan.sshPort)) does not match the pinned key: "
                    + "expected \(plan.pinnedKey.fingerprint) (\(plan.pinnedKey.algorithm)), "
                    + "observed \(observed.fingerprint) (\(observed.algorithm))",
                hint: "the card may hold another host's identity, the host regenerated its key, "
                    + "or something else answers at this address; do not trust it until you know which")
        }

        for port in plan.tcpPorts {
            let outcome = await TCPCheck.run(host: plan.address, port: port, timeout: plan.checkTimeout, group: group)
            result.checks.append(outcome)
            report(.check(outcome))
        }
        for template in plan.httpURLs {
            let url = HostCheckPlan.substitute(template, address: plan.address)
            let outcome = await HTTPCheck.run(url: url, timeout: plan.checkTimeout, group: group)
            result.checks.append(outcome)
            report(.check(outcome))
        }
        let failed = result.checks.filter { !$0.ok }
        if !failed.isEmpty {
            let list = failed.map { "\($0.kind.rawValue) \($0.target): \($0.detail)" }.joined(separator: "; ")
            throw PiflashError.failure("\(failed.count) of \(result.checks.count) checks failed: \(list)")
        }
    }
}
