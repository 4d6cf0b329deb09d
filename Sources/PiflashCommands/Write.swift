import ArgumentParser
import Glibc
import PiflashKit

/// `piflash write IMAGE (--device DEV | --output PATH)`: the write path alone, SPEC steps 1–4 and 7.
struct Write: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "write",
        abstract: "Write an image to a card (or an image file), verify it by read-back, and eject.",
        discussion: """
            IMAGE is a raw, zstd, xz or gzip image (told by its magic bytes), or a folder holding exactly one \
            *.img[.zst|.xz|.gz] (a NixOS build result works). The card must pass the safety policy \
            (see `piflash devices --all`). Only the blocks the image's filesystems use are written and read back \
            (the image is mapped first: ext2/3/4 block bitmaps, FAT allocation tables; everything else in full), \
            the rest is discarded where the card can; --full writes and reads back every byte. Its partition tables (the first 64 KiB) are zeroed first and the first MiB is written last, \
            after the read-back passed: a card carries a valid partition table only if every phase passed, so an interrupted \
            card never looks valid. Without --device or --output the card is found as for `piflash flash`: \
            the only candidate, one inserted within --wait seconds, or the one you choose. The expected SHA-256 of the uncompressed image comes from --sha256, else \
            from IMAGE.sha256 or SHA256SUMS beside it (those may also name the compressed file).
            """
    )

    @Argument(help: ArgumentHelp("The image file or folder.", valueName: "IMAGE"))
    var image: String

    @OptionGroup var target: TargetOptions

    @Option(name: .long, help: ArgumentHelp("The SHA-256 the uncompressed image must have.", valueName: "HEX"))
    var sha256: String?

    @Option(name: .long, help: ArgumentHelp("The flash journal (default: /var/lib/piflash/journal.sqlite for root; or postgresql://USER@HOST[:PORT]/DB, shared by several machines).", valueName: "PATH"))
    var journal: String?

    @OptionGroup var output: OutputOptions

    func run() async throws {
        Interrupts.install()
        let reporter = output.reporter()
        let source: ImageSource
        let flashTarget: FlashTarget
        do {
            source = try ImageSource(path: image, expectedSHA256: sha256)
            flashTarget = try selectTarget(target, imageSize: source.uncompressedSize, name: imageBaseName(source.path),
                                           json: output.json, reporter: reporter)
        } catch let error as PiflashError {
            try failEarly(error, json: output.json, image: image, device: target.device, output: target.output)
        }
        let job = FlashPreparation(image: source).job(target: flashTarget, full: target.full)
        let result = runRecorded(job, command: "write", journalPath: journal, reporter: reporter)
        try finish(result, json: output.json)
    }
}

/// The image's file name without its compression and `.img` suffixes, for `--output FOLDER`.
func imageBaseName(_ path: String) -> String {
    var name = String(path.split(separator: "/").last ?? "image")
    for suffix in [".zst", ".xz", ".gz", ".img"] where name.hasSuffix(suffix) { name = String(name.dropLast(suffix.count)) }
    return name
}

/// `--output PATH`: a file, or a folder to put `<name>.img` into.
func outputPath(_ path: String, name: String) -> String {
    var info = stat()
    if stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
        return (path.hasSuffix("/") ? path : path + "/") + name + ".img"
    }
    return path
}
