import Foundation
import PiflashKit
import PiflashSecrets
import Testing

/// Passphrases and network names that break naive layers (systemd's unquoted values, GLib's
/// keyfile escapes and leading-space stripping, wpa_supplicant's `#` comments and trailing-space
/// trimming).
let hardPSKs: [String] = [
    #" lead "q" back\slash "#,
    #"$HOME ${X} #not-a-comment"#,
    #"\s\\\n\t;semi;colon=eq"#,
    "`id` $(id) 'x'   ",
    String((0x20...0x5e).map { Character(UnicodeScalar($0)) }),
    String((0x40...0x7e).map { Character(UnicodeScalar($0)) }),
    "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789",
]
let hardSSIDs: [String] = [#"My "Home" Net"#, " lead space", "ünïcode ☕", #"back\slash;semi"#, "$X #y"]

private let nixSkip = "needs nix-instantiate (Debian nix-bin) and ../shared/nixpkgs-lib"

@Suite(
    "NixOS module: evaluated with lib.evalModules",
    .enabled(if: FirstBootReaders.nixAvailable && FirstBootReaders.nixpkgsLibAvailable, Comment(rawValue: nixSkip))
)
struct NixOSModuleTests {
    private func units(_ result: [String: Any]) -> [String: [String: [String]]] {
        result["units"] as? [String: [String: [String]]] ?? [:]
    }

    @Test("networkmanager backend: pinned hostKeys, no key generation, check unit first, profile from the re-encoded env")
    func networkManager() throws {
        let result = try FirstBootReaders.evaluateModule(["backend": "networkmanager"])
        #expect((result["failedAssertions"] as? [String]) == [])
        let hostKeys = result["hostKeys"] as? [[String: String]]
        #expect(hostKeys == [["path": "/var/lib/bootstrap/ssh_host_ed25519_key", "type": "ed25519"]])
        #expect(result["generateHostKeys"] as? Bool == false)
        let units = units(result)
        let before = units["piflash-bootstrap-check"]?["before"] ?? []
        #expect(before.contains("sshd-keygen.service") && before.contains("sshd.service"))
        #expect(before.contains("NetworkManager-ensure-profiles.service"))
        for unit in ["sshd", "NetworkManager-ensure-profiles"] {
            #expect(units[unit]?["requires"] == ["piflash-bootstrap-check.service"], "\(unit) requires the check")
            #expect(units[unit]?["after"] == ["piflash-bootstrap-check.service"], "\(unit) runs after the check")
        }
        #expect(units["sshd-keygen"] == nil, "no sshd-keygen unit is created where generateHostKeys = false removes it")
        let networkmanager = result["networkmanager"] as? [String: Any]
        #expect(networkmanager?["enable"] as? Bool == true)
        #expect(networkmanager?["environmentFiles"] as? [String] == ["/run/piflash-bootstrap/networkmanager.env"])
        let profile = (networkmanager?["profiles"] as? [String: String])?["piflash-wifi"] ?? ""
        #expect(profile.contains("ssid=$PIFLASH_WIFI_SSID\n") && profile.contains("psk=$PIFLASH_WIFI_PSK\n"))
        #expect(profile.contains("key-mgmt=wpa-psk") && profile.contains("autoconnect=true"))
        let check = result["check"] as? [String: Any]
        let serviceConfig = check?["serviceConfig"] as? [String: Any]
        #expect(serviceConfig?["EnvironmentFile"] as? [String] == ["-/var/lib/networkmanager/system-connections.env"])
        #expect(serviceConfig?["StandardError"] as? String == "journal+console")
        let tmpfiles = result["tmpfiles"] as? [String] ?? []
        #expect(tmpfiles.contains("d /var/lib/bootstrap 0700 root root -"))
        #expect(tmpfiles.contains("z /var/lib/bootstrap/ssh_host_ed25519_key 0600 root root -"))
        #expect(tmpfiles.contains("z /var/lib/bootstrap/ssh_host_ed25519_key.pub 0644 root root -"))
        #expect(tmpfiles.contains("z /var/lib/networkmanager/system-connections.env 0600 root root -"))
        #expect((result["wireless"] as? [String: Any])?["enable"] as? Bool == false)
    }

    @Test("networkmanager backend with networking.wireless: an assertion that names piflash and the fix")
    func assertionWithWireless() throws {
        let result = try FirstBootReaders.evaluateModule(["backend": "networkmanager"], flags: ["wirelessEnabled": true])
        let failed = result["failedAssertions"] as? [String] ?? []
        let ours = failed.filter { $0.contains("piflash") }
        #expect(ours.count == 1, "\(failed)")
        #expect(ours.first?.contains("services.piflash-bootstrap.wifi.backend = \"wpa_supplicant\"") == true)
        #expect(ours.first?.contains("networking.wireless") == true)
    }

    @Test("wpa_supplicant backend: networking.wireless with secretsFile and an ext: reference; works with networking.wireless")
    func wpaSupplicant() throws {
        let result = try FirstBootReaders.evaluateModule(["backend": "wpa_supplicant", "ssid": "Home Net"], flags: ["wirelessEnabled": true])
        #expect((result["failedAssertions"] as? [String]) == [])
        let wireless = result["wireless"] as? [String: Any]
        #expect(wireless?["enable"] as? Bool == true)
        #expect(wireless?["secretsFile"] as? String == "/run/piflash-bootstrap/wpa_supplicant-secrets")
        let networks = wireless?["networks"] as? [String: [String: Any]]
        #expect(networks?.keys.sorted() == ["Home Net"])
        #expect(networks?["Home Net"]?["pskRaw"] as? String == "ext:piflash_wifi_psk")
        #expect((result["networkmanager"] as? [String: Any])?["enable"] as? Bool == false)
        let units = units(result)
        #expect(units["wpa_supplicant"]?["requires"] == ["piflash-bootstrap-check.service"])
        #expect(units["piflash-bootstrap-check"]?["before"]?.contains("wpa_supplicant.service") == true)
    }

    @Test("wpa_supplicant backend without wifi.ssid: an assertion naming piflash")
    func wpaNeedsSSID() throws {
        let result = try FirstBootReaders.evaluateModule(["backend": "wpa_supplicant"])
        let failed = result["failedAssertions"] as? [String] ?? []
        #expect(failed.contains { $0.contains("piflash-bootstrap") && $0.contains("wifi.ssid") }, "\(failed)")
    }

    @Test("older nixpkgs without generateHostKeys: sshd-keygen requires the check; sops-nix and agenix use the pinned key")
    func olderNixpkgsAndSecretsModules() throws {
        let result = try FirstBootReaders.evaluateModule(
            ["backend": "networkmanager"], flags: ["withGenerateHostKeys": false, "withSops": true, "withAgenix": true])
        #expect(result["generateHostKeys"] is NSNull)
        let units = units(result)
        #expect(units["sshd-keygen"]?["requires"] == ["piflash-bootstrap-check.service"])
        #expect(units["sshd-keygen"]?["after"] == ["piflash-bootstrap-check.service"])
        #expect(result["sopsKeyPaths"] as? [String] == ["/var/lib/bootstrap/ssh_host_ed25519_key"])
        #expect(result["agenixIdentityPaths"] as? [String] == ["/var/lib/bootstrap/ssh_host_ed25519_key"])
    }
}

/// The check unit's script, taken from the evaluated module and run by bash against real files
/// and real readers: piflash's env file → systemd's parser → the script → (NetworkManager)
/// systemd's parser again → envsubst into the evaluated profile → GLib's keyfile parser.
@Suite(
    "NixOS module: the check unit run for real",
    .serialized,
    .enabled(if: FirstBootReaders.nixAvailable && FirstBootReaders.nixpkgsLibAvailable, Comment(rawValue: nixSkip)),
    .enabled(if: FirstBootReaders.systemdAvailable, "needs root, mkfs.ext4 and systemd-dissect (systemd-container)"),
    .enabled(if: hostsToolExists("ssh-keygen") && hostsToolExists("bash") && hostsToolExists("od"), "needs ssh-keygen, bash, od")
)
struct CheckUnitTests {
    /// A provisioned-looking root: key pair, env file rendered by piflash from `values`.
    private struct Root {
        let folder: HostsTempFolder
        var directory: String { folder.path + "/bootstrap" }
        var envFile: String { folder.path + "/system-connections.env" }
        var runtime: String { folder.path + "/run" }

        init(ssid: String?, psk: String?) throws {
            folder = try HostsTempFolder()
            try FileManager.default.createDirectory(atPath: folder.path + "/bootstrap", withIntermediateDirectories: true)
            let keygen = try hostsRunTool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", folder.path + "/bootstrap/ssh_host_ed25519_key"])
            #expect(keygen.status == 0)
            var variables: [String] = []
            var secrets: [String: [UInt8]] = [:]
            if let ssid { variables.append("WIFI_SSID = \"ssid\""); secrets["ssid"] = Array(ssid.utf8) }
            if let psk { variables.append("WIFI_PSK = \"psk\""); secrets["psk"] = Array(psk.utf8) }
            if !variables.isEmpty {
                let host = try HostFile.parse(
                    "[secrets]\ndir = \"s\"\n[[files]]\npath = \"/var/lib/networkmanager/system-connections.env\"\nenv = { \(variables.joined(separator: ", ")) }\n",
                    path: "/h/pi.toml")
                let file = try host.render(secrets: SecretValues(secrets))[0]
                try folder.write("system-connections.env", file.content)
            }
        }

        func script(backend: String, ssid: String? = nil) throws -> String {
            var arguments = ["backend": backend, "directory": directory, "environmentFile": envFile, "runtimeDirectory": runtime]
            if let ssid { arguments["ssid"] = ssid }
            let result = try FirstBootReaders.evaluateModule(arguments)
            return (result["check"] as? [String: Any])?["script"] as? String ?? ""
        }

        /// Runs the script as systemd would: the env file's variables (read by systemd's parser) in
        /// the environment.
        func run(_ script: String) throws -> (status: Int32, stdout: String, stderr: String) {
            var environment = ["PATH": "/usr/bin:/bin:/usr/sbin:/sbin"]
            if let bytes = FileManager.default.contents(atPath: envFile) {
                for (name, value) in try FirstBootReaders.systemdEnvironment(of: Array(bytes)) { environment[name] = value }
            }
            return try firstBootRun(["/bin/bash", "-c", script], environment: environment)
        }
    }

    @Test(
        "networkmanager: every hard PSK and SSID reaches NetworkManager's keyfile reader exactly",
        .enabled(if: FirstBootReaders.glibAvailable, "needs python3-gi with Debian's /usr/bin/python3"),
        .enabled(if: FirstBootReaders.libnmAvailable, "needs libnm's introspection data (gir1.2-nm-1.0)"),
        .enabled(if: hostsToolExists("envsubst"), "needs envsubst (gettext-base)")
    )
    func networkManagerExact() throws {
        let profileTemplate = try FirstBootReaders.evaluateModule(["backend": "networkmanager"])
        let ini = ((profileTemplate["networkmanager"] as? [String: Any])?["profiles"] as? [String: String])?["piflash-wifi"] ?? ""
        #expect(!ini.isEmpty)
        for (index, psk) in hardPSKs.enumerated() {
            let ssid = hardSSIDs[index % hardSSIDs.count]
            let root = try Root(ssid: ssid, psk: psk)
            let script = try root.script(backend: "networkmanager")
            let run = try root.run(script)
            #expect(run.status == 0, "check failed: \(run.stderr)")
            #expect(run.stdout.contains("SSH host key 256 SHA256:"), "the fingerprint is logged")
            // ensure-profiles: systemd reads the re-encoded file, envsubst fills the profile.
            let nmFile = FileManager.default.contents(atPath: root.runtime + "/networkmanager.env").map { Array($0) } ?? []
            let nmEnvironment = try FirstBootReaders.systemdEnvironment(of: nmFile)
            var environment = ["PATH": "/usr/bin:/bin"]
            for (name, value) in nmEnvironment { environment[name] = value }
            let iniFile = try root.folder.write("profile.ini", ini)
            let substituted = try firstBootRun(["/bin/sh", "-c", "envsubst < '\(iniFile)'"], environment: environment)
            #expect(substituted.status == 0)
            let keyfile = try root.folder.write("piflash-wifi.nmconnection", substituted.stdout)
            // GLib's keyfile parser, then NetworkManager's own keyfile reader (libnm's
            // nm_keyfile_read, as the daemon's keyfile plugin reads /run/NetworkManager/…).
            let glib = try hostsRunTool([FirstBootReaders.debianPython, "-c", """
                import gi, json, sys
                gi.require_version('GLib', '2.0')
                gi.require_version('NM', '1.0')
                from gi.repository import GLib, NM
                kf = GLib.KeyFile()
                kf.load_from_file(sys.argv[1], GLib.KeyFileFlags.NONE)
                connection = NM.keyfile_read(kf, "/run/NetworkManager/system-connections", NM.KeyfileHandlerFlags.NONE, None, None)
                ssid = bytes(connection.get_setting_wireless().get_ssid().get_data())
                psk = connection.get_setting_wireless_security().get_psk()
                print(json.dumps({"psk": psk, "ssid": list(ssid)}))
                """, keyfile])
            #expect(glib.status == 0)
            let parsed = try JSONSerialization.jsonObject(with: Data(glib.output.utf8)) as? [String: Any]
            #expect(parsed?["psk"] as? String == psk, "PSK \(psk.debugDescription)")
            #expect((parsed?["ssid"] as? [Int])?.map { UInt8($0) } == Array(ssid.utf8), "SSID \(ssid.debugDescription)")
        }
    }

    @Test(
        "wpa_supplicant: the secrets file holds the exact WPA key (PBKDF2 of the exact passphrase and SSID)",
        .enabled(if: hostsToolExists("wpa_passphrase"), "needs wpa_passphrase (wpasupplicant)")
    )
    func wpaSupplicantExact() throws {
        for (index, psk) in hardPSKs.enumerated() {
            let ssid = hardSSIDs[index % hardSSIDs.count]
            let root = try Root(ssid: ssid, psk: psk)
            let run = try root.run(try root.script(backend: "wpa_supplicant", ssid: ssid))
            #expect(run.status == 0, "check failed: \(run.stderr)")
            let secrets = String(decoding: FileManager.default.contents(atPath: root.runtime + "/wpa_supplicant-secrets") ?? Data(), as: UTF8.self)
            // Independently: PBKDF2-HMAC-SHA1(passphrase, ssid, 4096, 32) by Python's hashlib.
            let expected: String
            if psk.count == 64 {
                expected = psk
            } else {
                let pbkdf2 = try hostsRunTool([FirstBootReaders.debianPython, "-c",
                    "import hashlib,sys; print(hashlib.pbkdf2_hmac('sha1', sys.argv[1].encode(), sys.argv[2].encode(), 4096, 32).hex())",
                    psk, ssid])
                expected = pbkdf2.output.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(secrets == "piflash_wifi_psk=\(expected)\n", "PSK \(psk.debugDescription)")
            let mode = (try FileManager.default.attributesOfItem(atPath: root.runtime + "/wpa_supplicant-secrets")[.posixPermissions] as? Int) ?? -1
            #expect(mode & 0o077 == 0, "the secrets file is private")
        }
    }

    @Test("wpa_supplicant: a card for another network fails the check, by name")
    func wpaOtherNetwork() throws {
        let root = try Root(ssid: "Other Net", psk: "12345678")
        let run = try root.run(try root.script(backend: "wpa_supplicant", ssid: "Home Net"))
        #expect(run.status != 0)
        #expect(run.stderr.contains("WIFI_SSID") && run.stderr.contains("Home Net"))
    }

    @Test("fails visibly: missing key, empty key, missing env file, missing variable — and writes nothing")
    func failsClosed() throws {
        do {
            let root = try Root(ssid: "Net", psk: "12345678")
            try FileManager.default.removeItem(atPath: root.directory + "/ssh_host_ed25519_key")
            let run = try root.run(try root.script(backend: "networkmanager"))
            #expect(run.status != 0)
            #expect(run.stderr.contains("FAILED") && run.stderr.contains("is missing") && run.stderr.contains("sshd-keygen"))
            #expect(!FileManager.default.fileExists(atPath: root.runtime + "/networkmanager.env"))
        }
        do {
            let root = try Root(ssid: "Net", psk: "12345678")
            try root.folder.write("bootstrap/ssh_host_ed25519_key", "")
            let run = try root.run(try root.script(backend: "networkmanager"))
            #expect(run.status != 0 && run.stderr.contains("is empty"))
        }
        do {
            let root = try Root(ssid: "Net", psk: "12345678")
            try root.folder.write("bootstrap/ssh_host_ed25519_key", "not a key\n")
            let run = try root.run(try root.script(backend: "networkmanager"))
            #expect(run.status != 0 && run.stderr.contains("not a readable OpenSSH key"))
        }
        do {
            let root = try Root(ssid: nil, psk: nil)
            let run = try root.run(try root.script(backend: "networkmanager"))
            #expect(run.status != 0 && run.stderr.contains("environment file") && run.stderr.contains("is missing"))
            #expect(run.stdout.contains("SSH host key"), "the key was checked and logged first")
        }
        do {
            let root = try Root(ssid: "Net", psk: nil)
            let run = try root.run(try root.script(backend: "networkmanager"))
            #expect(run.status != 0 && run.stderr.contains("no WIFI_PSK"))
            #expect(!FileManager.default.fileExists(atPath: root.runtime + "/networkmanager.env"))
        }
    }
}
