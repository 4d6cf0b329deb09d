import Foundation
import PiflashKit
import PiflashSecrets
import Testing

@Suite("Host files: rendering")
struct HostRenderingTests {
    private func host(_ files: String) throws -> HostFile {
        try HostFile.parse("[secrets]\ndir = \"secrets\"\n" + files, path: "/h/bastet.toml")
    }

    @Test("template values with $, spaces, quotes and backslashes arrive literally")
    func templateLiteral() throws {
        let host = try host(#"""
            [[files]]
            path = "/var/lib/networkmanager/system-connections.env"
            template = "WIFI_SSID=${wifi_ssid}\nWIFI_PSK=${wifi_psk}\nLITERAL=$${not_a_secret} $HOME $5\n"
            """#)
        let ssid = "My \"Home\" Net"
        let psk = #"pa$$ w\ord ${x} \n end\"#
        let secrets = SecretValues(["wifi_ssid": Array(ssid.utf8), "wifi_psk": Array(psk.utf8)])
        let files = try host.render(secrets: secrets)
        #expect(files.count == 1)
        let expected = "WIFI_SSID=\(ssid)\nWIFI_PSK=\(psk)\nLITERAL=${not_a_secret} $HOME $5\n"
        #expect(String(decoding: files[0].content, as: UTF8.self) == expected)
        #expect(files[0].mode == 0o600)
        #expect(files[0].uid == 0 && files[0].gid == 0)
    }

    @Test("a secret file gets the value's exact bytes; nested key paths work")
    func secretBytes() throws {
        let host = try host("""
            [[files]]
            path = "/var/lib/bootstrap/blob"
            secret = "nested.deep.blob"
            mode = "0400"
            uid = 7
            gid = 8
            """)
        let bytes: [UInt8] = [0, 0xff, 0x0a, 0x24, 0x7b, 0x80, 0x5c]
        let files = try host.render(secrets: SecretValues(["nested.deep.blob": bytes]))
        let key = try #require(DigestKey(secrets: SecretValues(["nested.deep.blob": bytes]), names: ["nested.deep.blob"]))
        #expect(files == [BootstrapFile(path: "/var/lib/bootstrap/blob", content: bytes, mode: 0o400, uid: 7, gid: 8, digestKey: key)])
        #expect(files[0].record.digest == .hmacSHA256(key.macHex(bytes)), "a secret file is recorded by its keyed digest")
    }

    @Test("a template naming a missing secret is a usage error naming it and the file")
    func missingTemplateSecret() throws {
        let host = try host("""
            [[files]]
            path = "/var/lib/networkmanager/system-connections.env"
            template = "WIFI_SSID=${wifi_ssid}\\nWIFI_PSK=${wifi_pskk}\\n"
            """)
        let secrets = SecretValues(["wifi_ssid": Array("a".utf8), "wifi_psk": Array("b".utf8)])
        let message = hostsUsageError { _ = try host.render(secrets: secrets) }?.description ?? ""
        #expect(message.contains("`wifi_pskk`"))
        #expect(message.contains("/var/lib/networkmanager/system-connections.env"))
        #expect(message.contains("did you mean `wifi_psk`"))
        // Key names may be listed; values never are.
        #expect(!message.contains("=a") && !message.contains("\"b\""))
    }

    @Test("a missing secret key is a usage error naming it")
    func missingSecret() throws {
        let host = try host("[[files]]\npath = \"/var/lib/k\"\nsecret = \"ssh_host_ed25519_key\"\n")
        let message = hostsUsageError { _ = try host.render(secrets: SecretValues([:])) }?.description ?? ""
        #expect(message.contains("`ssh_host_ed25519_key`"))
    }

    @Test("no pinned key when nothing derives one")
    func noPinnedKey() throws {
        let host = try host("[[files]]\npath = \"/var/lib/k\"\nsecret = \"a\"\n")
        #expect(try host.pinnedHostKey(secrets: SecretValues(["a": [1]])) == nil)
    }

    @Test("known_hosts names: host name, [check] address, and [name]:port off port 22")
    func knownHostsNames() throws {
        let plain = try HostFile.parse("[check]\naddress = \"bastet.local\"\n", path: "/h/bastet.toml")
        #expect(plain.knownHostsNames() == ["bastet", "bastet.local"])
        #expect(plain.knownHostsNames(address: "10.0.0.5") == ["bastet", "10.0.0.5"])
        let port = try HostFile.parse("[check]\naddress = \"b.lan\"\nssh_port = 2222\n", path: "/h/b.toml")
        #expect(port.knownHostsNames() == ["[b]:2222", "[b.lan]:2222"])
        let bare = try HostFile.parse("", path: "/h/c.toml")
        #expect(bare.knownHostsNames() == ["c"])
    }

    // MARK: Needing the secrets module (enabled once PiflashSecrets has its real bodies)

    @Test(
        "dir secrets: public_key_of matches ssh-keygen -y, the key file is the secret, known_hosts line",
        .enabled(if: hostsSecretsImplemented, "needs PiflashSecrets (SecretLoader.loadDirectory, OpenSSHPublicKey) merged"),
        .enabled(if: hostsToolExists("ssh-keygen"), "needs ssh-keygen")
    )
    func dirSecretsAndPublicKey() throws {
        let folder = try HostsTempFolder()
        let keyPath = folder.path + "/key"
        #expect(try hostsRunTool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", keyPath]).status == 0)
        let pem = try #require(FileManager.default.contents(atPath: keyPath))
        try folder.write("hosts/secrets/bastet/ssh_host_ed25519_key", Array(pem))
        try folder.write("hosts/secrets/bastet/wifi_psk", "pa$$ word\\x")
        let hostPath = try folder.write("hosts/bastet.toml", """
            [secrets]
            dir = "secrets/bastet"
            [[files]]
            path = "/var/lib/bootstrap/ssh_host_ed25519_key"
            secret = "ssh_host_ed25519_key"
            [[files]]
            path = "/var/lib/bootstrap/ssh_host_ed25519_key.pub"
            public_key_of = "ssh_host_ed25519_key"
            [[files]]
            path = "/var/lib/networkmanager/system-connections.env"
            template = "WIFI_PSK=${wifi_psk}\\n"
            [check]
            address = "bastet.local"
            """)
        let host = try HostFile.load(path: hostPath)
        let bootstrap = try host.bootstrap(identities: [])
        #expect(bootstrap.files[0].content == Array(pem))
        let publicLine = try hostsRunTool(["ssh-keygen", "-y", "-f", keyPath]).output
            .split(separator: " ").prefix(2).joined(separator: " ")
        #expect(String(decoding: bootstrap.files[1].content, as: UTF8.self) == publicLine + " bastet\n")
        #expect(bootstrap.files[1].mode == 0o644)
        #expect(bootstrap.files[2].content.starts(with: Array("WIFI_PSK=pa$$ word\\x".utf8)))
        #expect(bootstrap.knownHostsLine == "bastet,bastet.local " + publicLine)
        let fingerprint = try hostsRunTool(["ssh-keygen", "-lf", keyPath]).output.split(separator: " ")[1]
        #expect(bootstrap.hostKey?.fingerprint == String(fingerprint))
    }

    @Test(
        "the demo host decrypts with the demo identity to what the real age binary decrypts",
        .enabled(if: hostsSecretsImplemented, "needs PiflashSecrets (SecretLoader.loadAge, AgeIdentity) merged"),
        .enabled(if: hostsToolExists("age") && hostsToolExists("ssh-keygen"), "needs age and ssh-keygen")
    )
    func demoHostRenders() throws {
        let identityFile = hostsPackageRoot + "/hosts/demo-age-identity.txt"
        let host = try HostFile.load(path: hostsPackageRoot + "/hosts/example.toml")
        let identities = try AgeIdentity.load(explicitFile: identityFile, environment: [:])
        let bootstrap = try host.bootstrap(identities: identities)
        #expect(bootstrap.files.count == 3)

        // Independently: decrypt with age, extract the key with a YAML-free read of the block.
        let plain = try hostsRunTool(["age", "-d", "-i", identityFile, hostsPackageRoot + "/hosts/secrets/example.yaml.age"])
        #expect(plain.status == 0)
        let lines = plain.output.split(separator: "\n", omittingEmptySubsequences: false)
        let keyLines = lines.drop { !$0.contains("BEGIN OPENSSH PRIVATE KEY") }
            .prefix { !$0.hasPrefix("wifi_") && !$0.isEmpty }
            .map { $0.trimmingCharacters(in: .whitespaces) }
        let pem = keyLines.joined(separator: "\n") + "\n"
        #expect(bootstrap.files[0].content == Array(pem.utf8))
        let folder = try HostsTempFolder()
        let keyPath = try folder.write("key", pem)
        chmod(keyPath, 0o600)
        let publicLine = try hostsRunTool(["ssh-keygen", "-y", "-f", keyPath]).output
            .split(separator: " ").prefix(2).joined(separator: " ")
        #expect(String(decoding: bootstrap.files[1].content, as: UTF8.self) == publicLine + " example\n")
        #expect(bootstrap.knownHostsLine == "example,example.local " + publicLine)
        let env = String(decoding: bootstrap.files[2].content, as: UTF8.self)
        #expect(env == "WIFI_PSK=\"demo pa\\$\\$word 42\"\nWIFI_SSID=\"Demo Net 5G\"\n")
    }
}

@Suite("Host files: image build")
struct ImageBuildTests {
    @Test("the last non-empty stdout line is the path, resolved against the host folder; stderr is not captured")
    func lastLine() throws {
        let folder = try HostsTempFolder()
        let path = try ImageBuild.run(
            ["sh", "-c", "echo building >&2; echo first; echo result/sd-image; echo; echo '  '"], in: folder.path,
            reporter: SilentReporter())
        #expect(path == folder.path + "/result/sd-image")
        let absolute = try ImageBuild.run(["sh", "-c", "pwd; echo /nix/store/abc-image"], in: folder.path, reporter: SilentReporter())
        #expect(absolute == "/nix/store/abc-image")
    }

    @Test("it runs in the host file's folder")
    func workingDirectory() throws {
        let folder = try HostsTempFolder()
        let real = try hostsRunTool(["sh", "-c", "cd \(folder.path) && pwd -P"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let printed = try ImageBuild.run(["sh", "-c", "pwd -P"], in: folder.path, reporter: SilentReporter())
        #expect(printed == real)
    }

    @Test("a failing build is an operational failure with its exit status")
    func failure() {
        do {
            _ = try ImageBuild.run(["sh", "-c", "echo partial; exit 3"], in: "/", reporter: SilentReporter())
            Issue.record("a failing build must throw")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(error.message.contains("exit status 3"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a missing program and a silent build are reported")
    func missingAndSilent() {
        do {
            _ = try ImageBuild.run(["piflash-no-such-program-xyz"], in: "/", reporter: SilentReporter())
            Issue.record("must throw")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(error.message.contains("not found"))
        } catch {
            Issue.record("unexpected \(error)")
        }
        _ = hostsUsageError { _ = try ImageBuild.run(["true"], in: "/", reporter: SilentReporter()) }
    }

    @Test("imagePath runs the build when there is one, else gives [image] path")
    func imagePath() throws {
        let folder = try HostsTempFolder()
        let built = try folder.write("a.toml", "[image]\npath = \"fallback.img\"\nbuild = [\"echo\", \"out/built.img\"]\n")
        let host = try HostFile.load(path: built)
        #expect(try host.imagePath() == folder.path + "/out/built.img")
        #expect(try host.imagePath(runBuild: false) == folder.path + "/fallback.img")
    }
}
