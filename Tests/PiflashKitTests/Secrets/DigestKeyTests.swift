import Crypto
import PiflashKit
import PiflashSecrets
import Testing

@Suite struct DigestKeyTests {
    let secrets = SecretValues(["wifi_psk": Array("hunter22".utf8), "wifi_ssid": Array("home".utf8), "other": [1, 2]])

    @Test func derivationMatchesTheDocumentedConstruction() throws {
        let key = try #require(DigestKey(secrets: secrets, names: ["wifi_ssid", "wifi_psk"]))
        // Independent construction of the documented input: sorted names, 4-byte big-endian lengths.
        func lp(_ b: [UInt8]) -> [UInt8] { [0, 0, 0, UInt8(b.count)] + b }
        let ikm = lp(Array("wifi_psk".utf8)) + lp(Array("hunter22".utf8)) + lp(Array("wifi_ssid".utf8)) + lp(Array("home".utf8))
        let expected = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: ikm), salt: Array("piflash".utf8),
                                              info: Array("piflash content digest v1".utf8), outputByteCount: 32)
        let raw = expected.withUnsafeBytes { Array($0) }
        #expect(key == DigestKey(raw: raw))
        let message = Array("WIFI_PSK=hunter22\n".utf8)
        #expect(key.mac(message) == Array(HMAC<SHA256>.authenticationCode(for: message, using: expected)))
        #expect(key.macHex(message) != sha256Hex(message))
    }

    @Test func dependsOnlyOnTheNamedSecrets() {
        let a = DigestKey(secrets: secrets, names: ["wifi_psk"])
        let b = DigestKey(secrets: SecretValues(["wifi_psk": Array("hunter22".utf8)]), names: ["wifi_psk", "wifi_psk"])
        let c = DigestKey(secrets: SecretValues(["wifi_psk": Array("hunter23".utf8)]), names: ["wifi_psk"])
        #expect(a == b)
        #expect(a != c)
        #expect(DigestKey(secrets: secrets, names: []) == nil)
        #expect(DigestKey(secrets: secrets, names: ["missing"]) == nil)
    }
}

@Suite struct WiFiRulesTests {
    @Test(arguments: ["12345678", String(repeating: "x", count: 63), " lead \"q\" back\\slash ", String(repeating: "aF0", count: 21) + "a"])
    func validPassphrases(_ psk: String) {
        #expect(WiFiRules.pskProblem(Array(psk.utf8)) == nil)
    }

    @Test func invalidPassphrasesNameTheRule() {
        #expect(WiFiRules.pskProblem(Array("1234567".utf8))?.code == "psk_length")
        #expect(WiFiRules.pskProblem(Array(String(repeating: "g", count: 64).utf8))?.code == "psk_hex")
        #expect(WiFiRules.pskProblem(Array("abc\tdefgh".utf8))?.code == "psk_character")
        #expect(WiFiRules.pskProblem(Array("pässwört".utf8))?.code == "psk_character")
        #expect(WiFiRules.pskProblem(Array(String(repeating: "x", count: 65).utf8))?.code == "psk_length")
    }

    @Test func ssidLength() {
        #expect(WiFiRules.ssidProblem([])?.code == "ssid_length")
        #expect(WiFiRules.ssidProblem(Array(repeating: 0x41, count: 32)) == nil)
        #expect(WiFiRules.ssidProblem(Array(repeating: 0x41, count: 33))?.code == "ssid_length")
        #expect(WiFiRules.ssidProblem(Array("café ☕".utf8)) == nil)
    }
}
