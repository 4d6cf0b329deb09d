import Foundation
import Testing

/// Whether a real systemd can be booted here as PID 1 of a container (systemd-nspawn, the
/// machine's own /usr, a volatile root) — the closest to "the Pi boots" this machine offers
/// (there is no qemu and no kernel image to boot).
private var canBootSystemd: Bool {
    getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-nspawn")
        && FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd")
        && (try? Shell.run(["sh", "-c", "command -v age && command -v mkfs.ext4"]))?.status == 0
}

/// Values no naive `KEY=value` line carries through systemd.
private let hardValues: [String] = [
    #" lead "q" back\slash "#, #"$HOME ${X} `id` #no comment"#, "   ", #"'x' \s \\ \n"#, "ünïcode ☕", "trail\\",
]

/// A YAML double-quoted scalar (backslash and quote escaped; tabs as \t).
private func yamlQuoted(_ value: String) -> String {
    "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        .replacingOccurrences(of: "\t", with: "\\t") + "\""
}

@Suite(
    "first boot: a booted systemd reads the env files piflash injected",
    .serialized,
    .enabled(if: canBootSystemd, "needs root, systemd-nspawn (systemd-container), age and mkfs.ext4")
)
struct FirstBootTests {
    @Test("flash --output with env tables; systemd as PID 1 runs a unit with EnvironmentFile= on the card's files and sees exactly the values")
    func bootedUnitSeesExactValues() throws {
        let psk = #" lead "q" back\slash $HOME #x "#
        let ssid = #"My "Home" Net \"#
        var extra = "hard:\n"
        for (index, value) in hardValues.enumerated() { extra += "  v\(index): \(yamlQuoted(value))\n" }
        let variables = hardValues.indices.map { "V\($0) = \"hard.v\($0)\"" }.joined(separator: ", ")
        let host = try HostFixture(
            extraFiles: "[[files]]\npath = \"/var/lib/piflash-test/hard.env\"\nenv = { \(variables) }\n",
            psk: psk, ssid: ssid, envTable: true, extraSecrets: extra)
        let output = host.scratch.file("card.img")
        let run = try runPiflash(host.flashArguments(["--output", output]))
        #expect(run.status == 0, "stderr: \(run.stderr)")

        // The card's root partition, mounted read-only by the kernel: what the Pi's systemd reads.
        let root = try rootPartition(of: output)
        let mount = try KernelMount(image: output, offset: root.offset, size: root.size, scratch: host.scratch)
        #expect(try mount.stat("/var/lib/networkmanager/system-connections.env") == "600 0 0")

        let units = host.scratch.file("units")
        let out = host.scratch.file("out")
        try Shell.sh("mkdir -p '\(units)' '\(out)'")
        // `env -0` prints every variable NUL-terminated: exact bytes, whatever they hold.
        try """
            [Unit]
            Description=piflash first-boot test: a service reading the injected environment files
            [Service]
            Type=oneshot
            EnvironmentFile=/var/lib/networkmanager/system-connections.env
            EnvironmentFile=/var/lib/piflash-test/hard.env
            ExecStart=/usr/bin/env -0
            StandardOutput=file:/out/environment
            ExecStartPost=/bin/systemctl --no-block poweroff

            """.write(toFile: units + "/piflash-firstboot.service", atomically: true, encoding: .utf8)
        let machine = "piflash-firstboot-\(getpid())"
        let boot = try Shell.run([
            "timeout", "180", "systemd-nspawn", "--quiet", "--directory=/", "--volatile=yes", "--register=no",
            "--keep-unit", "--machine=\(machine)",
            "--bind=\(out):/out",
            "--bind-ro=\(units)/piflash-firstboot.service:/etc/systemd/system/piflash-firstboot.service",
            "--bind-ro=\(mount.mountPoint)/var/lib/networkmanager:/var/lib/networkmanager",
            "--bind-ro=\(mount.mountPoint)/var/lib/piflash-test:/var/lib/piflash-test",
            "--boot", "systemd.unit=piflash-firstboot.service", "systemd.firstboot=off",
        ], input: "")
        #expect(boot.status == 0, "the container booted and powered off: \(boot.stdout.suffix(2000))")

        let data = try Data(contentsOf: URL(fileURLWithPath: out + "/environment"))
        var environment: [String: [UInt8]] = [:]
        for entry in data.split(separator: 0, omittingEmptySubsequences: true) {
            guard let equals = entry.firstIndex(of: UInt8(ascii: "=")) else { continue }
            environment[String(decoding: entry[entry.startIndex..<equals], as: UTF8.self)] = Array(entry[(equals + 1)...])
        }
        #expect(environment["WIFI_PSK"] == Array(psk.utf8), "WIFI_PSK: \(environment["WIFI_PSK"].map { String(decoding: $0, as: UTF8.self) }.debugDescription)")
        #expect(environment["WIFI_SSID"] == Array(ssid.utf8))
        for (index, value) in hardValues.enumerated() {
            #expect(environment["V\(index)"] == Array(value.utf8), "V\(index) \(value.debugDescription)")
        }
    }

    @Test("hosts --check decrypts and names the Wi-Fi rule a secret breaks (the same check flash runs)")
    func hostsCheckNamesTheRule() throws {
        let bad = try HostFixture(psk: String(repeating: "g", count: 64), envTable: true)
        let run = try Shell.run([Shell.piflash, "hosts", "--check", "--hosts", bad.hostsDirectory, "--age-identity", bad.identityFile])
        #expect(run.status == 2)
        #expect(run.stdout.contains("psk_hex") && run.stdout.contains("WIFI_PSK"), "\(run.stdout)\(run.stderr)")
        let good = try HostFixture(envTable: true)
        let ok = try Shell.run([Shell.piflash, "hosts", "--check", "--hosts", good.hostsDirectory, "--age-identity", good.identityFile])
        #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
        #expect(ok.stdout.contains("rendered"))
    }

    @Test("an impossible Wi-Fi value is refused before any card: exit 2 naming the rule, nothing written")
    func impossibleValueRefused() throws {
        let host = try HostFixture(psk: "short", envTable: true)
        let output = host.scratch.file("card.img")
        let run = try runPiflash(host.flashArguments(["--output", output]))
        #expect(run.status == 2)
        let error = run.result?["error"] as? String ?? run.stderr
        #expect(error.contains("psk_length") && error.contains("WIFI_PSK"), "\(error)")
        #expect(!FileManager.default.fileExists(atPath: output), "no image was written")
    }
}
