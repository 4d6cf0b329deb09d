import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

/// OpenSSH ed25519 keys as age identities (`ssh-ed25519` stanzas).
@Suite("age: SSH ed25519 identities")
struct AgeSSHIdentityTests {
    @Test("the sops-nix file opens with its SSH key (its second age recipient)", .enabled(if: TestSupport.vectorsRoot != nil, "../shared/vectors is absent"))
    func sopsNix() throws {
        let folder = TestSupport.vector("sops-nix")!
        let identity = try AgeIdentity(sshPrivateKeyPEM: Array(try Data(contentsOf: folder.appendingPathComponent("ssh-ed25519-key"))))
        #expect(identity.recipient.hasPrefix("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBI1"))
        let values = try SecretLoader.loadSOPS(
            path: folder.appendingPathComponent("secrets.yaml").path, identities: [identity], environment: ["PATH": "/nonexistent"])
        #expect(values.value("test_key") == Array("test_value".utf8))
        #expect(values.value("a_list.1") == Array("e3".utf8))
    }

    @Test("files encrypted by age -R key.pub decrypt; other SSH keys do not match",
          .enabled(if: TestSupport.which("age") != nil && TestSupport.which("ssh-keygen") != nil, "age or ssh-keygen is not installed"))
    func ageCommand() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = try OpenSSHKeyTests.keygen(["-t", "ed25519", "-N", ""], in: folder)
        let other = try OpenSSHKeyTests.keygen(["-t", "ed25519", "-N", ""], in: folder)
        let plaintext = Data((0..<70_000).map { UInt8(truncatingIfNeeded: $0) })
        let result = try TestSupport.run(TestSupport.which("age")!, ["-R", key.path + ".pub"], stdin: plaintext)
        #expect(result.status == 0)
        let identity = try AgeIdentity(sshPrivateKeyPEM: Array(try Data(contentsOf: key)))
        let otherIdentity = try AgeIdentity(sshPrivateKeyPEM: Array(try Data(contentsOf: other)))
        #expect(try AgeFile.decrypt(Array(result.stdout), identities: [otherIdentity, identity]) == Array(plaintext))
        #expect(throws: PiflashError.self) { try AgeFile.decrypt(Array(result.stdout), identities: [otherIdentity]) }

        // SOPS_AGE_SSH_PRIVATE_KEY_FILE is one of the places identities are loaded from.
        let loaded = try AgeIdentity.load(explicitFile: nil, environment: ["SOPS_AGE_SSH_PRIVATE_KEY_FILE": key.path, "HOME": "/nonexistent"])
        #expect(loaded.map(\.recipient) == [identity.recipient])
    }
}
