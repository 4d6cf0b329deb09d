/// Host-file text for fixtures: the three canonical bootstrap files of SPEC as `[[files]]` tables.
enum HostFileText {
    /// - Parameters:
    ///   - wifiTemplate: the template of the Wi-Fi environment file (TOML-escaped).
    ///   - wifiEnvironment: when given, the Wi-Fi file is an `env` table with this TOML text
    ///     (e.g. `{ WIFI_SSID = "wifi.ssid", WIFI_PSK = "wifi.psk" }`) instead of the template.
    ///   - modes: write the modes explicitly (else the host file's defaults apply).
    static func canonicalFiles(
        wifiTemplate: String = "WIFI_SSID=${wifi_ssid}\\nWIFI_PSK=${wifi_psk}\\n", wifiEnvironment: String? = nil,
        modes: Bool = true
    ) -> String {
        func mode(_ value: String) -> String { modes ? "mode = \"\(value)\"\n" : "" }
        return """
            [[files]]
            path = "/var/lib/bootstrap/ssh_host_ed25519_key"
            secret = "ssh_host_ed25519_key"
            \(mode("0600"))
            [[files]]
            path = "/var/lib/bootstrap/ssh_host_ed25519_key.pub"
            public_key_of = "ssh_host_ed25519_key"
            \(mode("0644"))
            [[files]]
            path = "/var/lib/networkmanager/system-connections.env"
            \(wifiEnvironment.map { "env = \($0)" } ?? "template = \"\(wifiTemplate)\"")
            \(mode("0600"))
            """
    }
}
