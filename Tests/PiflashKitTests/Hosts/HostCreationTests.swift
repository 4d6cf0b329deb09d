import Foundation
import PiflashPlatform
import PiflashSecrets
import Testing

@testable import PiflashKit

/// `hosts new`'s plan and its all-or-nothing writing, on real files.
@Suite("host creation: decided first, written whole or not at all")
struct HostCreationTests {
    static func folder() throws -> String {
        let path = NSTemporaryDirectory() + "piflash-hostcreation-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static let recipient = Curve25519Recipient.make()

    enum Curve25519Recipient {
        static func make() -> String {
            // Any valid X25519 public key: the public half of a fresh ed25519 key, converted.
            (try? OpenSSHPrivateKey.generate(comment: "t").publicKey.ageRecipient().description) ?? ""
        }
    }

    func request(_ folder: String, name: String = "pi", wifi: Bool = true) -> HostCreation.Request {
        HostCreation.Request(
            name: name, hostsFolder: folder, ageRecipients: [Self.recipient], format: "yaml", imagePath: nil,
            addRecipient: false, wifi: wifi)
    }

    @Test("a host file appearing between plan and write: the SOPS file and the new secrets folder are removed again")
    func rollsBack() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let plan = try HostCreation.plan(request(folder))
        #expect(plan.createsSecretsFolder)
        try "someone else's".write(toFile: folder + "/pi.toml", atomically: true, encoding: .utf8)
        #expect(throws: PiflashError.self) {
            try HostCreation.create(plan, ssid: Array("net".utf8), psk: LockedBytes(copying: Array("password1".utf8)))
        }
        #expect(try String(contentsOfFile: folder + "/pi.toml", encoding: .utf8) == "someone else's")
        #expect(!FileManager.default.fileExists(atPath: folder + "/secrets"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder) == ["pi.toml"], "no temporary file left")
    }

    @Test("names that are not RFC 1123 labels are refused")
    func names() {
        for bad in ["", "-pi", "pi-", "pi.local", "../x", "pi_1", String(repeating: "a", count: 64), "pï"] {
            #expect(HostCreation.nameProblem(bad) != nil, "\(bad)")
        }
        for good in ["pi", "Pi-01", "a", String(repeating: "a", count: 63)] {
            #expect(HostCreation.nameProblem(good) == nil, "\(good)")
        }
    }

    @Test("the canonical host file parses, with the Wi-Fi file only when asked, and its image path relative")
    func canonicalHostFile() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let withWiFi = try HostFile.parse(
            CanonicalHostFile.toml(name: "pi", secretsPath: "secrets/pi.yaml", imagePath: "../result/sd-image", wifi: true),
            path: folder + "/pi.toml")
        #expect(withWiFi.files.map(\.path) == [CanonicalLayout.hostKeyPath, CanonicalLayout.hostPublicKeyPath, CanonicalLayout.wifiEnvironmentPath])
        #expect(withWiFi.secrets == .sops(folder + "/secrets/pi.yaml"))
        // The Wi-Fi file is the typed env table, so systemd's EnvironmentFile= yields the exact values.
        guard case .environment(let variables) = withWiFi.files[2].source else {
            Issue.record("the Wi-Fi file is not an env table: \(withWiFi.files[2].source)")
            return
        }
        #expect(variables.map(\.name) == [CanonicalLayout.wifiPSKVariable, CanonicalLayout.wifiSSIDVariable])
        #expect(variables.map(\.secret) == [CanonicalLayout.wifiPSKSecret, CanonicalLayout.wifiSSIDSecret])
        #expect(withWiFi.image.path == URL(fileURLWithPath: folder + "/../result/sd-image").standardizedFileURL.path
                || withWiFi.image.path == folder + "/../result/sd-image")
        let without = try HostFile.parse(
            CanonicalHostFile.toml(name: "pi", secretsPath: "secrets/pi.yaml", imagePath: nil, wifi: false), path: folder + "/pi.toml")
        #expect(without.files.count == 2)
        #expect(without.image.path == nil)
        #expect(HostCreation.relativePath(from: "/a/b/hosts", to: "/a/b/result/x.img") == "../result/x.img")
        #expect(HostCreation.relativePath(from: "/a/b/hosts", to: "/a/b/hosts/x.img") == "x.img")
    }
}
