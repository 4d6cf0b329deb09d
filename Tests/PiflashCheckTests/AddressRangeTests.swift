import Testing

@testable import PiflashCheck

@Suite struct AddressRangeTests {
    @Test func ipv4BlockLeavesOutNetworkAndBroadcast() throws {
        let range = try AddressRange(cidr: "192.168.7.0/24")
        #expect(range.description == "192.168.7.0/24")
        #expect(range.count == 254)
        let addresses = range.addresses
        #expect(addresses.count == 254)
        #expect(addresses.first == "192.168.7.1")
        #expect(addresses.last == "192.168.7.254")
        #expect(Set(addresses).count == 254)
    }

    @Test func carriesAcrossBytes() throws {
        let addresses = try AddressRange(cidr: "10.1.254.0/23").addresses
        #expect(addresses.count == 510)
        #expect(addresses[254] == "10.1.254.255")
        #expect(addresses[255] == "10.1.255.0")
        #expect(addresses.last == "10.1.255.254")
    }

    @Test func smallBlocksAndSingleAddresses() throws {
        #expect(try AddressRange(cidr: "127.0.1.10").addresses == ["127.0.1.10"])
        #expect(try AddressRange(cidr: "127.0.1.10/32").addresses == ["127.0.1.10"])
        #expect(try AddressRange(cidr: "127.0.1.10/31").addresses == ["127.0.1.10", "127.0.1.11"])
        #expect(try AddressRange(cidr: "127.0.1.8/30").addresses == ["127.0.1.9", "127.0.1.10"])
    }

    @Test func slash16IsTheLimit() throws {
        #expect(try AddressRange(cidr: "172.20.0.0/16").count == 65_534)
        let error = #expect(throws: PiflashError.self) { try AddressRange(cidr: "172.20.0.0/15") }
        #expect(error?.status == .usage)
        #expect(error?.message.contains("at most 65536") == true)
        #expect(throws: PiflashError.self) { try AddressRange(cidr: "0.0.0.0/0") }
    }

    @Test func ipv6() throws {
        let range = try AddressRange(cidr: "fd00:1::/120")
        #expect(range.isIPv6)
        #expect(range.count == 256)
        #expect(range.addresses.first == "fd00:1::")
        #expect(range.addresses.last == "fd00:1::ff")
        #expect(try AddressRange(cidr: "fd00::/112").count == 65_536)
        #expect(throws: PiflashError.self) { try AddressRange(cidr: "fd00::/111") }
    }

    @Test func malformedBlocksAreUsageErrors() {
        for text in ["", "nonsense/24", "192.168.1.0/33", "192.168.1.0/", "192.168.1.0/x", "192.168.1/24", "1.2.3.4/24/1"] {
            let error = #expect(throws: PiflashError.self, "\(text)") { try AddressRange(cidr: text) }
            #expect(error?.status == .usage)
        }
        let hostBits = #expect(throws: PiflashError.self) { try AddressRange(cidr: "192.168.1.77/24") }
        #expect(hostBits?.hint == "did you mean 192.168.1.0/24?")
    }
}
