import ArgumentParser
import PiflashKit

/// `piflash verify IMAGE --device DEV`: a read-only re-check of a card against an image.
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check, read-only, that a card (or image file) holds an image: exit 0, or 4 naming the first bad byte.",
        discussion: """
            Reads the card with O_DIRECT (never the page cache) and compares it byte for byte with the \
            uncompressed image. Nothing is written. Injected host files make a flashed card differ from the \
            plain image inside its root partition: use this on cards written with `piflash write`, or to find \
            where a card stopped holding what it was given.
            """
    )

    @Argument(help: ArgumentHelp("The image file or folder.", valueName: "IMAGE"))
    var image: String

    @Option(name: .long, help: ArgumentHelp("The card (or image file) to check.", valueName: "DEV"))
    var device: String

    @OptionGroup var output: OutputOptions

    func run() async throws {
        Interrupts.install()
        let reporter = output.reporter()
        var result = FlashResult()
        result.image = image
        result.device = device
        do {
            let source = try ImageSource(path: image)
            result.image = source.path
            result.compression = source.compression.rawValue
            let file = try DeviceFile(path: device, mode: .read, direct: true)
            let comparison = try ImageComparer().compare(source, with: file, reporter: reporter)
            try file.close()
            result.bytes = comparison.bytes
            result.verifySeconds = comparison.seconds
            result.imageSHA256 = hexString(comparison.imageSHA256)
            if let offset = comparison.firstDifference {
                throw PiflashError.verification(
                    "\(device) differs from the image: first bad byte at offset \(offset) (0x\(String(offset, radix: 16)))",
                    path: device, offset: offset)
            }
            if let expected = source.expected, !expected.ofCompressedFile, expected.sha256 != result.imageSHA256 {
                throw PiflashError.usage("the image's SHA-256 is \(result.imageSHA256!), but \(expected.origin) says \(expected.sha256)",
                                         path: source.path)
            }
            result.ok = true
        } catch let error as PiflashError {
            result.fail(error)
        }
        if output.json {
            writeAll(result.json.serialized() + "\n", to: 1)
        } else if result.ok {
            writeAll("✓ \(device) holds \(result.image ?? image) (\(formatBytes(result.bytes)), sha256 \(result.imageSHA256 ?? "?"))\n", to: 1)
        } else {
            writeAll("✗ \(result.error ?? "verification failed")\n", to: 2)
        }
        if !result.ok { throw ExitCode(result.exitCode) }
    }
}
