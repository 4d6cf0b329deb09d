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
        // The one preparation `flash` and `write` use too: image, identities (none for `dir`),
        // secrets, rendered files.
        let preparation = try FlashPreparation.prepare(
            host: host, runBuild: config.build, identities: { try ageIdentities() }, reporter: reporter)
        imagePath = preparation.image.path
        if let needed = preparation.image.uncompressedSize, needed > disk.size {
            throw PiflashError.refused(
                "\(disk.devnode) (\(formatBytes(disk.size))) is smaller than the image (\(formatBytes(needed)))",
                path: disk.devnode)
        }
        for mount in decision.autoMounts {
            reporter.note("unmounting \(mount.source) from \(mount.mountPoint)")
            try unmountFilesystem(at: mount.mountPoint)
        }
        try Interrupts.check("preparing \(hostName) for \(disk.devnode)")
        let target = FlashTarget(kind: .device, path: disk.devnode, model: disk.model, serial: disk.serial,
                                 byPath: disk.byPath, bus: disk.bus.rawValue, size: disk.size, eject: config.eject)
        return preparation.job(target: target, full: config.full)
    }

    /// The station's age identities (its file's `age_identity`, then the usual sources); asked for
    /// only by hosts that need them (``HostFile/needsAgeIdentities``).
    func ageIdentities() throws -> [AgeIdentity] {
        try AgeIdentity.load(explicitFile: config.ageIdentity, environment: ProcessInfo.processInfo.environment)
    }
}
