import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

@Suite("OpenSSH ed25519 keys")
struct OpenSSHKeyTests {
    static let sshKeygen = TestSupport.which("ssh-keygen")

    static func keygen(_ arguments: [String], in folder: URL) throws -> URL {
        let file = folder.appendingPathComponent("key-\(UUID().uuidString)")
        let result = try TestSupport.run(sshKeygen!, ["-q", "-f", file.path, "-C", "test@piflash"] + arguments)
        #expect(result.status == 0)
        return file
    }

    @Test("a generated key: line and fingerprint match ssh-keygen -y and -lf", .enabled(if: sshKeygen != nil, "ssh-keygen is not installed"))
    func generated() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        for _ in 0..<3 {
            let file = try Self.keygen(["-t", "ed25519", "-N", ""], in: folder)
            let key = try OpenSSHPublicKey(privateKeyPEM: Array(try Data(contentsOf: file)))
            let derived = String(decoding: try TestSupport.run(Self.sshKeygen!, ["-y", "-f", file.path]).stdout, as: UTF8.self)
            let derivedFields = derived.split(separator: " ")
            #expect(key.line == derivedFields.prefix(2).joined(separator: " "))
            let listed = String(decoding: try TestSupport.run(Self.sshKeygen!, ["-l", "-f", file.path + ".pub"]).stdout, as: UTF8.self)
            #expect(key.fingerprint == String(listed.split(separator: " ")[1]))
            let publicLine = try String(contentsOf: URL(fileURLWithPath: file.path + ".pub"), encoding: .utf8)
            #expect(try OpenSSHPublicKey(line: publicLine) == key)
            #expect(key.rawPublicKey.count == 32)
        }
    }

    @Test("the sops-nix key and its .pub agree", .enabled(if: TestSupport.vectorsRoot != nil, "../shared/vectors is absent"))
    func vector() throws {
        let folder = TestSupport.vector("sops-nix")!
        let key = try OpenSSHPublicKey(privateKeyPEM: Array(try Data(contentsOf: folder.appendingPathComponent("ssh-ed25519-key"))))
        let line = try String(contentsOf: folder.appendingPathComponent("ssh-ed25519-key.pub"), encoding: .utf8)
        #expect(try OpenSSHPublicKey(line: line) == key)
        #expect(key.line == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBI1+Q+ntzANebtnicCiAY29uqLGWOaOGLEa8bUqOVmS")
        if let sshKeygen = Self.sshKeygen {
            let listed = String(decoding: try TestSupport.run(sshKeygen, ["-l", "-f", folder.appendingPathComponent("ssh-ed25519-key.pub").path]).stdout, as: UTF8.self)
            #expect(key.fingerprint == String(listed.split(separator: " ")[1]))
        }
    }

    @Test("encrypted and non-ed25519 keys are refused with a clear message", .enabled(if: sshKeygen != nil, "ssh-keygen is not installed"))
    func refused() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let encrypted = try Self.keygen(["-t", "ed25519", "-N", "correct horse"], in: folder)
        do {
            _ = try OpenSSHPublicKey(privateKeyPEM: Array(try Data(contentsOf: encrypted)))
            Issue.record("accepted an encrypted key")
        } catch let error as PiflashError {
            #expect(error.message.contains("passphrase"))
        }
        let ecdsa = try Self.keygen(["-t", "ecdsa", "-N", ""], in: folder)
        do {
            _ = try OpenSSHPublicKey(privateKeyPEM: Array(try Data(contentsOf: ecdsa)))
            Issue.record("accepted an ECDSA key")
        } catch let error as PiflashError {
            #expect(error.message.contains("only ssh-ed25519"))
        }
        let ecdsaLine = try String(contentsOf: URL(fileURLWithPath: ecdsa.path + ".pub"), encoding: .utf8)
        #expect(throws: PiflashError.self) { try OpenSSHPublicKey(line: ecdsaLine) }
    }

    @Test("corrupted keys are refused: check integers, public half, truncation", .enabled(if: sshKeygen != nil, "ssh-keygen is not installed"))
    func corrupted() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = try Self.keygen(["-t", "ed25519", "-N", ""], in: folder)
        let body = try OpenSSHPublicKey.pemBody(Array(try Data(contentsOf: file)))
        func pem(_ bytes: [UInt8]) -> [UInt8] {
            Array(("-----BEGIN OPENSSH PRIVATE KEY-----\n" + Base64.encode(bytes, padded: true) + "\n-----END OPENSSH PRIVATE KEY-----\n").utf8)
        }
        #expect(throws: Never.self) { try OpenSSHPublicKey(privateKeyPEM: pem(body)) }
        // The private section starts after magic(15) + "none" + "none" + "" + count + public blob (4+51).
        let privateStart = 15 + 8 + 8 + 4 + 4 + 4 + 51 + 4
        var checkInts = body
        checkInts[privateStart] ^= 0xFF
        #expect(throws: PiflashError.self) { try OpenSSHPublicKey(privateKeyPEM: pem(checkInts)) }
        var seed = body
        seed[privateStart + 8 + 4 + 11 + 4 + 32 + 4] ^= 1  // first byte of the seed
        #expect(throws: PiflashError.self) { try OpenSSHPublicKey(privateKeyPEM: pem(seed)) }
        #expect(throws: PiflashError.self) { try OpenSSHPublicKey(privateKeyPEM: pem(Array(body.prefix(100)))) }
        #expect(throws: PiflashError.self) { try OpenSSHPublicKey(privateKeyPEM: Array("not a key".utf8)) }
    }

    @Test("public key lines: comment optional, garbage refused")
    func lines() throws {
        let base = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBI1+Q+ntzANebtnicCiAY29uqLGWOaOGLEa8bUqOVmS"
        #expect(try OpenSSHPublicKey(line: base).line == base)
        #expect(try OpenSSHPublicKey(line: base + " user@host\n").line == base)
        #expect(throws: PiflashError.self) { try OpenSSHPublicKey(line: "ssh-ed25519") }
        #expect(throws: PiflashError.self) { try OpenSSHPublicKey(line: "ssh-ed25519 AAAA!!") }
        #expect(throws: PiflashError.self) { try OpenSSHPublicKey(line: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBI1") }
    }
}
