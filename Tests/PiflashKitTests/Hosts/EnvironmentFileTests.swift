import Foundation
import PiflashKit
import PiflashSecrets
import Testing

/// Values that systemd's unquoted parsing, a naive quoting, or a keyfile would mangle.
let hardEnvironmentValues: [String] = [
    #" lead "q" back\slash "#,
    #"$HOME ${X} $(id) `id` #not a comment"#,
    #"'single' \\ \s \n \" end\"#,
    "   ",
    "",
    "=starts with equals",
    "\"starts with a quote",
    "'starts with an apostrophe",
    "#starts like a comment",
    ";starts like a comment",
    "trailing backslash\\",
    "tab\tinside",
    "ünïcode ☕ 𝄞",
    String((0x20...0x7e).map { Character(UnicodeScalar($0)) }),
]

@Suite("Environment files: systemd EnvironmentFile= quoting")
struct EnvironmentFileTests {
    @Test("variable names: a letter or _, then letters, digits and _")
    func names() {
        for good in ["WIFI_PSK", "_x", "a1", "A_B_9"] { #expect(EnvironmentFile.nameProblem(good) == nil, "\(good)") }
        for bad in ["", "1A", "A-B", "A B", "A=B", "Ä", "A.B", "$A"] {
            #expect(EnvironmentFile.nameProblem(bad)?.code == "env_name", "\(bad)")
        }
    }

    @Test("values refused: NUL, LF, CR, invalid UTF-8 — each with its rule")
    func refusedValues() {
        #expect(EnvironmentFile.valueProblem([0x61, 0x00, 0x62])?.code == "env_nul")
        #expect(EnvironmentFile.valueProblem(Array("a\nb".utf8))?.code == "env_line_break")
        #expect(EnvironmentFile.valueProblem(Array("a\rb".utf8))?.code == "env_line_break")
        #expect(EnvironmentFile.valueProblem([0x61, 0xff])?.code == "env_utf8")
        #expect(EnvironmentFile.valueProblem([0xc0, 0xaf])?.code == "env_utf8", "overlong encoding")
        for value in hardEnvironmentValues { #expect(EnvironmentFile.valueProblem(Array(value.utf8)) == nil, "\(value)") }
    }

    @Test("a line is NAME=\"…\" with a backslash before \" \\ ` $ and nothing else")
    func lineBytes() {
        let line = EnvironmentFile.line(name: "K", value: Array(#"a"b\c`d$e f#g'h"#.utf8))
        #expect(String(decoding: line, as: UTF8.self) == #"K="a\"b\\c\`d\$e f#g'h""# + "\n")
    }

    @Test(
        "systemd's own parser reads every rendered value back exactly",
        .enabled(if: FirstBootReaders.systemdAvailable, "needs root, mkfs.ext4 and systemd-dissect (systemd-container)")
    )
    func systemdReadsExactly() throws {
        var toml = "[secrets]\ndir = \"s\"\n[[files]]\npath = \"/var/lib/x.env\"\nenv = { "
        var secrets: [String: [UInt8]] = [:]
        for (index, value) in hardEnvironmentValues.enumerated() {
            toml += (index == 0 ? "" : ", ") + "V\(index) = \"s\(index)\""
            secrets["s\(index)"] = Array(value.utf8)
        }
        toml += " }\n"
        let host = try HostFile.parse(toml, path: "/h/envtest.toml")
        let file = try host.render(secrets: SecretValues(secrets))[0]
        let read = try FirstBootReaders.systemdEnvironment(of: file.content)
        #expect(read.count == hardEnvironmentValues.count)
        for (index, value) in hardEnvironmentValues.enumerated() {
            #expect(read["V\(index)"] == value, "V\(index): \(value.debugDescription) came back as \(read["V\(index)"].debugDescription)")
        }
    }

    @Test("the old way — a template — is what the issue reported: systemd mangles it (the reader is real)",
          .enabled(if: FirstBootReaders.systemdAvailable, "needs root, mkfs.ext4 and systemd-dissect (systemd-container)"))
    func templateIsMangled() throws {
        let read = try FirstBootReaders.systemdEnvironment(of: Array(#"WIFI_PSK= lead "q" back\slash "#.utf8) + [0x0a])
        #expect(read["WIFI_PSK"] == #"lead "q" backslash"#)
    }
}

@Suite("Host files: env entries")
struct HostFileEnvTests {
    private func parse(_ files: String) throws -> HostFile {
        try HostFile.parse("[secrets]\ndir = \"secrets\"\n" + files, path: "/h/bastet.toml")
    }

    @Test("env parses in variable-name order; default mode 0600; its secrets need [secrets]")
    func parses() throws {
        let host = try parse("[[files]]\npath = \"/var/lib/a.env\"\nenv = { WIFI_SSID = \"wifi.ssid\", A_FIRST = \"x\" }\n")
        #expect(host.files[0].source == .environment([.init(name: "A_FIRST", secret: "x"), .init(name: "WIFI_SSID", secret: "wifi.ssid")]))
        #expect(host.files[0].mode == 0o600)
        #expect(host.files[0].source.secretNames == ["x", "wifi.ssid"])
        let message = hostsUsageError {
            _ = try HostFile.parse("[[files]]\npath = \"/var/lib/a.env\"\nenv = { A = \"x\" }\n", path: "/h/b.toml")
        }?.description ?? ""
        #expect(message.contains("no [secrets] section"))
    }

    @Test("env mistakes are usage errors naming the entry", arguments: [
        ("env = \"WIFI_PSK=x\"", "must be a table"),
        ("env = {}", "is empty"),
        ("env = { 1BAD = \"x\" }", "env_name"),
        ("env = { \"A-B\" = \"x\" }", "env_name"),
        ("env = { A = 5 }", "must be a string"),
        ("env = { A = \"\" }", "names no secret"),
        ("env = { A = \"x\" }\ntemplate = \"y\"", "give exactly one"),
        ("enf = { A = \"x\" }", "did you mean `env`"),
    ])
    func mistakes(entry: String, expected: String) {
        let message = hostsUsageError { _ = try parse("[[files]]\npath = \"/var/lib/a.env\"\n\(entry)\n") }?.description ?? ""
        #expect(message.contains(expected), "\(message)")
        #expect(message.contains("[[files]] entry #1"), "\(message)")
    }

    @Test("a value an environment file cannot carry is exit 2 naming the entry, secret, variable and rule — never the value",
          arguments: [("line\nbreak", "env_line_break"), ("nul\u{0}byte", "env_nul")])
    func refusedValue(value: String, rule: String) throws {
        let host = try parse("[[files]]\npath = \"/var/lib/a.env\"\nenv = { TOKEN = \"token\" }\n")
        let message = hostsUsageError { _ = try host.render(secrets: SecretValues(["token": Array(value.utf8)])) }?.description ?? ""
        #expect(message.contains("/var/lib/a.env") && message.contains("`token`") && message.contains("TOKEN"))
        #expect(message.contains("[rule \(rule)]"))
        #expect(!message.contains(value))
    }

    @Test("invalid UTF-8 is refused with env_utf8")
    func refusedUTF8() throws {
        let host = try parse("[[files]]\npath = \"/var/lib/a.env\"\nenv = { TOKEN = \"token\" }\n")
        let message = hostsUsageError { _ = try host.render(secrets: SecretValues(["token": [0x70, 0xfe, 0x71]])) }?.description ?? ""
        #expect(message.contains("[rule env_utf8]"))
    }
}

@Suite("Host files: Wi-Fi values checked before any card")
struct WiFiValueCheckTests {
    private func host(_ files: String) throws -> HostFile {
        try HostFile.parse("[secrets]\ndir = \"secrets\"\n" + files, path: "/h/bastet.toml")
    }
    private let canonical = "[[files]]\npath = \"/var/lib/networkmanager/system-connections.env\"\nenv = { WIFI_SSID = \"net\", WIFI_PSK = \"pass\" }\n"

    @Test("valid passphrases and network names pass, the file is rendered")
    func valid() throws {
        let host = try host(canonical)
        for psk in ["12345678", String(repeating: "x", count: 63), String(repeating: "aF0", count: 21) + "e", #" lead "q" back\slash "#] {
            for ssid in ["a", String(repeating: "s", count: 32), "ünïcode ☕"] {
                let bootstrap = try host.bootstrap(secrets: SecretValues(["pass": Array(psk.utf8), "net": Array(ssid.utf8)]))
                #expect(bootstrap.files.count == 1)
            }
        }
    }

    @Test("bad values are exit 2 naming the secret, why it is Wi-Fi, and the rule", arguments: [
        ("1234567", "Demo", "psk_length", "`pass`"),
        (String(repeating: "x", count: 65), "Demo", "psk_length", "`pass`"),
        (String(repeating: "g", count: 64), "Demo", "psk_hex", "`pass`"),
        ("pässwörter", "Demo", "psk_character", "`pass`"),
        ("tab\there!", "Demo", "psk_character", "`pass`"),
        ("12345678", String(repeating: "s", count: 33), "ssid_length", "`net`"),
        ("12345678", "", "ssid_length", "`net`"),
    ])
    func invalid(psk: String, ssid: String, rule: String, secret: String) throws {
        let host = try host(canonical)
        let message = hostsUsageError {
            _ = try host.bootstrap(secrets: SecretValues(["pass": Array(psk.utf8), "net": Array(ssid.utf8)]))
        }?.description ?? ""
        #expect(message.contains("[rule \(rule)]"), "\(message)")
        #expect(message.contains(secret))
        #expect(message.contains("WIFI_"), "says why it is a Wi-Fi value")
        #expect(psk.count < 8 || !message.contains(psk), "never the passphrase")
    }

    @Test("the canonical secret names count too, also through a template; other names do not")
    func canonicalNames() throws {
        let templated = try host("[[files]]\npath = \"/var/lib/w.env\"\ntemplate = \"P=${wifi_psk}\"\n")
        let message = hostsUsageError { _ = try templated.bootstrap(secrets: SecretValues(["wifi_psk": Array("short".utf8)])) }?.description ?? ""
        #expect(message.contains("[rule psk_length]") && message.contains("`wifi_psk`"))
        let other = try host("[[files]]\npath = \"/var/lib/w.env\"\nenv = { TOKEN = \"short\" }\n")
        _ = try other.bootstrap(secrets: SecretValues(["short": Array("x".utf8)]))
        #expect(other.wifiSecrets.isEmpty)
    }
}
