/// The canonical bootstrap layout (SPEC "The story"): where the files go on the card, which
/// secrets they come from, and the variables of the Wi-Fi environment file. The one definition
/// that `hosts new`, the example host, the Wi-Fi checks and the NixOS module's defaults agree on.
public enum CanonicalLayout {
    /// The pinned SSH host key (0600) and its public half (0644).
    public static let hostKeyPath = "/var/lib/bootstrap/ssh_host_ed25519_key"
    public static let hostPublicKeyPath = "/var/lib/bootstrap/ssh_host_ed25519_key.pub"
    /// `KEY=value` lines for systemd's `EnvironmentFile=` (0600), read by NetworkManager's
    /// `ensureProfiles` or wpa_supplicant's `secretsFile` through the NixOS module.
    public static let wifiEnvironmentPath = "/var/lib/networkmanager/system-connections.env"

    /// The secret names of the canonical SOPS file.
    public static let hostKeySecret = "ssh_host_ed25519_key"
    public static let wifiSSIDSecret = "wifi_ssid"
    public static let wifiPSKSecret = "wifi_psk"

    /// The variables of the Wi-Fi environment file.
    public static let wifiSSIDVariable = "WIFI_SSID"
    public static let wifiPSKVariable = "WIFI_PSK"
}
