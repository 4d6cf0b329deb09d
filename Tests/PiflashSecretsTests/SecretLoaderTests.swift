import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

@Suite("secret loaders: age-encrypted YAML/dotenv files and plain folders")
struct SecretLoaderTests {
    static func string(_ values: SecretValues, _ key: String) -> String? {
        values.value(key).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Encrypts `plaintext` with the age command into `folder/name`.
    static func ageFile(_ plaintext: String, named name: String, in folder: URL) throws -> (path: String, identity: AgeIdentity) {
        let key = try AgeToolTests.keygen(in: folder)
        let path = folder.appendingPathComponent(name).path
        let result = try TestSupport.run(TestSupport.which("age")!, ["-r", key.recipient, "-o", path], stdin: Data(plaintext.utf8))
        #expect(result.status == 0)
        return (path, key.identity)
    }

    @Test("x.yaml.age: decrypted with age, flattened like SOPS", .enabled(if: TestSupport.which("age") != nil, "age is not installed"))
    func yamlAge() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let yaml = """
            wifi_ssid: home
            wifi_psk: "p4ss: word"
            ssh_host_ed25519_key: |
              -----BEGIN OPENSSH PRIVATE KEY-----
              abc
              -----END OPENSSH PRIVATE KEY-----
            nested:
              deep:
                port: 8080
            list: [a, b]
            empty:
            """
        let file = try Self.ageFile(yaml, named: "bastet.yaml.age", in: folder)
        let values = try SecretLoader.loadAge(path: file.path, identities: [file.identity])
        #expect(Self.string(values, "wifi_ssid") == "home")
        #expect(Self.string(values, "wifi_psk") == "p4ss: word")
        #expect(Self.string(values, "ssh_host_ed25519_key") == "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
        #expect(Self.string(values, "nested.deep.port") == "8080")
        #expect(Self.string(values, "list.1") == "b")
        #expect(values.value("empty") == nil)
    }

    @Test("x.env.age: KEY=value, comments, quotes, \\n escapes", .enabled(if: TestSupport.which("age") != nil, "age is not installed"))
    func dotenvAge() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let dotenv = """
            # Wi-Fi
            WIFI_SSID=home net
            export WIFI_PSK='se#cret'
            KEY="line1\\nline2 \\"q\\""
            RAW=a\\nb # comment

            """
        let file = try Self.ageFile(dotenv, named: "bastet.env.age", in: folder)
        let values = try SecretLoader.loadAge(path: file.path, identities: [file.identity])
        #expect(values.keys == ["KEY", "RAW", "WIFI_PSK", "WIFI_SSID"])
        #expect(Self.string(values, "WIFI_SSID") == "home net")
        #expect(Self.string(values, "WIFI_PSK") == "se#cret")
        #expect(Self.string(values, "KEY") == "line1\nline2 \"q\"")
        #expect(Self.string(values, "RAW") == "a\nb")
    }

    @Test("a malformed dotenv line is an exit-2 error naming the line only", .enabled(if: TestSupport.which("age") != nil, "age is not installed"))
    func badDotenv() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = try Self.ageFile("A=1\nsecretvalue-without-equals\n", named: "x.env.age", in: folder)
        do {
            _ = try SecretLoader.loadAge(path: file.path, identities: [file.identity])
            Issue.record("accepted a malformed dotenv")
        } catch let error as PiflashError {
            #expect(error.status == .usage)
            #expect(error.message.contains("line 2"))
            #expect(!error.description.contains("secretvalue"))
        }
    }

    @Test("malformed decrypted YAML: an error that does not quote the plaintext", .enabled(if: TestSupport.which("age") != nil, "age is not installed"))
    func badYAML() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = try Self.ageFile("ok: 1\npsk: \"hunter2-secret\n  bad: [\n", named: "x.yaml.age", in: folder)
        do {
            _ = try SecretLoader.loadAge(path: file.path, identities: [file.identity])
            Issue.record("accepted malformed YAML")
        } catch let error as PiflashError {
            #expect(error.status == .usage)
            #expect(!error.description.contains("hunter2"))
        }
    }

    @Test("a folder: one value per regular file, read verbatim; hidden files and folders skipped")
    func directory() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        try Data([0, 1, 2, 255]).write(to: folder.appendingPathComponent("binary"))
        try Data("psk\n".utf8).write(to: folder.appendingPathComponent("wifi_psk"))
        try Data("x".utf8).write(to: folder.appendingPathComponent(".hidden"))
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("sub"), withIntermediateDirectories: true)
        let values = try SecretLoader.loadDirectory(path: folder.path)
        #expect(values.keys == ["binary", "wifi_psk"])
        #expect(values.value("binary") == [0, 1, 2, 255])
        #expect(values.value("wifi_psk") == Array("psk\n".utf8))
        #expect(throws: PiflashError.self) { try SecretLoader.loadDirectory(path: folder.appendingPathComponent("missing").path) }
    }

    @Test("missing files are exit-2 errors naming the file")
    func missing() throws {
        do {
            _ = try SecretLoader.loadSOPS(path: "/nonexistent/secrets.yaml", identities: [])
            Issue.record("opened a missing file")
        } catch let error as PiflashError {
            #expect(error.status == .usage)
            #expect(error.description.contains("/nonexistent/secrets.yaml"))
        }
    }
}
