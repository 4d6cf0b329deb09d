import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

@Suite("SOPS: the sops-nix vectors", .enabled(if: TestSupport.vectorsRoot != nil, "../shared/vectors is absent"))
struct SOPSTests {
    static var folder: URL { TestSupport.vector("sops-nix")! }

    static func identities() throws -> [AgeIdentity] {
        try AgeIdentity.parse(String(contentsOf: folder.appendingPathComponent("age-keys.txt"), encoding: .utf8))
    }

    static func string(_ values: SecretValues, _ key: String) -> String? {
        values.value(key).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Writes `text` as a fixture file (test data, not a secret) and returns its path.
    static func fixture(_ text: String, named name: String, in folder: URL) throws -> String {
        let url = folder.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    /// Expects a loadSOPS failure with exit 1, whose message contains `fragment` and no secret.
    static func expectFailure(path: String, containing fragment: String) throws {
        do {
            let values = try SecretLoader.loadSOPS(path: path, identities: try identities(), environment: ["PATH": "/nonexistent"])
            Issue.record("decrypted a tampered file: keys \(values.keys)")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(error.description.contains(fragment), "\(error.description)")
            for secret in ["test_value", "another value", "e1", "e3"] {
                #expect(!error.description.contains(secret))
            }
        }
    }

    @Test("secrets.yaml decrypts natively with the age identity and its MAC verifies")
    func yaml() throws {
        let values = try SecretLoader.loadSOPS(
            path: Self.folder.appendingPathComponent("secrets.yaml").path, identities: try Self.identities())
        #expect(Self.string(values, "test_key") == "test_value")
        #expect(Self.string(values, "nested.test.file") == "another value")
        #expect(Self.string(values, "a_list.0") == "e1")
        #expect(Self.string(values, "a_list.1") == "e3")
        #expect(values.keys == ["a_list.0", "a_list.1", "nested.test.file", "test_key"])
    }

    static func yamlText() throws -> String {
        try String(contentsOf: folder.appendingPathComponent("secrets.yaml"), encoding: .utf8)
    }

    @Test("a changed value does not authenticate")
    func tamperedValue() throws {
        let temporary = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: temporary) }
        let text = try Self.yamlText().replacingOccurrences(of: "data:2mP+IAdczoEr0g==", with: "data:2mP+IAdczoEr0Q==")
        try Self.expectFailure(path: try Self.fixture(text, named: "value.yaml", in: temporary), containing: "test_key")
    }

    @Test("swapped list items decrypt, but the MAC (over values in order) catches it")
    func swappedValues() throws {
        let temporary = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: temporary) }
        let text = try Self.yamlText()
        let lines = text.components(separatedBy: "\n")
        let first = try #require(lines.firstIndex { $0.contains("data:oOQ=") })
        var swapped = lines
        swapped.swapAt(first, first + 1)
        try Self.expectFailure(path: try Self.fixture(swapped.joined(separator: "\n"), named: "swap.yaml", in: temporary), containing: "MAC mismatch")
    }

    @Test("a changed MAC or lastmodified is an error, never empty values")
    func tamperedMAC() throws {
        let temporary = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: temporary) }
        let text = try Self.yamlText()
        let mac = text.replacingOccurrences(of: "mac: ENC[AES256_GCM,data:WQjp", with: "mac: ENC[AES256_GCM,data:WQjq")
        #expect(mac != text)
        try Self.expectFailure(path: try Self.fixture(mac, named: "mac.yaml", in: temporary), containing: "MAC")
        let date = text.replacingOccurrences(of: "2021-09-30T19:49:41Z", with: "2021-09-30T19:49:42Z")
        #expect(date != text)
        try Self.expectFailure(path: try Self.fixture(date, named: "date.yaml", in: temporary), containing: "MAC")
        let nomac = text.components(separatedBy: "\n").filter { !$0.contains("mac: ENC") }.joined(separator: "\n")
        try Self.expectFailure(path: try Self.fixture(nomac, named: "nomac.yaml", in: temporary), containing: "no MAC")
    }

    @Test("the same document in SOPS JSON form decrypts and verifies (order-preserving JSON)")
    func jsonForm() throws {
        let text = try Self.yamlText()
        func enc(_ marker: String) throws -> String {
            let line = try #require(text.components(separatedBy: "\n").first { $0.contains(marker) })
            let start = try #require(line.range(of: "ENC[")).lowerBound
            return String(line[start...])
        }
        func armored(_ recipient: String) throws -> String {
            let lines = text.components(separatedBy: "\n")
            let start = try #require(lines.firstIndex { $0.contains(recipient) })
            let body = lines[(start + 2)...].prefix { !$0.contains("recipient:") && !$0.contains("lastmodified") }
            return body.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: "\\n") + "\\n"
        }
        let json = """
            {
              "test_key": "\(try enc("test_key"))",
              "a_list": ["\(try enc("data:oOQ="))", "\(try enc("data:mYU="))"],
              "nested": {"test": {"file": "\(try enc("file: ENC"))"}},
              "sops": {
                "kms": null,
                "age": [{"recipient": "age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw",
                         "enc": "\(try armored("age1yt3tfq"))"}],
                "lastmodified": "2021-09-30T19:49:41Z",
                "mac": "\(try enc("mac: ENC"))",
                "unencrypted_suffix": "_unencrypted",
                "version": "3.7.1"
              }
            }
            """
        let temporary = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: temporary) }
        let values = try SecretLoader.loadSOPS(path: try Self.fixture(json, named: "s.json", in: temporary), identities: try Self.identities())
        #expect(Self.string(values, "nested.test.file") == "another value")
        #expect(Self.string(values, "a_list.1") == "e3")
        // Reordering keys changes the MAC input: refused.
        let reordered = json.replacingOccurrences(
            of: "\"test_key\": \"\(try enc("test_key"))\",\n  \"a_list\": [\"\(try enc("data:oOQ="))\", \"\(try enc("data:mYU="))\"],",
            with: "\"a_list\": [\"\(try enc("data:oOQ="))\", \"\(try enc("data:mYU="))\"],\n  \"test_key\": \"\(try enc("test_key"))\",")
        #expect(reordered != json)
        try Self.expectFailure(path: try Self.fixture(reordered, named: "r.json", in: temporary), containing: "MAC mismatch")
    }

    @Test("PGP-only files parse; without sops on PATH the error names the recipients", arguments: ["secrets.json", "secrets.env", "secrets.ini"])
    func pgpOnly(_ name: String) throws {
        let path = Self.folder.appendingPathComponent(name).path
        let content = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let document = try SOPSDocument(content: content, format: SOPSFormat.detect(path: path, content: content), path: path)
        #expect(document.metadata.ageRecipients.isEmpty)
        #expect(document.metadata.otherKeys.contains("pgp 7FB89715AADA920D65D25E63F9BA9DEBD03F57C0"))
        #expect(!document.metadata.mac.isEmpty)
        #expect(!document.metadata.lastModified.isEmpty)
        let flatKeys = document.branches.flatMap { $0.map(\.key) }
        #expect(!flatKeys.contains("sops"))
        #expect(!flatKeys.contains { $0.hasPrefix("sops_") })
        do {
            _ = try SecretLoader.loadSOPS(path: path, identities: try Self.identities(), environment: ["PATH": "/nonexistent"])
            Issue.record("decrypted a PGP-only file without sops")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(error.message.contains("no age recipient matches"))
            #expect(error.message.contains("pgp 7FB89715AADA920D65D25E63F9BA9DEBD03F57C0"))
            #expect(error.hint?.contains("install sops") == true)
        }
    }

    @Test("the format is detected by extension, else by content")
    func formatDetection() {
        #expect(SOPSFormat.detect(path: "a/b.yaml", content: []) == .yaml)
        #expect(SOPSFormat.detect(path: "b.json", content: []) == .json)
        #expect(SOPSFormat.detect(path: "b.env", content: []) == .dotenv)
        #expect(SOPSFormat.detect(path: "b.ini", content: []) == .ini)
        #expect(SOPSFormat.detect(path: "b", content: Array(" {\"a\": 1}".utf8)) == .json)
        #expect(SOPSFormat.detect(path: "b", content: Array("a=1\nsops_mac=x\n".utf8)) == .dotenv)
        #expect(SOPSFormat.detect(path: "b", content: Array("a: 1\n".utf8)) == .yaml)
    }

    @Test("flattened dotenv/INI metadata rebuilds lists and maps")
    func unflatten() throws {
        let node = SOPSFlatMetadata.unflatten([
            ("age__list_1__map_recipient", "age1b"), ("age__list_0__map_recipient", "age1a"),
            ("age__list_0__map_enc", "line1\\nline2"), ("age__list_1__map_enc", "x"), ("lastmodified", "2023-01-01T00:00:00Z"),
        ])
        let metadata = try SOPSMetadata(node, path: "x")
        #expect(metadata.ageRecipients.map(\.recipient) == ["age1a", "age1b"])
        #expect(metadata.ageRecipients[0].encryptedDataKey == "line1\nline2")
        #expect(metadata.lastModifiedForMAC == "2023-01-01T00:00:00Z")
    }

    @Test("lastmodified is normalised like Go's RFC3339 formatting")
    func lastModified() throws {
        var metadata = try SOPSMetadata(.mapping([("lastmodified", .string("2021-09-30T19:49:41.123456Z"))]), path: "x")
        #expect(metadata.lastModifiedForMAC == "2021-09-30T19:49:41Z")
        metadata.lastModified = "2021-09-30T21:49:41+02:00"
        #expect(metadata.lastModifiedForMAC == "2021-09-30T21:49:41+02:00")
        metadata.lastModified = "2021-09-30T19:49:41+00:00"
        #expect(metadata.lastModifiedForMAC == "2021-09-30T19:49:41Z")
    }

    @Test("Go float formatting for unencrypted numbers in the MAC")
    func floats() {
        #expect(goFormatFloat(1234.56789) == "1234.56789")
        #expect(goFormatFloat(5) == "5")
        #expect(goFormatFloat(1e21) == "1000000000000000000000")
        #expect(goFormatFloat(1.5e-7) == "0.00000015")
        #expect(goFormatFloat(-0.25) == "-0.25")
        #expect(goFormatFloat(0) == "0")
    }

    @Test("order-preserving JSON keeps key order, escapes and number text")
    func orderedJSON() throws {
        let node = try OrderedJSON.parse(Array(#"{"b": 1, "a": [true, null, "x\u00e9\n"], "c": {"z": -1.50e2}}"#.utf8))
        guard case .mapping(let items) = node else { Issue.record("not a mapping"); return }
        #expect(items.map(\.key) == ["b", "a", "c"])
        let flat = node.flattened()
        #expect(flat["a.2"] == Array("xé\n".utf8))
        #expect(flat["a.0"] == Array("true".utf8))
        #expect(flat["a.1"] == nil)
        #expect(flat["c.z"] == Array("-1.50e2".utf8))
        #expect(throws: OrderedJSON.SyntaxError.self) { try OrderedJSON.parse(Array(#"{"a": 01}"#.utf8)) }
        #expect(throws: OrderedJSON.SyntaxError.self) { try OrderedJSON.parse(Array(#"{"a": 1} x"#.utf8)) }
    }
}
