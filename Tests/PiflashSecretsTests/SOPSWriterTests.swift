import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

/// Native SOPS encryption, checked by the real `age`, `sops` and `ssh-keygen`.
@Suite("SOPS writing, age encryption, OpenSSH keys, ssh-to-age")
struct SOPSWriterTests {
    static let pythonEdwardsToMontgomery = """
        import sys, base64
        p = 2**255 - 19
        blob = base64.b64decode(sys.argv[1].split()[1])
        key = blob[-32:]
        y = int.from_bytes(key, 'little') & ((1 << 255) - 1)
        u = (1 + y) * pow(1 - y, p - 2, p) % p
        data = u.to_bytes(32, 'little')
        CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l'
        def polymod(values):
            gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3]
            chk = 1
            for v in values:
                b = chk >> 25
                chk = (chk & 0x1ffffff) << 5 ^ v
                for i in range(5):
                    chk ^= gen[i] if ((b >> i) & 1) else 0
            return chk
        def expand(hrp):
            return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]
        acc, bits, five = 0, 0, []
        for b in data:
            acc = (acc << 8) | b
            bits += 8
            while bits >= 5:
                bits -= 5
                five.append((acc >> bits) & 31)
        if bits:
            five.append((acc << (5 - bits)) & 31)
        mod = polymod(expand('age') + five + [0] * 6) ^ 1
        checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
        print('age1' + ''.join(CHARSET[d] for d in five + checksum))
        """

    /// The recipient an independent Python computation (big integers, BIP 173 Bech32) derives
    /// from an `ssh-ed25519 AAAA…` line.
    static func independentRecipient(_ publicLine: String) throws -> String {
        let python = try #require(TestSupport.which("python3"))
        let result = try TestSupport.run(python, ["-c", pythonEdwardsToMontgomery, publicLine])
        #expect(result.status == 0)
        return String(decoding: result.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("a generated key is read by ssh-keygen: same public key, same fingerprint, comment kept")
    func generatedKeyMatchesSSHKeygen() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = OpenSSHPrivateKey.generate(comment: "root@bastet")
        let file = folder.appendingPathComponent("key")
        try Data(key.pem).write(to: file)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
        let sshKeygen = try #require(TestSupport.which("ssh-keygen"))
        let derived = String(decoding: try TestSupport.run(sshKeygen, ["-y", "-f", file.path]).stdout, as: UTF8.self)
        #expect(derived.trimmingCharacters(in: .whitespacesAndNewlines) == key.publicKey.line + " root@bastet")
        let listed = String(decoding: try TestSupport.run(sshKeygen, ["-l", "-f", file.path]).stdout, as: UTF8.self)
        #expect(listed.split(separator: " ")[1] == Substring(key.publicKey.fingerprint))
        // piflash's own parser reads it back too.
        #expect(try OpenSSHPublicKey(privateKeyPEM: key.pem) == key.publicKey)
        #expect(key.publicKeyFile == key.publicKey.line + " root@bastet\n")
    }

    @Test("ssh-to-age: equals an independent big-integer conversion, and the X25519 key of the private half")
    func sshToAge() throws {
        for _ in 0..<8 {
            let key = OpenSSHPrivateKey.generate(comment: "x")
            let recipient = try key.publicKey.ageRecipient().description
            #expect(recipient == (try Self.independentRecipient(key.publicKey.line)))
            // sops-nix converts the private key: SHA-512(seed)[0..32] as an X25519 scalar.
            let identity = try AgeIdentity(sshPrivateKeyPEM: key.pem)
            #expect(AgeIdentity(secretKey: identity.secretKey).recipient == recipient)
        }
    }

    @Test("the host's age recipient opens what the real age encrypts to it, with the converted private key")
    func recipientWorksWithAge() throws {
        let age = try #require(TestSupport.which("age"))
        let key = OpenSSHPrivateKey.generate(comment: "x")
        let recipient = try key.publicKey.ageRecipient().description
        let encrypted = try TestSupport.run(age, ["-r", recipient], stdin: Data("runtime secret".utf8))
        #expect(encrypted.status == 0)
        let identity = AgeIdentity(secretKey: try AgeIdentity(sshPrivateKeyPEM: key.pem).secretKey)
        #expect(try AgeFile.decrypt(Array(encrypted.stdout), identities: [identity]) == Array("runtime secret".utf8))
    }

    @Test("age files piflash encrypts are decrypted by the real age (several recipients, several chunks)")
    func ageEncryptionMatchesAge() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try AgeToolTests.keygen(in: folder)
        let second = try AgeToolTests.keygen(in: folder)
        let age = try #require(TestSupport.which("age"))
        for size in [0, 32, 65536, 65537, 200_000] {
            let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let recipients = [try AgeRecipient(first.recipient), try AgeRecipient(second.recipient)]
            for (armored, file) in [(false, try AgeFile.encrypt(plaintext, to: recipients)),
                                    (true, Array(try AgeFile.encryptArmored(plaintext, to: recipients).utf8))] {
                let path = folder.appendingPathComponent("f-\(size)-\(armored)")
                try Data(file).write(to: path)
                for key in [first, second] {
                    let result = try TestSupport.run(age, ["-d", "-i", key.file.path, path.path])
                    #expect(result.status == 0)
                    #expect(Array(result.stdout) == plaintext, "size \(size), armored \(armored)")
                }
            }
        }
    }

    @Test("recipient strings: age1… accepted, SSH keys, identities and typos refused with exit 2")
    func recipientParsing() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = try AgeToolTests.keygen(in: folder)
        #expect(try AgeRecipient(key.recipient).description == key.recipient)
        for bad in ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA", "age1qqq", String(key.recipient.dropLast()) + "x", "AGE-SECRET-KEY-1XYZ"] {
            #expect(throws: PiflashError.self) { try AgeRecipient(bad) }
        }
    }

    static let values: [(String, String)] = [
        ("ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"),
        ("wifi_ssid", "Pi Net: \"home\" #1"),
        ("wifi_psk", #"pa$$ word "with" #spaces ${x} \ back"#),
    ]

    static func tree() -> SOPSPlainNode {
        .mapping(values.map { ($0.0, .secret(Array($0.1.utf8))) })
    }

    @Test("SOPS files piflash writes decrypt natively to the same values", arguments: ["yaml", "json", "dotenv"])
    func roundTrip(_ format: String) throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = try AgeToolTests.keygen(in: folder)
        let bytes = try SOPSWriter.encrypt(Self.tree(), recipients: [try AgeRecipient(key.recipient)], rules: .init(), format: format)
        let text = String(decoding: bytes, as: UTF8.self)
        for (_, value) in Self.values { #expect(!text.contains(value)) }
        let path = folder.appendingPathComponent("s." + (format == "dotenv" ? "env" : format))
        try Data(bytes).write(to: path)
        let loaded = try SecretLoader.loadSOPS(path: path.path, identities: [key.identity], environment: ["PATH": "/nonexistent"])
        #expect(loaded.mapValues { String(decoding: $0, as: UTF8.self) } == Dictionary(uniqueKeysWithValues: Self.values))
    }

    @Test("the real sops decrypts what piflash writes, to exactly the values", .enabled(if: realSOPS != nil, "sops is not installed"),
          arguments: ["yaml", "json", "dotenv"])
    func sopsDecrypts(_ format: String) throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = try AgeToolTests.keygen(in: folder)
        let other = try AgeToolTests.keygen(in: folder)
        let bytes = try SOPSWriter.encrypt(
            Self.tree(), recipients: [try AgeRecipient(other.recipient), try AgeRecipient(key.recipient)], rules: .init(), format: format)
        let path = folder.appendingPathComponent("s." + (format == "dotenv" ? "env" : format))
        try Data(bytes).write(to: path)
        setenv("SOPS_AGE_KEY_FILE", key.file.path, 1)
        defer { unsetenv("SOPS_AGE_KEY_FILE") }
        let result = try TestSupport.run(realSOPS!, ["--decrypt", "--output-type", "json", path.path])
        #expect(result.status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: result.stdout) as? [String: String])
        #expect(json == Dictionary(uniqueKeysWithValues: Self.values))
    }

    @Test("a rule that would leave a value in the clear is refused")
    func refusesClearSecrets() throws {
        let recipient = AgeRecipient(publicKey: Array(repeating: 9, count: 32))
        #expect(throws: PiflashError.self) {
            try SOPSWriter.encrypt(Self.tree(), recipients: [recipient], rules: .init(encryptedRegex: "^data$"), format: "yaml")
        }
        #expect(throws: PiflashError.self) {
            try SOPSWriter.encrypt(
                .mapping([("wifi_psk_unencrypted", .secret([1]))]), recipients: [recipient], rules: .init(), format: "yaml")
        }
    }
}
