import Foundation
import PiflashSecrets

/// Turns "this card, this host" into a ready ``FlashJob``: the host file, its image (built when
/// the station file says so), the image fits the card, the secrets decrypted into the files to
/// inject, auto-mounted partitions of the card unmounted.
struct JobPreparation: Sendable {
    let config: StationConfig
    let catalog: HostCatalog

    /// The job for this card and host.
    /// - Parameters:
    ///   - imagePath: set as soon as the image is known, so a failure after it can name it.
    /// - Throws: ``PiflashError`` for whatever stops the card from being flashed.
    func prepare(host hostName: String, disk: DiskDescription, decision: Decision, reporter: Reporter,
                 imagePath: inout String?) throws -> FlashJob {
        let host = try catalog.load(hostName)
        for warning in host.warnings { reporter.warning(warning) }
        let path = try host.imagePath(runBuild: config.build, reporter: reporter)
        imagePath = path
        let source = try ImageSource(path: path, expectedSHA256: host.image.sha256)
        if let needed = source.uncompressedSize, needed > disk.size {
            throw PiflashError.refused(
                "\(disk.devnode) (\(formatBytes(disk.size))) is smaller than the image (\(formatBytes(needed)))",
                path: disk.devnode)
        }
        let bootstrap = try host.bootstrap(identities: identities(for: host))
        for mount in decision.autoMounts {
            reporter.note("unmounting \(mount.source) from \(mount.mountPoint)")
            try unmountFilesystem(at: mount.mountPoint)
        }
        try Interrupts.check("preparing \(hostName) for \(disk.devnode)")
        let target = FlashTarget(kind: .device, path: disk.devnode, model: disk.model, serial: disk.serial,
                                 byPath: disk.byPath, bus: disk.bus.rawValue, size: disk.size, eject: config.eject)
        return FlashJob(image: source, target: target, host: host.name,
                        injection: bootstrap.files.isEmpty ? nil : .bootstrap(bootstrap.files, root: host.root),
                        hostKeyFingerprint: bootstrap.hostKey?.fingerprint, knownHostsLine: bootstrap.knownHostsLine)
    }

    /// The age identities a host's secrets need: none for plain `dir` secrets or no secrets.
    func identities(for host: HostFile) throws -> [AgeIdentity] {
        switch host.secrets {
        case nil, .dir?: return []
        case .sops?, .age?:
            return try AgeIdentity.load(explicitFile: config.ageIdentity, environment: ProcessInfo.processInfo.environment)
        }
    }
}
