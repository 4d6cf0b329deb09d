import Foundation
import Glibc

/// The station file's `[web]` table: where the read-only web page and its JSON API listen, and
/// the token a request must carry.
public struct WebConfig: Sendable, Equatable {
    /// The listen address's host part: an IPv4 or IPv6 address, or `localhost`.
    public var host: String
    public var port: Int
    /// A file holding the access token (`token_file`); required unless ``isLoopback``.
    public var tokenFile: String?

    public init(host: String, port: Int, tokenFile: String? = nil) {
        self.host = host
        self.port = port
        self.tokenFile = tokenFile
    }

    /// `127.0.0.1:8480`, `[::1]:8480`.
    public var listen: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether only this machine can connect: `localhost`, `::1` or an address of 127.0.0.0/8.
    /// `0.0.0.0` and `::` (every interface) are not.
    public var isLoopback: Bool {
        if host == "localhost" || host == "::1" { return true }
        var address = in_addr()
        guard inet_pton(AF_INET, host, &address) == 1 else { return false }
        return UInt32(bigEndian: address.s_addr) >> 24 == 127
    }

    /// Parses `listen = "HOST:PORT"` (IPv6 in brackets).
    /// - Returns: nil when it is not one.
    public static func parseListen(_ text: String) -> (host: String, port: Int)? {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            var address = in6_addr()
            guard inet_pton(AF_INET6, String(host), &address) == 1 else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            var address = in_addr()
            guard host == "localhost" || inet_pton(AF_INET, String(host), &address) == 1 else { return nil }
        }
        guard let port = Int(portText), (1...65535).contains(port) else { return nil }
        return (String(host), port)
    }

    /// Reads the token: the file's first line, trimmed.
    /// - Throws: ``PiflashError`` (exit 2) when the file cannot be read or holds no token.
    public func readToken() throws -> String? {
        guard let tokenFile else { return nil }
        guard let data = FileManager.default.contents(atPath: tokenFile) else {
            throw PiflashError.usage("cannot read the web token file \(tokenFile)", path: tokenFile,
                                     hint: "create it, e.g. head -c 24 /dev/urandom | base64 > \(tokenFile); chmod 600 \(tokenFile)")
        }
        let token = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard token.count >= 16 else {
            throw PiflashError.usage("the web token in \(tokenFile) is shorter than 16 characters", path: tokenFile,
                                     hint: "head -c 24 /dev/urandom | base64 > \(tokenFile)")
        }
        return token
    }
}
