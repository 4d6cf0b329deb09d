import Foundation
import PiflashSecrets

/// Whether the card in a slot was just provisioned there, so the station leaves it alone
/// (`reflash = false`).
///
/// All must hold: the slot's newest journal entry is a success; the card has the device serial,
/// by-path and size recorded there (a different card, or the same card after it was rewritten
/// elsewhere, usually differs in size or fails the next check); and every block the injection
/// wrote then still matches its recorded digest (the card map of `verify --host`). An entry
/// recorded before card maps existed is checked by its files instead: each file's digest — keyed
/// for secret-derived content, plain for old entries —, mode, uid and gid read back from the card's
/// root filesystem equal the journal's. Anything unreadable means "no".
struct ProvisionedCheck: Sendable {
    let journal: Journal
    let catalog: HostCatalog
    let preparation: JobPreparation

    /// The journal entry that shows the card was just provisioned in `slot`, or why not.
    func check(slot: String, disk: DiskDescription) -> Result<JournalEntry, PiflashError> {
        func no(_ why: String) -> Result<JournalEntry, PiflashError> { .failure(.failure(why)) }
        let entries: [JournalEntry]
        do {
            entries = try journal.entries(limit: 200)
        } catch {
            return no("the journal cannot be read: \(error)")
        }
        guard let last = entries.first(where: { $0.slot == slot }) else {
            return no("the slot has no journal entry")
        }
        guard last.ok, let hostName = last.host else { return no("the slot's last job (entry \(last.id ?? 0)) failed") }
        guard last.deviceSize == disk.size, last.deviceSerial == disk.serial, last.deviceByPath == disk.byPath else {
            return no("the card's size, serial or by-path differ from journal entry \(last.id ?? 0)")
        }
        do {
            // The same map `piflash verify --host` checks: every block the injection wrote still
            // holds what its digest says.
            if !last.injectedBlocks.isEmpty {
                var key: DigestKey?
                if last.injectedBlocks.contains(where: \.keyed) {
                    let host = try catalog.load(hostName)
                    key = host.digestKey(secrets: try HostSecrets.load(for: host, identities: preparation.ageIdentities))
                }
                let card = try DeviceFile(path: disk.devnode, mode: .read, direct: true)
                let bad = try InjectedBlocks.firstMismatch(last.injectedBlocks, on: card, key: key)
                try card.close()
                if let bad { return no("the block at byte \(bad.offset) differs from journal entry \(last.id ?? 0)") }
                return .success(last)
            }
            // An entry from before card maps: the files as rendered now, read back from the card, are
            // the ones the journal describes (keyed digests recomputed under the host's key, legacy
            // plain ones by SHA-256).
            if last.files.isEmpty { return .success(last) }
            let host = try catalog.load(hostName)
            let files = try host.bootstrap(secrets: HostSecrets.load(for: host, identities: preparation.ageIdentities)).files
            let root = try RootPartition.locate(on: disk.devnode, selector: host.root)
            try InjectionVerifier.verify(files, root: root, on: disk.devnode)
            return last.files.count == files.count && zip(last.files, files).allSatisfy { $0.describes($1) }
                ? .success(last) : no("the files on the card differ from journal entry \(last.id ?? 0)")
        } catch {
            return no("the card does not hold \(hostName)'s files: \(error)")
        }
    }
}
