import ArgumentParser
import PiflashKit

/// `piflash verify IMAGE --device DEV`: a read-only re-check of a card against an image; and
/// `piflash verify --host HOST --device DEV [--entry ID]`: a provisioned card against its journal record.
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check, read-only, that a card holds an image, or a host's provisioned card: exit 0, or 4 naming the first bad byte.",
        discussion: """
            Reads the card with O_DIRECT (never the page cache). Nothing is written.

            With IMAGE: compares the card byte for byte with the uncompressed image (cards written with \
            `piflash write`) where the image's filesystems use it — the bytes `write` writes — or every \
            byte with --full (cards written with --full, dd or another tool).

            With --host HOST: checks a card flashed with `piflash flash HOST` against the newest successful \
            flash of HOST in the journal (or --entry ID): every image byte outside the blocks the injection \
            wrote against the image (the journaled image file, or IMAGE when given; its SHA-256 must be the \
            one recorded) — for a card flashed without --full, in the ranges the flash wrote, as the journal \
            records them — and every injected block against its recorded digest, the partition table \
            included. The digests of a host with secrets are keyed, so its secrets are opened (age \
            identities only for SOPS and age secrets). Exit 4 names the first bad offset and whether it lies \
            in the image or in an injected block: the answer to "is this card dying?".
            """
    )

    @Argument(help: ArgumentHelp("The image file or folder (with --host: instead of the journaled image).", valueName: "IMAGE"))
    var image: String?

    @Option(name: .long, help: ArgumentHelp("The card (or image file) to check.", valueName: "DEV"))
    var device: String

    @Option(name: .long, help: ArgumentHelp("Check a provisioned card of this host against its journal record.", valueName: "HOST"))
    var host: String?

    @Option(name: .long, help: ArgumentHelp("With --host: the journal entry to check against (default: the host's newest successful flash).", valueName: "ID"))
    var entry: Int64?

    @Option(name: .long, help: ArgumentHelp("The flash journal (default: /var/lib/piflash/journal.sqlite for root, else $XDG_STATE_HOME/piflash/journal.sqlite).", valueName: "PATH"))
    var journal: String?

    @Flag(name: .long, help: "With IMAGE: compare every byte, not only the blocks the image's filesystems use.")
    var full = false

    @OptionGroup var hosts: HostsFolderOptions
    @OptionGroup var identity: AgeIdentityOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if host == nil && image == nil { throw ValidationError("give IMAGE, or --host HOST") }
        if full && host != nil { throw ValidationError("--full is for IMAGE; with --host the journal says what the flash wrote") }
        if entry != nil && host == nil { throw ValidationError("--entry needs --host") }
    }

    func run() async throws {
        Interrupts.install()
        let reporter = output.reporter()
        var result = FlashResult()
        result.image = image
        result.device = device
        result.host = host
        var human = ""
        do {
            if let host {
                human = try verifyHost(host, result: &result, reporter: reporter)
            } else if let image {
                human = try verifyImage(image, result: &result, reporter: reporter)
            }
            result.ok = true
        } catch let error as PiflashError {
            result.fail(error)
        }
        if output.json {
            writeAll(result.json.serialized() + "\n", to: 1)
        } else if result.ok {
            writeAll("✓ \(human)\n", to: 1)
        } else {
            writeAll("✗ \(result.error ?? "verification failed")\n", to: 2)
        }
        if !result.ok { throw ExitCode(result.exitCode) }
    }

    private func verifyImage(_ image: String, result: inout FlashResult, reporter: Reporter) throws -> String {
        let source = try ImageSource(path: image)
        result.image = source.path
        result.compression = source.compression.rawValue
        let plan = try WritePlan.make(for: source, full: full, verb: "comparing", reporter: reporter)
        let file = try DeviceFile(path: device, mode: .read, direct: true)
        let comparison = try ImageComparer().compare(source, with: file, plan: plan, reporter: reporter)
        try file.close()
        result.bytes = comparison.bytes
        result.imageBytes = comparison.bytes
        result.mappedBytes = comparison.comparedBytes
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
        let compared = plan.isSparse ? ", \(formatBytes(comparison.comparedBytes)) of it used by its filesystems compared" : ""
        return "\(device) holds \(result.image ?? image) (\(formatBytes(result.bytes))\(compared), sha256 \(result.imageSHA256 ?? "?"))"
    }

    private func verifyHost(_ name: String, result: inout FlashResult, reporter: Reporter) throws -> String {
        let hostFile = try hosts.catalog().load(name)
        let journalPath = Journal.defaultPath(explicit: journal)
        let record: JournalEntry
        let journal = try Journal(path: journalPath)
        if let entry {
            guard let found = try journal.entry(id: entry) else {
                throw PiflashError.usage("the journal \(journalPath) has no entry \(entry)", path: journalPath)
            }
            guard found.host == hostFile.catalogName || found.host == hostFile.name else {
                throw PiflashError.usage("journal entry \(entry) is a flash of \(found.host ?? "no host"), not \(name)", path: journalPath)
            }
            guard found.ok else {
                throw PiflashError.usage("journal entry \(entry) is a failed attempt: no card holds it", path: journalPath)
            }
            record = found
        } else {
            guard let found = try journal.lastSuccess(host: hostFile.catalogName) else {
                throw PiflashError.usage("the journal \(journalPath) has no successful flash of \(name)", path: journalPath,
                                         hint: "give the journal the card was flashed with: --journal PATH")
            }
            record = found
        }
        guard let recordedSHA = record.imageSHA256, let bytes = record.bytes else {
            throw PiflashError.usage("journal entry \(record.id ?? 0) has no image digest", path: journalPath)
        }
        if !record.files.isEmpty && record.injectedBlocks.isEmpty {
            throw PiflashError.usage(
                "journal entry \(record.id ?? 0) has no map of the injected blocks (recorded by an older piflash)",
                path: journalPath, hint: "flash the card again to get an entry that can be verified")
        }
        var key: DigestKey?
        if record.injectedBlocks.contains(where: \.keyed) {
            let secrets = try HostSecrets.load(for: hostFile, identities: { try identity.identities() })
            key = hostFile.digestKey(secrets: secrets)
        }
        let source = try ImageSource(path: image ?? record.imagePath)
        result.image = source.path
        result.compression = source.compression.rawValue
        // A sparse flash is checked where it wrote; an entry without ranges was a full write.
        let plan = record.writtenRanges.isEmpty
            ? WritePlan.full(because: "the entry records a full write", imageBytes: record.imageBytes ?? bytes)
            : WritePlan(ranges: record.writtenRanges.map(\.range), imageBytes: record.imageBytes ?? bytes, fullBecause: nil)
        let file = try DeviceFile(path: device, mode: .read, direct: true)
        let outcome = try CardMapVerifier().verify(
            source, plan: plan, blocks: record.injectedBlocks, key: key, target: file, reporter: reporter)
        try file.close()
        result.bytes = outcome.bytes
        result.imageBytes = outcome.bytes
        result.mappedBytes = plan.plannedBytes
        result.verifySeconds = outcome.seconds
        result.imageSHA256 = hexString(outcome.imageSHA256)
        if result.imageSHA256 != recordedSHA || outcome.bytes != bytes {
            throw PiflashError.usage(
                "\(source.path) is not the image of journal entry \(record.id ?? 0): its SHA-256 is \(result.imageSHA256!), the entry's \(recordedSHA)",
                path: source.path, hint: "give the image that was flashed as IMAGE")
        }
        if let mismatch = outcome.mismatch {
            let offset = mismatch.offset
            result.errorRegion = mismatch.inInjectedBlock ? "injected_block" : "image"
            let place = mismatch.inInjectedBlock
                ? "in an injected block (the block at byte \(offset) does not match its recorded digest)"
                : "in the image (the card's byte differs from the image's)"
            throw PiflashError.verification(
                "\(device) differs from \(name)'s flash (journal entry \(record.id ?? 0)): first bad byte at offset \(offset) (0x\(String(offset, radix: 16))), \(place); "
                    + "the card may be failing", path: device, offset: offset)
        }
        return "\(device) holds \(name)'s flash of journal entry \(record.id ?? 0): \(formatBytes(outcome.bytes)) of image and \(record.injectedBlocks.count) injected blocks"
    }
}
