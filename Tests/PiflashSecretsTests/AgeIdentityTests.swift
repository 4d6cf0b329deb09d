import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

@Suite("age identities")
struct AgeIdentityTests {
    static let vectorKey = "AGE-SECRET-KEY-1NJT5YCS2LWU4V4QAJQ6R4JNU7LXPDX602DZ9NUFANVU5GDTGUWCQ5T59M6"
    static let vectorRecipient = "age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw"

    @Test("keys.txt: comments and blank lines skipped, CRLF tolerated, recipient derived")
    func parse() throws {
        let text = "# created: 2020-07-18\r\n# public key: \(Self.vectorRecipient)\r\n\r\n\(Self.vectorKey)\r\n"
        let identities = try AgeIdentity.parse(text)
        #expect(identities.count == 1)
        #expect(identities[0].secretKey.count == 32)
        #expect(identities[0].recipient == Self.vectorRecipient)
    }

    @Test("the recipient matches age-keygen -y", .enabled(if: TestSupport.which("age-keygen") != nil, "age-keygen is not installed"))
    func recipientMatchesAgeKeygen() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = try AgeToolTests.keygen(in: folder)
        #expect(key.identity.recipient == key.recipient)
    }

    @Test("a line that is not an identity is an error naming the line, not its content")
    func badLine() throws {
        let text = "\(Self.vectorKey)\nAGE-SECRET-KEY-1NOTAKEYATALLQQQQ\n"
        do {
            _ = try AgeIdentity.parse(text)
            Issue.record("accepted a bad line")
        } catch let error as PiflashError {
            #expect(error.status == .usage)
            #expect(error.message.contains("line 2"))
            #expect(!error.description.contains("NOTAKEY"))
        }
        // A wrong checksum is refused too.
        var corrupted = Array(Self.vectorKey)
        corrupted[corrupted.count - 1] = corrupted.last == "6" ? "7" : "6"
        #expect(throws: PiflashError.self) { try AgeIdentity.parse(String(corrupted)) }
    }

    @Test("load: flag, SOPS_AGE_KEY, SOPS_AGE_KEY_FILE and the default keys file, in that order")
    func load() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let keys = (0..<4).map { _ in AgeIdentity(secretKey: (0..<32).map { _ in UInt8.random(in: 0...255) }) }
        func bech32(_ identity: AgeIdentity) -> String {
            Bech32.encode(hrp: "age-secret-key-", data: identity.secretKey).uppercased()
        }
        let explicitFile = folder.appendingPathComponent("explicit.txt")
        try (bech32(keys[0]) + "\n").write(to: explicitFile, atomically: true, encoding: .utf8)
        let envFile = folder.appendingPathComponent("env.txt")
        try ("# comment\n" + bech32(keys[2]) + "\n").write(to: envFile, atomically: true, encoding: .utf8)
        let home = folder.appendingPathComponent("home")
        try FileManager.default.createDirectory(at: home.appendingPathComponent(".config/sops/age"), withIntermediateDirectories: true)
        try (bech32(keys[3]) + "\n").write(to: home.appendingPathComponent(".config/sops/age/keys.txt"), atomically: true, encoding: .utf8)

        let all = try AgeIdentity.load(
            explicitFile: explicitFile.path,
            environment: ["SOPS_AGE_KEY": bech32(keys[1]), "SOPS_AGE_KEY_FILE": envFile.path, "HOME": home.path])
        #expect(all.map(\.secretKey) == keys.map(\.secretKey))

        // XDG_CONFIG_HOME replaces ~/.config.
        let xdg = try AgeIdentity.load(
            explicitFile: nil, environment: ["HOME": "/nonexistent", "XDG_CONFIG_HOME": home.appendingPathComponent(".config").path])
        #expect(xdg.map(\.secretKey) == [keys[3].secretKey])

        // A named file that does not exist is an error (exit 2).
        #expect(throws: PiflashError.self) {
            try AgeIdentity.load(explicitFile: folder.appendingPathComponent("missing").path, environment: [:])
        }
    }

    @Test("no identity anywhere: an exit-1 error listing where it looked")
    func noIdentity() throws {
        do {
            _ = try AgeIdentity.load(explicitFile: nil, environment: ["HOME": "/nonexistent-home"])
            Issue.record("found identities out of nowhere")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(error.message.contains("SOPS_AGE_KEY"))
            #expect(error.message.contains("SOPS_AGE_KEY_FILE"))
            #expect(error.message.contains("/nonexistent-home/.config/sops/age/keys.txt"))
        }
    }

    @Test("bech32 round-trips and refuses mixed case")
    func bech32() throws {
        let decoded = try #require(Bech32.decode(Self.vectorKey))
        #expect(decoded.hrp == "age-secret-key-")
        #expect(Bech32.encode(hrp: decoded.hrp, data: decoded.data).uppercased() == Self.vectorKey)
        let mixed = "a" + Self.vectorKey.dropFirst()
        #expect(Bech32.decode(String(mixed)) == nil)
    }
}
