import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

/// Files encrypted by the real `age` command must decrypt natively.
@Suite("age: files from the age command", .enabled(if: TestSupport.which("age") != nil, "the age command is not installed"))
struct AgeToolTests {
    /// A fresh identity from age-keygen: its file, identity and public recipient.
    static func keygen(in folder: URL) throws -> (file: URL, identity: AgeIdentity, recipient: String) {
        let keyFile = folder.appendingPathComponent("key-\(UUID().uuidString).txt")
        try TestSupport.run(TestSupport.which("age-keygen")!, ["-o", keyFile.path])
        let recipient = String(decoding: try TestSupport.run(TestSupport.which("age-keygen")!, ["-y", keyFile.path]).stdout, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let identities = try AgeIdentity.parse(try String(contentsOf: keyFile, encoding: .utf8))
        #expect(identities.count == 1)
        return (keyFile, identities[0], recipient)
    }

    static func encrypt(_ plaintext: Data, to recipient: String, armor: Bool) throws -> [UInt8] {
        let arguments = (armor ? ["-a"] : []) + ["-r", recipient]
        let result = try TestSupport.run(TestSupport.which("age")!, arguments, stdin: plaintext)
        #expect(result.status == 0)
        return Array(result.stdout)
    }

    @Test("binary and armored files decrypt, small and multi-chunk", arguments: [false, true])
    func decrypts(armor: Bool) throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = try Self.keygen(in: folder)
        #expect(key.identity.recipient == key.recipient)
        for size in [0, 17, 64 * 1024, 64 * 1024 + 1, 200_000] {
            let plaintext = Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) })
            let file = try Self.encrypt(plaintext, to: key.recipient, armor: armor)
            #expect(AgeArmor.isArmored(file) == armor)
            let decrypted = try AgeFile.decrypt(file, identities: [key.identity])
            #expect(decrypted == Array(plaintext), "size \(size)")
        }
    }

    @Test("several recipients: any of them opens the file; the identity order does not matter")
    func multipleRecipients() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try Self.keygen(in: folder)
        let second = try Self.keygen(in: folder)
        let other = try Self.keygen(in: folder)
        let result = try TestSupport.run(
            TestSupport.which("age")!, ["-r", first.recipient, "-r", second.recipient], stdin: Data("hello".utf8))
        let file = Array(result.stdout)
        #expect(try AgeFile.decrypt(file, identities: [other.identity, second.identity]) == Array("hello".utf8))
    }

    @Test("a wrong identity is a clear exit-1 error naming no secret")
    func wrongIdentity() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let right = try Self.keygen(in: folder)
        let wrong = try Self.keygen(in: folder)
        let file = try Self.encrypt(Data("top secret value".utf8), to: right.recipient, armor: false)
        do {
            _ = try AgeFile.decrypt(file, identities: [wrong.identity], path: "x.age")
            Issue.record("decrypted with the wrong identity")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(error.message.contains("no identity matches"))
            #expect(error.message.contains(wrong.recipient))
            #expect(!error.description.contains("top secret"))
            #expect(!error.description.contains("AGE-SECRET-KEY"))
        }
    }

    @Test("a flipped payload byte is rejected")
    func tamperedPayload() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = try Self.keygen(in: folder)
        var file = try Self.encrypt(Data("payload".utf8), to: key.recipient, armor: false)
        file[file.count - 3] ^= 1
        #expect(throws: PiflashError.self) { try AgeFile.decrypt(file, identities: [key.identity]) }
    }
}
