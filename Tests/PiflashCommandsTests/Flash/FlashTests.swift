import Foundation
import Testing

/// `piflash flash HOST` end to end, checked with tools piflash did not write: e2fsck, a read-only
/// kernel mount, ssh-keygen, sfdisk, debugfs.
@Suite("flash a host", .serialized, .enabled(if: CandidateTagging.ready, "needs root (loop devices, mounts) and systemd-udevd"), .candidateTagging)
struct FlashTests {
    /// Checks a provisioned card or image with independent tools.
    func checkProvisioned(_ target: String, host: HostFixture, result: [String: Any]) throws {
        let root = try rootPartition(of: target)
        let fsck = try Shell.run(["e2fsck", "-fn", "\(target)?offset=\(root.offset)"])
        #expect(fsck.status == 0, "e2fsck: \(fsck.stdout)\(fsck.stderr)")
        let mount = try KernelMount(image: target, offset: root.offset, size: root.size, scratch: host.scratch)
        let key = try String(contentsOfFile: host.hostKeyFile, encoding: .utf8)
        #expect(try mount.contents("/var/lib/bootstrap/ssh_host_ed25519_key") == Data(key.utf8))
        #expect(try mount.stat("/var/lib/bootstrap/ssh_host_ed25519_key") == "600 0 0")
        #expect(try mount.stat("/var/lib/bootstrap") == "700 0 0")
        let pub = String(decoding: try mount.contents("/var/lib/bootstrap/ssh_host_ed25519_key.pub"), as: UTF8.self)
        #expect(pub.hasPrefix(try host.expectedPublicKey))
        #expect(try mount.stat("/var/lib/bootstrap/ssh_host_ed25519_key.pub") == "644 0 0")
        let env = String(decoding: try mount.contents("/var/lib/networkmanager/system-connections.env"), as: UTF8.self)
        #expect(env == "WIFI_SSID=Pi Net\nWIFI_PSK=\(host.psk)\n", "the PSK arrives literally")
        #expect(try mount.stat("/var/lib/networkmanager/system-connections.env") == "600 0 0")
        // Nothing else changed: /nix-path-registration is the image's.
        let sourceRoot = try rootPartition(of: host.rawImage)
        #expect(try host.nixPathRegistrationDigest(in: target, offset: root.offset)
                == host.nixPathRegistrationDigest(in: host.rawImage, offset: sourceRoot.offset))
        // The JSON result describes the files without their contents.
        let files = try #require(result["files"] as? [[String: Any]])
        #expect(files.count == 3)
        let keyFile = try #require(files.first { $0["path"] as? String == "/var/lib/bootstrap/ssh_host_ed25519_key" })
        // A secret file is described by a keyed digest, never by its plain SHA-256 (DigestPrivacyTests
        // recomputes the keyed digests from the secrets).
        #expect(keyFile["sha256"] == nil)
        let keyed = try #require(keyFile["hmac_sha256"] as? String)
        let plainKeyDigest = try ImageFixture.sha256(host.hostKeyFile)
        #expect(keyed.count == 64 && keyed != plainKeyDigest)
        #expect(keyFile["mode"] as? String == "0600")
        #expect(keyFile["uid"] as? Int == 0 && keyFile["gid"] as? Int == 0)
        let fingerprint = try Shell.sh("ssh-keygen -lf '\(host.hostKeyFile).pub'").split(separator: " ")[1]
        #expect(result["host_key_fingerprint"] as? String == String(fingerprint))
        let knownHosts = try #require(result["known_hosts"] as? String)
        #expect(knownHosts.hasSuffix(try host.expectedPublicKey))
        #expect(knownHosts.hasPrefix("\(host.name),\(host.name).local "))
        #expect(result["image_sha256"] as? String == (try ImageFixture.sha256(host.rawImage)))
    }

    @Test("flash --device provisions a card that e2fsck and the kernel agree with")
    func flashesACard() throws {
        let host = try HostFixture()
        let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        let run = try runPiflash(host.flashArguments(["--device", card.path, "--yes", "--no-eject"]))
        #expect(run.status == 0, "stderr: \(run.stderr)")
        let result = try #require(run.result)
        #expect(result["ok"] as? Bool == true)
        try checkProvisioned(card.path, host: host, result: result)
        // The journal has the attempt, with digests only.
        let history = try Shell.run([Shell.piflash, "history", host.name, "--json", "--journal", host.scratch.file("journal.sqlite")])
        #expect(history.status == 0)
        #expect(history.stdout.contains("\"ok\":true") && history.stdout.contains(card.path))
        #expect(!history.stdout.contains("PRIVATE KEY") && !history.stdout.contains(host.psk))
        let journalBytes = try Data(contentsOf: URL(fileURLWithPath: host.scratch.file("journal.sqlite")))
        #expect(journalBytes.range(of: Data("OPENSSH PRIVATE KEY".utf8)) == nil, "no secret in the journal")
    }

    @Test("flash --output provisions an image file; the human output ends with the known_hosts line")
    func flashesToAnImageFile() throws {
        let host = try HostFixture(compression: "xz")
        let output = host.scratch.file("out")
        try Shell.sh("mkdir -p '\(output)'")
        let run = try runPiflash(host.flashArguments(["--output", output]))
        #expect(run.status == 0, "stderr: \(run.stderr)")
        let result = try #require(run.result)
        #expect(result["output"] as? String == output + "/\(host.name).img")
        try checkProvisioned(output + "/\(host.name).img", host: host, result: result)
        let human = try Shell.run([Shell.piflash] + host.flashArguments(["--output", output + "/again.img"]).filter { $0 != "--json" })
        #expect(human.status == 0)
        #expect(human.stdout.trimmingCharacters(in: .whitespacesAndNewlines).hasSuffix(try host.expectedPublicKey))
    }

    @Test("a second card for the same host gets the same host key (the dead-card case)")
    func reflashKeepsTheIdentity() throws {
        let host = try HostFixture()
        let first = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        let second = try CandidateCard(scratch: host.scratch, size: 128 << 20)
        let a = try runPiflash(host.flashArguments(["--device", first.path, "--yes", "--no-eject"]))
        let b = try runPiflash(host.flashArguments(["--device", second.path, "--yes", "--no-eject"]))
        #expect(a.status == 0 && b.status == 0)
        #expect(a.result?["host_key_fingerprint"] as? String == b.result?["host_key_fingerprint"] as? String)
        let keys = try [first.path, second.path].map { device -> Data in
            let root = try rootPartition(of: device)
            let mount = try KernelMount(image: device, offset: root.offset, size: root.size, scratch: host.scratch)
            return try mount.contents("/var/lib/bootstrap/ssh_host_ed25519_key")
        }
        #expect(keys[0] == keys[1])
    }

    @Test("bad host files and secrets fail before any card is touched", arguments: [
        ("unknown host", 2), ("malformed TOML", 2), ("unknown key", 2), ("missing secret", 2),
        ("relative path", 2), ("dot-dot path", 2), ("nix store path", 2), ("template names a missing secret", 2),
        ("wrong identity", 1), ("tampered ciphertext", 1),
    ])
    func badInputTouchesNoCard(case name: String, status: Int32) throws {
        let host = try HostFixture()
        let file = "\(host.hostsDirectory)/\(host.name).toml"
        var toml = try String(contentsOfFile: file, encoding: .utf8)
        var arguments = host.flashArguments([])
        switch name {
        case "unknown host": arguments[1] = "nosuchhost"
        case "malformed TOML": toml += "\n[image\n"
        case "unknown key": toml = toml.replacingOccurrences(of: "mode = \"0644\"", with: "mode = \"0644\"\nowner = \"root\"")
        case "missing secret": toml = toml.replacingOccurrences(of: "secret = \"ssh_host_ed25519_key\"", with: "secret = \"no_such_key\"")
        case "relative path": toml = toml.replacingOccurrences(of: "\"/var/lib/networkmanager/", with: "\"var/lib/networkmanager/")
        case "dot-dot path": toml = toml.replacingOccurrences(of: "\"/var/lib/networkmanager/", with: "\"/var/lib/../networkmanager/")
        case "nix store path": toml = toml.replacingOccurrences(of: "\"/var/lib/networkmanager/", with: "\"/nix/store/abc-x/")
        case "template names a missing secret": toml = toml.replacingOccurrences(of: "${wifi.psk}", with: "${wifi.password}")
        case "wrong identity":
            try Shell.sh("age-keygen -o '\(host.scratch.file("other.txt"))' 2>/dev/null")
            arguments[5] = host.scratch.file("other.txt")
        case "tampered ciphertext":
            let secrets = "\(host.hostsDirectory)/secrets/\(host.name).yaml.age"
            let size = try FileManager.default.attributesOfItem(atPath: secrets)[.size] as! Int
            try Shell.sh("printf '\\x00' | dd of='\(secrets)' bs=1 seek=\(size - 20) conv=notrunc status=none")
        default: Issue.record("unknown case \(name)")
        }
        try toml.write(toFile: file, atomically: true, encoding: .utf8)
        let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        try Shell.sh("head -c 4194304 /dev/urandom > '\(host.scratch.file("before"))' && dd if='\(host.scratch.file("before"))' of=\(card.path) bs=1M conv=fsync status=none")
        let run = try runPiflash(arguments + ["--device", card.path, "--yes", "--no-eject"])
        #expect(run.status == status, "\(name): \(run.result?["error"] ?? run.stderr)")
        let error = run.result?["error"] as? String ?? ""
        #expect(!error.isEmpty)
        #expect(!error.contains(host.psk) && !error.contains("PRIVATE KEY"), "no secret in the message")
        #expect(try Shell.run(["cmp", "-n", "4194304", host.scratch.file("before"), card.path]).status == 0, "the card is untouched")
    }

    @Test("problems found on the card fail with the reason and leave a filesystem e2fsck accepts", arguments: [
        "no root partition with that label", "root is not ext4", "root too full",
    ])
    func cardSideFailures(case name: String) throws {
        let host: HostFixture
        switch name {
        case "no root partition with that label": host = try HostFixture(root: "[root]\nlabel = \"NOPE_SD\"\n")
        case "root is not ext4": host = try HostFixture(root: "[root]\npartition = 1\n")
        default:
            host = try HostFixture(extraMiB: 0, extraFiles: """
                [[files]]
                path = "/var/lib/big"
                template = "\(String(repeating: "${big}", count: 400_000))"
                mode = "0600"
                """)
        }
        let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        let run = try runPiflash(host.flashArguments(["--device", card.path, "--yes", "--no-eject"]))
        #expect(run.status != 0)
        let result = try #require(run.result)
        #expect(result["ok"] as? Bool == false)
        let error = (result["error"] as? String ?? "").lowercased()
        switch name {
        case "no root partition with that label": #expect(error.contains("nope_sd"))
        case "root is not ext4": #expect(error.contains("vfat") || error.contains("not ext4"))
        default: #expect(error.contains("full") || error.contains("space"))
        }
        let root = try rootPartition(of: host.rawImage)
        let fsck = try Shell.run(["e2fsck", "-fn", "\(card.path)?offset=\(root.offset)"])
        #expect(fsck.status == 0, "e2fsck: \(fsck.stdout)")
        #expect(try headIsZeroed(card.path), "an unprovisioned card does not look valid")
    }
}
