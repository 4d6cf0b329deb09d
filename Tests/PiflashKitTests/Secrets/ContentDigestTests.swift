import Crypto
import Foundation
import PiflashKit
import PiflashSecrets
import Testing

/// The documented key derivation, built here from its description in piflash-hosts(5) with
/// swift-crypto's HKDF (not through ``DigestKey``): length-prefixed (name, value) pairs sorted by
/// name, salt `piflash`, info `piflash content digest v1`, 32 bytes.
func independentDigestKey(_ secrets: [String: [UInt8]]) -> SymmetricKey {
    func lengthPrefixed(_ bytes: [UInt8]) -> [UInt8] {
        let n = UInt32(bytes.count)
        return [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] + bytes
    }
    var material: [UInt8] = []
    for name in secrets.keys.sorted() {
        material += lengthPrefixed(Array(name.utf8)) + lengthPrefixed(secrets[name]!)
    }
    return HKDF<SHA256>.deriveKey(
        inputKeyMaterial: SymmetricKey(data: material), salt: Array("piflash".utf8),
        info: Array("piflash content digest v1".utf8), outputByteCount: 32)
}

func independentHMAC(_ content: [UInt8], _ key: SymmetricKey) -> String {
    HMAC<SHA256>.authenticationCode(for: content, using: key).map { String(format: "%02x", $0) }.joined()
}

func independentSHA256(_ content: [UInt8]) -> String {
    SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined()
}

@Suite("Keyed digests of secret-derived content")
struct ContentDigestTests {
    @Test(
        "rendering: secret and secret templates get HMAC-SHA-256 under the host's key; public_key_of and plain templates get SHA-256",
        .enabled(if: hostsToolExists("ssh-keygen"), "needs ssh-keygen"))
    func renderedDigests() throws {
        let folder = try HostsTempFolder()
        let keyPath = folder.path + "/key"
        #expect(try hostsRunTool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", keyPath]).status == 0)
        let pem = Array(try #require(FileManager.default.contents(atPath: keyPath)))
        let host = try HostFile.parse("""
            [secrets]
            dir = "secrets"
            [[files]]
            path = "/var/lib/bootstrap/ssh_host_ed25519_key"
            secret = "ssh_host_ed25519_key"
            [[files]]
            path = "/var/lib/bootstrap/ssh_host_ed25519_key.pub"
            public_key_of = "ssh_host_ed25519_key"
            [[files]]
            path = "/var/lib/networkmanager/system-connections.env"
            template = "WIFI_SSID=${wifi_ssid}\\nWIFI_PSK=${wifi_psk}\\n"
            [[files]]
            path = "/var/lib/motd"
            template = "no secrets here\\n"
            """, path: "/h/bastet.toml")
        let values: [String: [UInt8]] = [
            "ssh_host_ed25519_key": pem, "wifi_ssid": Array("home".utf8), "wifi_psk": Array("sunshine".utf8),
        ]
        // A secret no file uses is not part of the key.
        let secrets = SecretValues(values.merging(["unused": Array("x".utf8)]) { a, _ in a })
        let files = try host.render(secrets: secrets)
        let key = independentDigestKey(values)
        #expect(host.digestKey(secrets: secrets) == DigestKey(raw: key.withUnsafeBytes { Array($0) }))

        #expect(files.map(\.isSecretDerived) == [true, false, true, false])
        #expect(files[0].record.digest == .hmacSHA256(independentHMAC(pem, key)))
        #expect(files[1].record.digest == .sha256(independentSHA256(files[1].content)))
        let env = Array("WIFI_SSID=home\nWIFI_PSK=sunshine\n".utf8)
        #expect(files[2].content == env)
        #expect(files[2].record.digest == .hmacSHA256(independentHMAC(env, key)))
        #expect(files[2].record.digest.hex != independentSHA256(env), "never the plain digest")
        #expect(files[3].record.digest == .sha256(independentSHA256(Array("no secrets here\n".utf8))))

        // Every printed form: JSON field names and the summary line say what the digest is.
        let json = JSONValue.object(files[2].record.jsonFields).serialized()
        #expect(json.contains("\"hmac_sha256\":\"\(independentHMAC(env, key))\""))
        #expect(!json.contains("\"sha256\""))
        #expect(JSONValue.object(files[1].record.jsonFields).serialized().contains("\"sha256\":"))
        #expect(files[2].record.summaryLine.contains("hmac-sha256 \(independentHMAC(env, key).prefix(16))"))

        // A new passphrase is a new key: every secret file's digest changes.
        var rotated = values
        rotated["wifi_psk"] = Array("moonbeam".utf8)
        let again = try host.render(secrets: SecretValues(rotated))
        #expect(again[0].record.digest != files[0].record.digest)
        #expect(again[1].record.digest == files[1].record.digest)
    }

    @Test("matches: keyed digests need the key; legacy digests compare plainly; scrubbed never matches")
    func matching() throws {
        let secrets = SecretValues(["wifi_psk": Array("sunshine".utf8)])
        let key = try #require(DigestKey(secrets: secrets, names: ["wifi_psk"]))
        let other = try #require(DigestKey(secrets: SecretValues(["wifi_psk": Array("sunshinf".utf8)]), names: ["wifi_psk"]))
        let content = Array("WIFI_PSK=sunshine\n".utf8)
        let keyed = ContentDigest.of(content, key: key)
        #expect(keyed.matches(content, key: key))
        #expect(!keyed.matches(content, key: other))
        #expect(!keyed.matches(content, key: nil))
        #expect(!keyed.matches(Array("WIFI_PSK=sunshinf\n".utf8), key: key))
        #expect(ContentDigest.legacySHA256(independentSHA256(content)).matches(content, key: key))
        #expect(!ContentDigest.scrubbed.matches(content, key: key))

        let file = BootstrapFile(path: "/e", content: content, mode: 0o600, digestKey: key)
        #expect(file.record.describes(file))
        var legacy = file.record
        legacy.digest = .legacySHA256(independentSHA256(content))
        #expect(legacy.describes(file), "a journal entry from before keyed digests still describes the same file")
        var changedMode = file.record
        changedMode.mode = 0o644
        #expect(!changedMode.describes(file))
    }

    @Test("the journal's digest kinds round-trip; a digest without a kind is legacy")
    func storedKinds() {
        let hex = String(repeating: "ab", count: 32)
        for digest in [ContentDigest.sha256(hex), .hmacSHA256(hex), .legacySHA256(hex), .scrubbed] {
            #expect(ContentDigest(storedKind: digest.storedKind, hex: digest.hex ?? "") == digest)
        }
        #expect(ContentDigest(storedKind: nil, hex: hex) == .legacySHA256(hex))
        #expect(JSONValue.object(ContentDigest.legacySHA256(hex).jsonFields).serialized()
                == "{\"sha256\":\"\(hex)\",\"legacy_plain_digest\":true}")
        #expect(JSONValue.object(ContentDigest.scrubbed.jsonFields).serialized() == "{\"digest_scrubbed\":true}")
    }
}
