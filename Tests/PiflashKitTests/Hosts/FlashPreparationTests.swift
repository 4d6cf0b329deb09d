import PiflashKit
import PiflashSecrets
import Testing

/// The one "which identities" decision and the host's digest key, on host files parsed for real.
@Suite("flash preparation: identities and the digest key")
struct FlashPreparationTests {
    func host(_ secrets: String, files: String) throws -> HostFile {
        try HostFile.parse("[image]\npath = \"x.img\"\n\(secrets)\n\(files)", path: "/h/demo.toml")
    }

    @Test("only SOPS and age secrets need age identities; a dir host never asks for one")
    func identities() throws {
        let files = "[[files]]\npath = \"/var/lib/a\"\nsecret = \"a\"\n"
        #expect(try host("[secrets]\nsops = \"s.yaml\"", files: files).needsAgeIdentities)
        #expect(try host("[secrets]\nage = \"s.yaml.age\"", files: files).needsAgeIdentities)
        #expect(try !host("[secrets]\ndir = \"s\"", files: files).needsAgeIdentities)
        #expect(try !host("", files: "").needsAgeIdentities)
        let folder = try HostsTempFolder()
        try folder.write("s/a", "value")
        let dirHost = try HostFile.parse("[image]\npath = \"x.img\"\n[secrets]\ndir = \"s\"\n\(files)", path: folder.path + "/demo.toml")
        var asked = 0
        let values = try HostSecrets.load(for: dirHost, identities: {
            asked += 1
            throw PiflashError.failure("no age identity found")
        })
        #expect(asked == 0, "a dir host never loads an age identity")
        #expect(values.value("a") == Array("value".utf8))
    }

    @Test("the digest key is made from the secrets the host's files use, and only those")
    func digestKey() throws {
        let files = """
            [[files]]
            path = "/var/lib/k"
            secret = "key"
            [[files]]
            path = "/var/lib/k.pub"
            public_key_of = "key"
            [[files]]
            path = "/var/lib/env"
            template = "SSID=${wifi.ssid}\\n"
            """
        let host = try host("[secrets]\ndir = \"s\"", files: files)
        #expect(host.usedSecretNames == ["key", "wifi.ssid"])
        let secrets = SecretValues(["key": [1, 2, 3], "wifi.ssid": Array("net".utf8), "unused": [9]])
        #expect(host.digestKey(secrets: secrets) == DigestKey(secrets: secrets, names: ["key", "wifi.ssid"]))
        let changedUnused = SecretValues(["key": [1, 2, 3], "wifi.ssid": Array("net".utf8), "unused": [8]])
        #expect(host.digestKey(secrets: changedUnused) == host.digestKey(secrets: secrets), "unused secrets do not matter")
        #expect(try self.host("", files: "").digestKey(secrets: secrets) == nil, "no secrets used: plain digests")
    }
}
