/// The host file `piflash hosts new` writes: the three canonical bootstrap files of
/// ``CanonicalLayout`` and `[secrets] sops = …`. The one function that renders it.
public enum CanonicalHostFile {
    /// The TOML text of a new host file.
    ///
    /// - Parameters:
    ///   - name: the host name (`hostname`, the `root@NAME` comment of its key).
    ///   - secretsPath: the SOPS file, relative to the host file's folder.
    ///   - imagePath: `[image] path`, relative to the host file's folder; nil leaves a commented
    ///     example (`--image` at flash time, or edit the file).
    ///   - wifi: whether the host gets the Wi-Fi environment file.
    public static func toml(name: String, secretsPath: String, imagePath: String?, wifi: Bool) -> String {
        var text = """
            # \(name): made by `piflash hosts new`. Reference: piflash-hosts(5).
            # The host key and the Wi-Fi credentials are in \(secretsPath) (SOPS; edit with `sops`).
            hostname = \(quoted(name))


            """
        if let imagePath {
            text += """
                [image]
                path = \(quoted(imagePath))

                """
        } else {
            text += """
                # [image]
                # path = "../result/sd-image"
                # build = ["nix", "build", "--no-link", "--print-out-paths",
                #          ".#nixosConfigurations.\(name).config.system.build.sdImage"]

                """
        }
        text += """

            [secrets]
            sops = \(quoted(secretsPath))

            [[files]]
            path = \(quoted(CanonicalLayout.hostKeyPath))
            secret = \(quoted(CanonicalLayout.hostKeySecret))
            mode = "0600"

            [[files]]
            path = \(quoted(CanonicalLayout.hostPublicKeyPath))
            public_key_of = \(quoted(CanonicalLayout.hostKeySecret))
            mode = "0644"

            """
        if wifi {
            // KEY="value" lines quoted for systemd's EnvironmentFile=, read by the NixOS module.
            let env = "{ \(CanonicalLayout.wifiSSIDVariable) = \(quoted(CanonicalLayout.wifiSSIDSecret)), "
                + "\(CanonicalLayout.wifiPSKVariable) = \(quoted(CanonicalLayout.wifiPSKSecret)) }"
            text += """

                [[files]]
                path = \(quoted(CanonicalLayout.wifiEnvironmentPath))
                env = \(env)
                mode = "0600"

                """
        }
        text += """

            # [check]
            # address = "\(name).local"

            """
        return text
    }

    /// A TOML basic string (JSON's escapes are TOML's, with DEL escaped too).
    static func quoted(_ text: String) -> String {
        JSONValue.quoted(text, escapingDelete: true)
    }
}
