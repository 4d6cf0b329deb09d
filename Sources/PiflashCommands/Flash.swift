import ArgumentParser
import Foundation
import PiflashKit

/// `piflash flash HOST` (and `piflash HOST`): the whole job — image, secrets, card, write, verify,
/// inject, verify the injection, eject, journal, known_hosts line.
struct Flash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flash",
        abstract: "Flash a host: write its image, inject its bootstrap files, verify everything, eject.",
        discussion: """
            Resolves hosts/HOST.toml (see piflash-hosts(5)), runs its image build if it has one, decrypts its \
            secrets here (SOPS or age; never written anywhere but the card) and renders every bootstrap file \
            before any card is touched. Then writes the image to the card (or --output file) — the blocks its \
            filesystems use, or every byte with --full — reads them back, \
            injects the files into the ext4 root partition found from the image's own partition table, reads \
            them (and every block the injection wrote) back after dropping the caches, checks the filesystem \
            with e2fsck -fn, and only then writes the card's first MiB (its partition table) and reads it back: \
            a card carries a valid partition table only if every phase passed, so an interrupted, failed or \
            pulled card never looks valid (an --output file is removed on failure). The card is opened once, \
            exclusively, and that one handle serves every step (e2fsck aside). Ejects the card and records \
            the attempt in the journal, with the map of the blocks the injection wrote (for `piflash verify \
            --host`). A `dir`-secrets host needs no age key. Prints the known_hosts line of the pinned SSH host \
            key. `piflash HOST` is short for this.
            """
    )

    @Argument(help: ArgumentHelp("The host: hosts/HOST.toml in the hosts folder.", valueName: "HOST"))
    var host: String

    @OptionGroup var target: TargetOptions
    @OptionGroup var hosts: HostsFolderOptions

    @Option(name: .long, help: ArgumentHelp("Use this image (file or folder) instead of the host file's [image].", valueName: "PATH"))
    var image: String?

    @Flag(name: .customLong("no-build"), help: "Do not run the host file's image build command; use [image] path as it is.")
    var noBuild = false

    @OptionGroup var identity: AgeIdentityOptions

    @Option(name: .long, help: ArgumentHelp("The flash journal (default: /var/lib/piflash/journal.sqlite for root, else $XDG_STATE_HOME/piflash/journal.sqlite), or postgresql://USER@HOST[:PORT]/DB shared by several machines.", valueName: "PATH"))
    var journal: String?

    @OptionGroup var output: OutputOptions

    func run() async throws {
        Interrupts.install()
        let reporter = output.reporter()
        let job: FlashJob
        let hostFile: HostFile
        do {
            // Every host-file rule was checked when it loaded: nothing below touches a card until the
            // image is open and every file is rendered.
            hostFile = try hosts.catalog().load(host)
            for warning in hostFile.warnings { reporter.warning(warning) }
            let preparation = try FlashPreparation.prepare(
                host: hostFile, imagePath: image, runBuild: !noBuild, identities: { try identity.identities() },
                reporter: reporter)
            let flashTarget = try selectTarget(
                target, imageSize: preparation.image.uncompressedSize, name: hostFile.name, json: output.json,
                reporter: reporter)
            job = preparation.job(target: flashTarget, full: target.full)
        } catch let error as PiflashError {
            try failEarly(error, json: output.json, host: host, image: image, device: target.device, output: target.output)
        }
        let result = runRecorded(job, command: "flash", journalPath: journal, hostName: hostFile.catalogName, reporter: reporter)
        try finish(result, json: output.json)
    }
}
