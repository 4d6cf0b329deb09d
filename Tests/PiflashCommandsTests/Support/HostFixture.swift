import Foundation

/// A hosts folder with one host whose secrets are a YAML file encrypted with the real `age`, an
/// ed25519 host key made by `ssh-keygen`, and an image made by scripts/mk-nixos-like-image.
final class HostFixture {
    let scratch: ScratchDirectory
    let hostsDirectory: String
    let identityFile: String
    let hostKeyFile: String
    let rawImage: String
    let image: String
    let name: String
    /// A Wi-Fi password that must arrive literally: a `$`, spaces, a `#` and quotes (by default).
    let psk: String
    let ssid: String

    /// - Parameters:
    ///   - envTable: write the Wi-Fi file with `env = { … }` (systemd-quoted) instead of the raw
    ///     template.
    ///   - extraSecrets: YAML lines appended to the secrets.
    init(name: String = "bastet", compression: String = "zst", extraMiB: Int = 16, root: String = "",
         extraFiles: String = "", psk: String = #"pa$$ word "with" #spaces ${not_a_var}"#, ssid: String = "Pi Net",
         envTable: Bool = false, extraSecrets: String = "") throws {
        self.psk = psk
        self.ssid = ssid
        scratch = try ScratchDirectory("piflash-test-host")
        self.name = name
        hostsDirectory = scratch.file("hosts")
        try Shell.sh("mkdir -p '\(hostsDirectory)/secrets' '\(scratch.path)/result'")
        identityFile = scratch.file("age-identity.txt")
        try Shell.sh("age-keygen -o '\(identityFile)' 2>/dev/null")
        let recipient = try Shell.sh("age-keygen -y '\(identityFile)'").trimmingCharacters(in: .whitespacesAndNewlines)
        hostKeyFile = scratch.file("ssh_host_ed25519_key")
        try Shell.sh("ssh-keygen -q -t ed25519 -N '' -C \(name) -f '\(hostKeyFile)'")
        let key = try String(contentsOfFile: hostKeyFile, encoding: .utf8)
        let indentedKey = key.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
        let yaml = "ssh_host_ed25519_key: |\n\(indentedKey)\nwifi:\n  ssid: '\(ssid.replacingOccurrences(of: "'", with: "''"))'\n  psk: '\(psk.replacingOccurrences(of: "'", with: "''"))'\nbig: \"\(String(repeating: "x", count: 64))\"\n\(extraSecrets)"
        try Shell.run(["age", "-r", recipient, "-o", "\(hostsDirectory)/secrets/\(name).yaml.age"], input: yaml)
        rawImage = scratch.file("result/nixos-image-sd-card-25.05-aarch64-linux.img")
        try Shell.sh("'\(Shell.packageRoot)/scripts/mk-nixos-like-image' '\(rawImage)' --extra-mib \(extraMiB) >/dev/null")
        image = try ImageFixture.compress(rawImage, compression)
        let toml = """
            hostname = "\(name)"

            [image]
            path = "../result/\((image as NSString).lastPathComponent)"
            \(root)
            [secrets]
            age = "secrets/\(name).yaml.age"

            \(HostFileText.canonicalFiles(
                wifiTemplate: "WIFI_SSID=${wifi.ssid}\\nWIFI_PSK=${wifi.psk}\\n",
                wifiEnvironment: envTable ? #"{ WIFI_SSID = "wifi.ssid", WIFI_PSK = "wifi.psk" }"# : nil))
            \(extraFiles)
            [check]
            address = "\(name).local"
            """
        try toml.write(toFile: "\(hostsDirectory)/\(name).toml", atomically: true, encoding: .utf8)
    }

    /// The arguments every flash of this host takes.
    func flashArguments(_ extra: [String]) -> [String] {
        ["flash", name, "--hosts", hostsDirectory, "--age-identity", identityFile, "--json",
         "--journal", scratch.file("journal.sqlite")] + extra
    }

    /// The public key line `ssh-keygen -y` derives from the host key (without comment).
    var expectedPublicKey: String {
        get throws {
            let line = try Shell.sh("ssh-keygen -y -f '\(hostKeyFile)'")
            return line.split(separator: " ").prefix(2).joined(separator: " ")
        }
    }

    /// The SHA-256 of the image's `/nix-path-registration`, read with debugfs from the source image.
    func nixPathRegistrationDigest(in imagePath: String, offset: UInt64) throws -> String {
        let out = try Shell.sh("debugfs -R 'cat /nix-path-registration' '\(imagePath)?offset=\(offset)' 2>/dev/null | sha256sum")
        return String(out.prefix(64))
    }
}

/// A root partition mounted read-only by the kernel through an offset loop device, so what
/// libext2fs wrote is checked by an independent implementation.
final class KernelMount {
    let loop: LoopDevice
    let mountPoint: String

    init(image: String, offset: UInt64, size: UInt64, scratch: ScratchDirectory) throws {
        loop = try LoopDevice(backing: image, readOnly: true, offset: offset, sizeLimit: size)
        mountPoint = scratch.file("mnt-\(UUID().uuidString.prefix(6))")
        try Shell.sh("mkdir -p '\(mountPoint)' && mount -t ext4 -o ro \(loop.path) '\(mountPoint)'")
    }

    /// `mode uid gid` as `stat` prints them, e.g. `600 0 0`.
    func stat(_ path: String) throws -> String {
        try Shell.sh("stat -c '%a %u %g' '\(mountPoint)\(path)'").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func contents(_ path: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: mountPoint + path))
    }

    deinit {
        _ = try? Shell.run(["umount", mountPoint])
    }
}

/// The root partition (ext4 "NIXOS_SD") of an image or device, found with sfdisk (not piflash).
func rootPartition(of path: String) throws -> (offset: UInt64, size: UInt64) {
    let json = try Shell.sh("sfdisk -J '\(path)'")
    let table = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
    let partitions = (table["partitiontable"] as! [String: Any])["partitions"] as! [[String: Any]]
    let root = partitions[1]
    return (UInt64(root["start"] as! Int) * 512, UInt64(root["size"] as! Int) * 512)
}
