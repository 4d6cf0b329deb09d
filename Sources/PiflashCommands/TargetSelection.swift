import ArgumentParser
import PiflashKit

/// Turns `--device`/`--output` into a target: an output file as given (a folder gets
/// `<name>.img`), or a card chosen and checked by the safety policy — the only candidate, one
/// inserted while waiting, or the one the user picks — and confirmed unless `--yes`.
///
/// - Parameters:
///   - name: the host (or the image's base name): `<name>.img` in an output folder, and the
///     waiting line "insert a card for NAME…".
///   - json: `--json`; a script never waits for a card unless `--wait` says so.
func selectTarget(_ options: TargetOptions, imageSize: UInt64?, name: String, json: Bool, reporter: Reporter) throws -> FlashTarget {
    if let output = options.output {
        return FlashTarget(kind: .output, path: outputPath(output, name: name), eject: false)
    }
    let request = TargetRequest(
        device: options.device, imageSize: imageSize, maxSize: try options.maxSizeBytes(),
        waitSeconds: options.waitSeconds(json: json), assumeYes: options.yes, cardFor: name)
    let disk = try resolveTarget(request, reporter: reporter)
    return FlashTarget(
        kind: .device, path: disk.devnode, model: disk.model, serial: disk.serial, byPath: disk.byPath,
        bus: disk.bus.rawValue, size: disk.size, eject: !options.noEject)
}
