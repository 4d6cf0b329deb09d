import ArgumentParser
import PiflashKit

// TEMPORARY until the udev discovery lands: --device taken as given.
func selectTarget(_ options: TargetOptions, imageSize: UInt64?, name: String, reporter: Reporter) throws -> FlashTarget {
    if let output = options.output {
        return FlashTarget(kind: .output, path: outputPath(output, name: name), eject: false)
    }
    guard let device = options.device else { throw PiflashError.usage("no --device") }
    return FlashTarget(kind: .device, path: device, eject: !options.noEject)
}

