#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The addresses of a CIDR block the user named for `piflash check --scan`: IPv4 (`192.168.1.0/24`)
/// or IPv6 (`fd00::/120`), at most ``maximumCount`` addresses (a /16 of IPv4).
///
/// IPv4 blocks of /30 and larger leave out their network and broadcast addresses, which no host has.
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    /// The most addresses one scan may cover: an IPv4 /16.
    public static let maximumCount = 65_536

    /// The block as the user wrote it, normalised (`192.168.1.0/24`).
    public let description: String
    /// The first address of the block, in network byte order (4 or 16 bytes).
    private let network: [UInt8]
    private let prefixLength: Int

    /// Parses `ADDRESS/PREFIX` (or a single address, as a /32 or /128).
    ///
    /// - Throws: ``PiflashError`` (usage) for a malformed block, host bits set, or a block larger
    ///   than ``maximumCount`` addresses.
    public init(cidr: String) throws {
        let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = Self.parse(String(parts[0])) else {
            throw PiflashError.usage(
                "--scan \(cidr): not an address block; write it as ADDRESS/PREFIX, e.g. 192.168.1.0/24")
        }
        let bits = address.count * 8
        let prefix: Int
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...bits).contains(value) else {
                throw PiflashError.usage("--scan \(cidr): the prefix length must be a number from 0 to \(bits)")
            }
            prefix = value
        } else {
            prefix = bits
        }
        let hostBits = bits - prefix
        guard hostBits <= 16 else {
            throw PiflashError.usage(
                "--scan \(cidr) has \(hostBits >= 63 ? "too many" : String(1 << hostBits)) addresses; "
                    + "piflash scans at most \(Self.maximumCount) (a /\(bits - 16))",
                hint: "name the block the Pi is on, e.g. the /24 of your Wi-Fi network")
        }
        var network = address
        for bit in prefix..<bits {
            let byte = bit / 8
            let mask = UInt8(0x80) >> UInt8(bit % 8)
            guard network[byte] & mask == 0 else {
                let suggestion = Self.format(Self.masked(address, prefix: prefix))
                throw PiflashError.usage(
                    "--scan \(cidr): the address has bits set past the /\(prefix) prefix",
                    hint: "did you mean \(suggestion)/\(prefix)?")
            }
            network[byte] &= ~mask
        }
        self.network = network
        self.prefixLength = prefix
        self.description = "\(Self.format(network))/\(prefix)"
    }

    /// Whether the block is IPv6.
    public var isIPv6: Bool { network.count == 16 }

    /// How many addresses ``addresses`` holds.
    public var count: Int {
        let size = 1 << (network.count * 8 - prefixLength)
        return skipsEnds ? size - 2 : size
    }

    /// The addresses to try, in ascending order, as text.
    public var addresses: [String] {
        let size = 1 << (network.count * 8 - prefixLength)
        let range = skipsEnds ? 1..<(size - 1) : 0..<size
        return range.map { offset in
            var bytes = network
            var carry = offset
            var index = bytes.count - 1
            while carry > 0 && index >= 0 {
                let sum = Int(bytes[index]) + (carry & 0xff)
                bytes[index] = UInt8(sum & 0xff)
                carry = (carry >> 8) + (sum >> 8)
                index -= 1
            }
            return Self.format(bytes)
        }
    }

    /// IPv4 blocks with at least four addresses have a network and a broadcast address.
    private var skipsEnds: Bool { network.count == 4 && prefixLength <= 30 }

    private static func masked(_ address: [UInt8], prefix: Int) -> [UInt8] {
        var bytes = address
        for bit in prefix..<(address.count * 8) { bytes[bit / 8] &= ~(UInt8(0x80) >> UInt8(bit % 8)) }
        return bytes
    }

    /// The bytes of an IPv4 or IPv6 address in text form, or nil.
    static func parse(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// The text form of 4 or 16 address bytes.
    static func format(_ bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        precondition(ok, "inet_ntop formats any 4- or 16-byte address")
        return String(cString: buffer)
    }
}
