import Foundation

/// Whether the card in a slot was just provisioned there, so the station leaves it alone
/// (`reflash = false`).
///
/// All must hold: the slot's newest journal entry is a success; the card has the device serial,
/// by-path and size recorded there (a different card, or the same card after it was rewritten
/// elsewhere, usually differs in size or fails the next check); and the card still holds exactly
/// the files injected then (each file's SHA-256, mode, uid and gid read back from the card's root
/// filesystem equal the journal's). Anything unreadable means "no".
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
            let host = try catalog.load(hostName)
            if last.files.isEmpty { return .success(last) }
            let files = try host.bootstrap(identities: preparation.identities(for: host)).files
            let root = try RootPartition.locate(on: disk.devnode, selector: host.root)
            let onCard = try InjectionVerifier.verify(files, root: root, on: disk.devnode)
            return onCard == last.files ? .success(last)
                : no("the files on the card differ from journal entry \(last.id ?? 0)")
        } catch {
            return no("the card does not hold \(hostName)'s files: \(error)")
        }
    }
}
