import Foundation
import PiflashKit

/// One HTTP response of the web page or its API.
public struct WebResponse: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var body: String
    public var headers: [(String, String)]

    public init(status: Int, contentType: String = "application/json", body: String, headers: [(String, String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    public static func == (lhs: WebResponse, rhs: WebResponse) -> Bool {
        lhs.status == rhs.status && lhs.contentType == rhs.contentType && lhs.body == rhs.body
            && lhs.headers.map { "\($0):\($1)" } == rhs.headers.map { "\($0):\($1)" }
    }

    static func json(_ value: JSONValue, status: Int = 200) -> WebResponse {
        WebResponse(status: status, body: value.serialized() + "\n")
    }

    static func error(_ status: Int, _ message: String, headers: [(String, String)] = []) -> WebResponse {
        WebResponse(status: status, body: JSONValue.object([("error", .string(message))]).serialized() + "\n",
                    headers: headers)
    }
}

/// The read-only web page and its JSON API, without the network: a request in, a response out.
///
/// - `GET /` the page (it reads the API below and polls it every second);
/// - `GET /api/stations` every station with its slots (the serving one first and live, the others
///   of a shared journal as their last heartbeat left them, `stale` with `heartbeat_age_seconds`
///   once it is older than the heartbeat timeout); `GET /api/slots` the slots of all of them, each
///   with its `station` and `station_stale`; `GET /api/queue` the queue (done, claimed, remaining);
///   `GET /api/journal?limit=N` the newest journal entries of every station (default 20, at most
///   500) without the injected files' digests;
/// - with a token: every request needs `Authorization: Bearer TOKEN` or `?token=TOKEN`, else 401.
public struct WebAPI: Sendable {
    private let source: any StationSnapshotSource
    private let token: String?

    /// - Parameters:
    ///   - source: where the state comes from.
    ///   - token: the token requests must carry, or nil (a loopback listener without `token_file`).
    public init(source: any StationSnapshotSource, token: String?) {
        self.source = source
        self.token = token
    }

    /// Answers one request.
    /// - Parameters:
    ///   - method: `GET`, `HEAD`…
    ///   - uri: the request target, with its query (`/api/journal?limit=5`).
    ///   - authorization: the `Authorization` header, if any.
    public func respond(method: String, uri: String, authorization: String?) -> WebResponse {
        let (path, query) = Self.split(uri)
        guard authorized(authorization: authorization, query: query) else {
            return .error(401, "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN",
                          headers: [("WWW-Authenticate", "Bearer realm=\"piflash\"")])
        }
        guard method == "GET" || method == "HEAD" else {
            return .error(405, "the web page is read-only", headers: [("Allow", "GET, HEAD")])
        }
        do {
            switch path {
            case "/", "/index.html":
                return WebResponse(status: 200, contentType: "text/html; charset=utf-8", body: WebPage.html)
            case "/api", "/api/":
                return .json(.object([("endpoints", .array(["/api/stations", "/api/slots", "/api/queue",
                                                             "/api/journal?limit=N"]))]))
            case "/api/stations":
                return .json(.object([("stations", .array(try source.stations().map(\.json)))]))
            case "/api/slots":
                let slots = try source.stations().flatMap { station in
                    station.slots.map {
                        JSONValue.object([("station", .string(station.name))] + $0.jsonFields
                                         + [("station_stale", .bool(station.isStale))])
                    }
                }
                return .json(.object([("slots", .array(slots))]))
            case "/api/queue":
                return .json(try source.queue().json)
            case "/api/journal":
                var limit = 20
                if let text = query["limit"] {
                    guard let number = Int(text), (1...500).contains(number) else {
                        return .error(400, "limit must be a number from 1 to 500")
                    }
                    limit = number
                }
                return .json(.object([("entries", .array(try source.journal(limit: limit).map(Self.entryJSON)))]))
            default:
                return .error(404, "no such page: \(path)")
            }
        } catch {
            return .error(503, "the station's state cannot be read: \(error)")
        }
    }

    /// A journal entry as the page may show it: what was flashed where, how fast and how it ended,
    /// the host key's fingerprint; the injected files only counted (their digests stay in the journal).
    static func entryJSON(_ entry: JournalEntry) -> JSONValue {
        func number(_ value: Double?) -> JSONValue { value.map { .double($0) } ?? .null }
        return .object([
            ("id", entry.id.map { .int($0) } ?? .null),
            ("started_at", .string(iso8601UTC(entry.startedAt))),
            ("finished_at", .string(entry.finishedAt.map(iso8601UTC))),
            ("command", .string(entry.command)),
            ("host", .string(entry.host)),
            ("slot", .string(entry.slot)),
            ("station", .string(entry.station.map(StationDaemon.label(of:)))),
            ("device", .string(entry.devicePath)),
            ("device_model", .string(entry.deviceModel)),
            ("device_serial", .string(entry.deviceSerial)),
            ("reader", .string(entry.deviceByPath)),
            ("device_size", entry.deviceSize.map { .uint($0) } ?? .null),
            ("bytes", entry.bytes.map { .uint($0) } ?? .null),
            ("write_rate", number(entry.writeRate)),
            ("verify_rate", number(entry.verifyRate)),
            ("write_seconds", number(entry.writeSeconds)),
            ("verify_seconds", number(entry.verifySeconds)),
            ("files", .int(Int64(entry.files.count))),
            ("host_key_fingerprint", .string(entry.hostKeyFingerprint)),
            ("ok", .bool(entry.ok)),
            ("result", .string(entry.outcome)),
            ("error", .string(entry.error)),
            ("exit_code", entry.exitCode.map { .int(Int64($0)) } ?? .null),
        ])
    }

    private func authorized(authorization: String?, query: [String: String]) -> Bool {
        guard let token else { return true }
        var offered: [String] = []
        if let authorization, authorization.lowercased().hasPrefix("bearer ") {
            offered.append(String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces))
        }
        if let fromQuery = query["token"] { offered.append(fromQuery) }
        return offered.contains { Self.constantTimeEqual($0, token) }
    }

    /// Compares without stopping at the first difference (no timing hint at the token's prefix).
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for index in 0..<max(x.count, y.count) {
            difference |= (index < x.count ? x[index] : 0) ^ (index < y.count ? y[index] : 0)
        }
        return difference == 0
    }

    /// The path and the decoded query parameters of a request target.
    static func split(_ uri: String) -> (path: String, query: [String: String]) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var query: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard let key = parts.first else { continue }
            func decode(_ text: Substring) -> String {
                String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(text)
            }
            query[decode(key)] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return (String(uri[..<mark]), query)
    }
}
