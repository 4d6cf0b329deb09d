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
            before any card is touched. Then writes the image to the card (or --output file), reads it back, \
            injects the files into the ext4 root partition found on the card itself, reads them back from a fresh \
            direct-I/O open, checks the filesystem with e2fsck -fn, ejects the card and records the attempt in \
            the journal. Prints the known_hosts line of the pinned SSH host key. `piflash HOST` is short for this.
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
            hostFile = try hosts.catalog().load(host)
            for warning in hostFile.warnings { reporter.warning(warning) }
            // Everything that can fail without a card fails here, before any card is touched.
            let imagePath = try image ?? hostFile.imagePath(runBuild: !noBuild, reporter: reporter)
            let source = try ImageSource(path: imagePath, expectedSHA256: image == nil ? hostFile.image.sha256 : nil)
            // Plain `dir` secrets need no age identity (as in the station).
            var needsIdentities = hostFile.secrets != nil
            if case .dir? = hostFile.secrets { needsIdentities = false }
            let bootstrap = try hostFile.bootstrap(identities: needsIdentities ? identity.identities() : [])
            let name = hostFile.name
            let flashTarget = try selectTarget(target, imageSize: source.uncompressedSize, name: name, json: output.json,
                                               reporter: reporter)
            job = FlashJob(
                image: source, target: flashTarget, host: name,
                injection: bootstrap.files.isEmpty ? nil : .bootstrap(bootstrap.files, root: hostFile.root),
                hostKeyFingerprint: bootstrap.hostKey?.fingerprint, knownHostsLine: bootstrap.knownHostsLine)
        } catch let error as PiflashError {
            try failEarly(error, json: output.json, host: host, image: image, device: target.device, output: target.output)
        }
        let result = runRecorded(job, command: "flash", journalPath: journal, hostName: hostFile.catalogName, reporter: reporter)
        try finish(result, json: output.json)
    }
}
