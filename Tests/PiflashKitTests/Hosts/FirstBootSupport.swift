import Foundation
import PiflashKit
import Testing

/// Real readers of the first-boot formats, for the tests: systemd's env-file parser (through
/// `systemd-dissect`, which reads an image's os-release with the same `parse_env_file_internal`
/// as `EnvironmentFile=`, offline), GLib's keyfile parser (python3-gi, Debian's python3), Nix.
enum FirstBootReaders {
    static var isRoot: Bool { getuid() == 0 }

    /// Whether systemd's env-file parser can be run here (root, systemd-dissect, mkfs.ext4).
    static var systemdAvailable: Bool {
        isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-dissect") && hostsToolExists("mkfs.ext4")
    }

    /// Debian's python3, which sees python3-gi (the first python3 on PATH here may not).
    static let debianPython = "/usr/bin/python3"

    static var glibAvailable: Bool {
        (try? hostsRunTool([debianPython, "-c", "import gi; gi.require_version('GLib', '2.0'); from gi.repository import GLib"]))?.status == 0
    }

    /// libnm's keyfile reader (`nm_keyfile_read`, the code NetworkManager's keyfile plugin uses),
    /// through gir1.2-nm-1.0.
    static var libnmAvailable: Bool {
        (try? hostsRunTool([debianPython, "-c", "import gi; gi.require_version('NM', '1.0'); from gi.repository import NM; NM.keyfile_read"]))?.status == 0
    }

    static var nixAvailable: Bool { hostsToolExists("nix-instantiate") }

    /// ../shared/nixpkgs-lib/lib next to the worktree.
    static let nixpkgsLib: String = hostsPackageRoot + "/../shared/nixpkgs-lib/lib"
    static var nixpkgsLibAvailable: Bool { FileManager.default.fileExists(atPath: nixpkgsLib + "/default.nix") }

    /// The variables systemd reads from an `EnvironmentFile=` with these bytes: the file becomes
    /// the os-release of a small ext4 image, which `systemd-dissect --json=short` parses with
    /// systemd's env-file parser and prints exactly (JSON strings).
    static func systemdEnvironment(of file: [UInt8]) throws -> [String: String] {
        let folder = try HostsTempFolder()
        try folder.write("root/usr/lib/os-release", Array("ID=piflash-test\n".utf8) + file)
        let image = folder.path + "/env.img"
        let created = FileManager.default.createFile(atPath: image, contents: nil)
        #expect(created)
        #expect(truncate(image, 8 << 20) == 0)
        let mkfs = try hostsRunTool(["mkfs.ext4", "-q", "-d", folder.path + "/root", image])
        #expect(mkfs.status == 0, "mkfs.ext4 -d")
        let dissect = try hostsRunTool(["systemd-dissect", "--json=short", image])
        #expect(dissect.status == 0, "systemd-dissect")
        let object = try JSONSerialization.jsonObject(with: Data(dissect.output.utf8)) as? [String: Any]
        let pairs = object?["osRelease"] as? [String] ?? []
        var environment: [String: String] = [:]
        for pair in pairs {
            guard let equals = pair.firstIndex(of: "=") else { continue }
            environment[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
        }
        #expect(environment["ID"] == "piflash-test", "systemd-dissect read the file: \(dissect.output.prefix(200))")
        environment["ID"] = nil
        return environment
    }

    /// Runs `nix-instantiate --eval --strict --json` on Tests/nixos/eval-bootstrap.nix with these
    /// arguments (`--argstr`), offline and without a daemon (a private state folder, read-only
    /// store, no build users: what works as root here).
    static func evaluateModule(_ arguments: [String: String], flags: [String: Bool] = [:]) throws -> [String: Any] {
        let state = try HostsTempFolder()
        var command = [
            "env", "NIX_CONFIG=build-users-group =", "NIX_STATE_DIR=\(state.path)", "NIX_LOG_DIR=\(state.path)/log",
            "nix-instantiate", "--readonly-mode", "--eval", "--strict", "--json",
            hostsPackageRoot + "/Tests/nixos/eval-bootstrap.nix", "--arg", "nixpkgsLib", nixpkgsLib,
        ]
        for (name, value) in arguments.sorted(by: { $0.key < $1.key }) { command += ["--argstr", name, value] }
        for (name, value) in flags.sorted(by: { $0.key < $1.key }) { command += ["--arg", name, value ? "true" : "false"] }
        let result = try hostsRunTool(command)
        #expect(result.status == 0, "nix-instantiate failed: \(command.joined(separator: " "))")
        return (try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]) ?? [:]
    }
}

/// Runs a program with an explicit environment; returns status, stdout and stderr.
func firstBootRun(_ arguments: [String], environment: [String: String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0])
    process.arguments = Array(arguments.dropFirst())
    process.environment = environment
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}
