import PiflashSecrets

/// Which secrets of a host are Wi-Fi credentials, and whether their values are usable
/// (``WiFiRules``): checked once the secrets are loaded, before any card, by everything that
/// renders a host (`flash`, the station, `hosts --check`).
extension HostFile {
    /// A secret the canonical layout (``CanonicalLayout``) uses as a Wi-Fi credential.
    public struct WiFiSecret: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            case psk
            case ssid
        }
        /// The secret's key path.
        public var secret: String
        public var kind: Kind
        /// Why it counts as one, for messages: `variable WIFI_PSK of [[files]] /var/lib/…`.
        public var reason: String
    }

    /// The secrets used as Wi-Fi credentials: those an `env` entry maps to `WIFI_PSK` /
    /// `WIFI_SSID`, and the secrets named `wifi_psk` / `wifi_ssid` when a file uses them.
    public var wifiSecrets: [WiFiSecret] {
        var found: [WiFiSecret] = []
        func add(_ secret: String, _ kind: WiFiSecret.Kind, _ reason: String) {
            if !found.contains(where: { $0.secret == secret && $0.kind == kind }) {
                found.append(WiFiSecret(secret: secret, kind: kind, reason: reason))
            }
        }
        for entry in files {
            if case .environment(let variables) = entry.source {
                for variable in variables {
                    if variable.name == CanonicalLayout.wifiPSKVariable {
                        add(variable.secret, .psk, "variable \(variable.name) of [[files]] \(entry.path)")
                    } else if variable.name == CanonicalLayout.wifiSSIDVariable {
                        add(variable.secret, .ssid, "variable \(variable.name) of [[files]] \(entry.path)")
                    }
                }
            }
            for name in entry.source.secretNames {
                if name == CanonicalLayout.wifiPSKSecret {
                    add(name, .psk, "the canonical Wi-Fi passphrase secret, used by [[files]] \(entry.path)")
                } else if name == CanonicalLayout.wifiSSIDSecret {
                    add(name, .ssid, "the canonical Wi-Fi network name secret, used by [[files]] \(entry.path)")
                }
            }
        }
        return found
    }

    /// Checks every Wi-Fi credential (``wifiSecrets``) against ``WiFiRules``. A missing secret is
    /// left to rendering, which names it.
    ///
    /// - Throws: ``PiflashError`` (exit 2) naming the secret, why it is a Wi-Fi value, and the
    ///   rule (`psk_length`, `psk_character`, `psk_hex`, `ssid_length`). Never the value.
    public func checkWiFiValues(secrets: SecretValues) throws {
        for wifi in wifiSecrets {
            guard var value = secrets.value(wifi.secret) else { continue }
            defer { SecretPages.wipe(&value) }
            let problem: WiFiRules.Problem?
            let what: String
            switch wifi.kind {
            case .psk:
                problem = WiFiRules.pskProblem(value)
                what = "Wi-Fi passphrase"
            case .ssid:
                problem = WiFiRules.ssidProblem(value)
                what = "Wi-Fi network name"
            }
            if let problem {
                throw PiflashError.usage(
                    "\(filePath): the secret `\(wifi.secret)` (\(wifi.reason)) is not a valid \(what): "
                        + "\(problem.description) [rule \(problem.code)]",
                    path: filePath, hint: "fix the value of `\(wifi.secret)` in the secrets")
            }
        }
    }
}
