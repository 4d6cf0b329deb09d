import Foundation
import PiflashKit
import Testing

/// The host file of SPEC "Host files", verbatim.
private let specExample = #"""
    hostname = "bastet"                       # optional; defaults to the file's name

    [image]
    path = "../result/sd-image"
    build = ["nix", "build", "--no-link", "--print-out-paths",
             ".#nixosConfigurations.bastet.config.system.build.sdImage"]
    sha256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"

    [root]
    label = "NIXOS_SD"

    [secrets]
    sops = "secrets/bastet.yaml"

    [[files]]
    path = "/var/lib/bootstrap/ssh_host_ed25519_key"
    secret = "ssh_host_ed25519_key"
    mode = "0600"

    [[files]]
    path = "/var/lib/bootstrap/ssh_host_ed25519_key.pub"
    public_key_of = "ssh_host_ed25519_key"
    mode = "0644"

    [[files]]
    path = "/var/lib/networkmanager/system-connections.env"
    env = { WIFI_SSID = "wifi_ssid", WIFI_PSK = "wifi_psk" }   # KEY = secret name: KEY=value lines, quoted
    mode = "0600"                                              # so systemd's EnvironmentFile= yields the exact bytes
    # (template = "…${name}…" stays for raw text files: substituted verbatim, no escaping)

    [check]
    address = "bastet.local"
    ssh_port = 22
    [[check.tcp]]
    port = 22
    [[check.http]]
    url = "http://{address}:9199/ups_metrics"
    """#

/// A minimal valid host file with one extra piece of text spliced in.
private func hostFile(secrets: String = #"dir = "secrets/dev""#, files: String, extra: String = "") -> String {
    """
    \(extra)
    [image]
    path = "image.img"

    [secrets]
    \(secrets)

    \(files)
    """
}

@Suite("Host files: parsing and validation")
struct HostFileParsingTests {
    @Test("the SPEC example parses into exactly what it says, paths resolved against its folder")
    func specExampleParses() throws {
        let host = try HostFile.parse(specExample, path: "/srv/pis/hosts/bastet.toml")
        #expect(host.name == "bastet")
        #expect(host.catalogName == "bastet")
        #expect(host.image.path == "/srv/pis/result/sd-image")
        #expect(host.image.build?.first == "nix")
        #expect(host.image.build?.count == 5)
        #expect(host.image.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(host.root == .label("NIXOS_SD"))
        #expect(host.secrets == .sops("/srv/pis/hosts/secrets/bastet.yaml"))
        #expect(host.files.map(\.path) == [
            "/var/lib/bootstrap/ssh_host_ed25519_key", "/var/lib/bootstrap/ssh_host_ed25519_key.pub",
            "/var/lib/networkmanager/system-connections.env",
        ])
        #expect(host.files.map(\.mode) == [0o600, 0o644, 0o600])
        #expect(host.files.allSatisfy { $0.uid == 0 && $0.gid == 0 })
        #expect(host.files[0].source == .secret("ssh_host_ed25519_key"))
        #expect(host.files[1].source == .publicKeyOf("ssh_host_ed25519_key"))
        #expect(host.files[2].source == .environment([
            .init(name: "WIFI_PSK", secret: "wifi_psk"), .init(name: "WIFI_SSID", secret: "wifi_ssid"),
        ]))
        #expect(host.check == HostFile.CheckSection(
            address: "bastet.local", sshPort: 22, tcp: [22], http: ["http://{address}:9199/ups_metrics"]))
        #expect(host.warnings.isEmpty)
    }

    @Test("the shipped hosts/example.toml is valid and points at the demo image and secrets")
    func shippedExampleParses() throws {
        let host = try HostFile.load(path: hostsPackageRoot + "/hosts/example.toml")
        #expect(host.name == "example")
        #expect(host.image.path == hostsPackageRoot + "/demo/example-sd-image")
        #expect(host.secrets == .age(hostsPackageRoot + "/hosts/secrets/example.yaml.age"))
        #expect(FileManager.default.fileExists(atPath: hostsPackageRoot + "/hosts/secrets/example.yaml.age"))
        #expect(host.files.count == 3)
        #expect(host.check?.address == "example.local")
    }

    @Test("hostname defaults to the file name; partition selects the root by number; modes default by kind")
    func defaults() throws {
        let text = """
            [root]
            partition = 3
            [secrets]
            dir = "s"
            [[files]]
            path = "/var/lib/a"
            secret = "a"
            [[files]]
            path = "/var/lib/a.pub"
            public_key_of = "a"
            uid = 1000
            gid = 100
            """
        let host = try HostFile.parse(text, path: "/h/pi-07.toml")
        #expect(host.name == "pi-07")
        #expect(host.root == .number(3))
        #expect(host.image.path == nil)
        #expect(host.secrets == .dir("/h/s"))
        #expect(host.files[0].mode == 0o600)
        #expect(host.files[1].mode == 0o644)
        #expect(host.files[1].uid == 1000 && host.files[1].gid == 100)
        #expect(throws: PiflashError.self) { try host.imagePath(runBuild: false) }
    }

    @Test("an unknown key at the top level is a usage error naming it, the file, and the near miss")
    func unknownTopLevelKey() {
        let error = hostsUsageError {
            _ = try HostFile.parse("hostnme = \"x\"\n", path: "/h/typo.toml")
        }
        let message = error?.description ?? ""
        #expect(message.contains("/h/typo.toml"))
        #expect(message.contains("`hostnme`"))
        #expect(message.contains("top level"))
        #expect(message.contains("did you mean `hostname`"))
    }

    @Test("an unknown key in [[files]] names the key, the table and the entry")
    func unknownKeyInFiles() {
        let text = hostFile(files: """
            [[files]]
            path = "/var/lib/a"
            secret = "a"
            [[files]]
            path = "/var/lib/b"
            publik_key_of = "a"
            """)
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("`publik_key_of`"))
        #expect(message.contains("[[files]] entry #2"))
        #expect(message.contains("did you mean `public_key_of`"))
    }

    @Test("unknown keys in nested tables are refused too", arguments: [
        ("[image]\npaht = \"x\"\n", "`paht`", "[image]"),
        ("[root]\nlabels = \"x\"\n", "`labels`", "[root]"),
        ("[secrets]\ndir = \"s\"\nsop = \"x\"\n", "`sop`", "[secrets]"),
        ("[check]\nadress = \"x\"\n", "`adress`", "[check]"),
        ("[check]\n[[check.tcp]]\nprot = 22\n", "`prot`", "[[check.tcp]]"),
        ("[check]\n[[check.http]]\nurl = \"http://x\"\nmethod = \"GET\"\n", "`method`", "[[check.http]]"),
    ])
    func unknownNestedKeys(text: String, key: String, table: String) {
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains(key))
        #expect(message.contains(table))
    }

    @Test("malformed TOML is a usage error with TOMLKit's line and column")
    func malformedTOML() {
        let text = "hostname = \"ok\"\n[image]\npath = \"unterminated\n"
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/broken.toml") }?.description ?? ""
        #expect(message.contains("malformed TOML"))
        #expect(message.contains("/h/broken.toml:3:"))
    }

    @Test("a relative file path is refused")
    func relativePath() {
        let text = hostFile(files: "[[files]]\npath = \"var/lib/a\"\nsecret = \"a\"\n")
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("var/lib/a"))
        #expect(message.contains("relative"))
    }

    @Test("a path with .. is refused", arguments: ["/var/lib/../etc/shadow", "/var/..", "/../x"])
    func dotDot(path: String) {
        let text = hostFile(files: "[[files]]\npath = \"\(path)\"\nsecret = \"a\"\n")
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("`..`"))
    }

    @Test("paths under /nix/store are refused", arguments: ["/nix/store/abc-foo/bin/x", "/nix/store"])
    func nixStore(path: String) {
        let text = hostFile(files: "[[files]]\npath = \"\(path)\"\nsecret = \"a\"\n")
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("/nix/store"))
    }

    @Test("non-canonical and directory paths are refused", arguments: ["/var//lib/a", "/var/./a", "/var/lib/", "/"])
    func nonCanonical(path: String) {
        let text = hostFile(files: "[[files]]\npath = \"\(path)\"\nsecret = \"a\"\n")
        _ = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }
    }

    @Test("a path under /etc is accepted with a loud warning")
    func etcWarning() throws {
        let text = hostFile(files: "[[files]]\npath = \"/etc/ssh/ssh_host_ed25519_key\"\nsecret = \"a\"\n")
        let host = try HostFile.parse(text, path: "/h/x.toml")
        #expect(host.files.count == 1)
        #expect(host.warnings.count == 1)
        #expect(host.warnings.first?.contains("/etc") == true)
        #expect(host.warnings.first?.contains("/var/lib") == true)
    }

    @Test("a secret file readable by others is accepted with a warning; a public key is not warned about")
    func permissiveSecretWarning() throws {
        let text = hostFile(files: """
            [[files]]
            path = "/var/lib/a"
            secret = "a"
            mode = "0644"
            [[files]]
            path = "/var/lib/a.pub"
            public_key_of = "a"
            mode = "0644"
            """)
        let host = try HostFile.parse(text, path: "/h/x.toml")
        #expect(host.warnings.count == 1)
        #expect(host.warnings.first?.contains("/var/lib/a holds a secret but mode 0644") == true)
    }

    @Test("two secret sources are refused, naming both")
    func twoSecretSources() {
        let text = hostFile(secrets: "sops = \"a.yaml\"\nage = \"a.yaml.age\"", files: "")
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("[secrets]"))
        #expect(message.contains("`sops`") && message.contains("`age`"))
        #expect(message.contains("exactly one"))
    }

    @Test("an empty [secrets] is refused")
    func noSecretSource() {
        let message = hostsUsageError { _ = try HostFile.parse("[secrets]\n", path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("[secrets] needs one of"))
    }

    @Test("a file needs exactly one source")
    func fileSources() {
        let both = hostFile(files: "[[files]]\npath = \"/var/lib/a\"\nsecret = \"a\"\ntemplate = \"x\"\n")
        let message = hostsUsageError { _ = try HostFile.parse(both, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("`secret` and `template`"))
        let none = hostFile(files: "[[files]]\npath = \"/var/lib/a\"\nmode = \"0600\"\n")
        let other = hostsUsageError { _ = try HostFile.parse(none, path: "/h/x.toml") }?.description ?? ""
        #expect(other.contains("needs one of `secret`, `public_key_of`, `template` or `env`"))
    }

    @Test("bad modes are refused", arguments: ["\"0800\"", "\"17777\"", "\"rw-------\"", "\"\"", "600", "0o600"])
    func badMode(mode: String) {
        let text = hostFile(files: "[[files]]\npath = \"/var/lib/a\"\nsecret = \"a\"\nmode = \(mode)\n")
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("mode"))
    }

    @Test("good modes parse as octal", arguments: [("\"0600\"", 0o600), ("\"644\"", 0o644), ("\"4755\"", 0o4755), ("\"0\"", 0)])
    func goodMode(mode: String, expected: Int) throws {
        let text = hostFile(files: "[[files]]\npath = \"/var/lib/a\"\nsecret = \"a\"\nmode = \(mode)\n")
        let host = try HostFile.parse(text, path: "/h/x.toml")
        #expect(Int(host.files[0].mode) == expected)
    }

    @Test("a template with an unterminated ${ is refused at parse time")
    func badTemplate() {
        let text = hostFile(files: "[[files]]\npath = \"/var/lib/a\"\ntemplate = \"A=${wifi\"\n")
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("template"))
        #expect(message.contains("closing"))
    }

    @Test("a file that needs secrets without a [secrets] section is refused")
    func secretsMissing() {
        let text = "[[files]]\npath = \"/var/lib/a\"\ntemplate = \"A=${a}\"\n"
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("no [secrets] section"))
        #expect(message.contains("`a`"))
    }

    @Test("the same path twice is refused")
    func duplicatePath() {
        let text = hostFile(files: "[[files]]\npath = \"/var/lib/a\"\nsecret = \"a\"\n[[files]]\npath = \"/var/lib/a\"\nsecret = \"b\"\n")
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains("entry #1 already"))
    }

    @Test("wrong value types name the key and the type", arguments: [
        ("hostname = 3\n", "`hostname`"),
        ("[image]\nbuild = \"nix build\"\n", "`build`"),
        ("[image]\nsha256 = \"abc\"\n", "`sha256`"),
        ("[root]\npartition = 0\n", "`partition`"),
        ("[root]\nlabel = \"A\"\npartition = 2\n", "both"),
        ("[check]\nssh_port = 70000\n", "`ssh_port`"),
        ("[check]\n[[check.http]]\nurl = \"ftp://x\"\n", "http://"),
        ("hostname = \"has space\"\n", "host name"),
        ("image = \"x\"\n", "`image`"),
    ])
    func wrongTypes(text: String, fragment: String) {
        let message = hostsUsageError { _ = try HostFile.parse(text, path: "/h/x.toml") }?.description ?? ""
        #expect(message.contains(fragment))
    }
}

@Suite("Host files: the hosts folder")
struct HostCatalogTests {
    @Test("--hosts, then $PIFLASH_HOSTS, then ./hosts; unknown hosts list the known ones")
    func lookupOrder() throws {
        let folder = try HostsTempFolder()
        try folder.write("a/one.toml", "")
        try folder.write("a/two.toml", "hostname = \"deux\"\n")
        try folder.write("a/.hidden.toml", "")
        try folder.write("a/notes.txt", "")
        try folder.write("b/three.toml", "")
        try folder.write("cwd/hosts/four.toml", "")

        let explicit = try HostCatalog(directory: folder.path + "/a", environment: ["PIFLASH_HOSTS": folder.path + "/b"])
        #expect(try explicit.names() == ["one", "two"])
        #expect(explicit.origin == "--hosts")
        let two = try explicit.load("two")
        #expect(two.name == "deux")
        #expect(two.catalogName == "two")

        let fromEnvironment = try HostCatalog(directory: nil, environment: ["PIFLASH_HOSTS": folder.path + "/b"])
        #expect(try fromEnvironment.names() == ["three"])

        let local = try HostCatalog(directory: nil, environment: [:], currentDirectory: folder.path + "/cwd")
        #expect(local.directory == folder.path + "/cwd/hosts")
        #expect(try local.names() == ["four"])

        let relative = try HostCatalog(directory: "a", environment: [:], currentDirectory: folder.path)
        #expect(relative.directory == folder.path + "/a")

        let message = hostsUsageError { _ = try explicit.load("onr") }?.description ?? ""
        #expect(message.contains("unknown host `onr`"))
        #expect(message.contains("one, two"))
        #expect(message.contains("did you mean `one`"))

        _ = hostsUsageError { _ = try HostCatalog(directory: folder.path + "/missing", environment: [:]) }
        // A path to a host file works as a host name.
        #expect(try explicit.load(folder.path + "/b/three.toml").name == "three")
    }
}
