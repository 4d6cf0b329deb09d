import Foundation
import PiflashKit

/// Runs a flash job and records it in the journal: a row when it starts (so a crash leaves an
/// "unfinished" attempt behind) and its outcome when it ends. A journal that cannot be written is a
/// loud warning, not a failed flash: the card's state was proven by reading it back.
///
/// `opened` is a journal the caller keeps open (the station's, which writes what a lost PostgreSQL
/// connection kept back once the server answers again); without it the journal at `journalPath`
/// is opened for this job, and what it had to keep back is retried for a while before giving up.
func runRecorded(
    _ job: FlashJob, command: String, journalPath: String?, journal opened: Journal? = nil, hostName: String? = nil,
    slot: String? = nil, station: String? = nil, reporter: Reporter
) -> FlashResult {
    let journal: Journal?
    if let opened {
        journal = opened
    } else {
        do {
            journal = try Journal(path: Journal.defaultPath(explicit: journalPath))
        } catch {
            reporter.warning("the journal cannot be opened, this attempt is not recorded: \(error)")
            journal = nil
        }
    }
    var entry = JournalEntry(
        command: command, host: hostName ?? job.host, slot: slot, station: station,
        devicePath: job.target.kind == .device ? job.target.path : nil, deviceModel: job.target.model,
        deviceSerial: job.target.serial, deviceByPath: job.target.byPath, deviceSize: job.target.size,
        outputPath: job.target.kind == .output ? job.target.path : nil, imagePath: job.image.path)
    if let journal {
        do {
            entry.id = try journal.begin(entry)
        } catch {
            reporter.warning("the journal cannot be written, this attempt is not recorded: \(error)")
        }
    }
    let result = job.run(reporter: reporter)
    guard let journal, entry.id != nil else { return result }
    entry.finishedAt = Date()
    entry.imageSHA256 = result.imageSHA256
    entry.bytes = result.bytes
    entry.writeSeconds = result.writeSeconds
    entry.verifySeconds = result.verifySeconds
    entry.injectSeconds = result.injectSeconds
    entry.writeRate = result.writeRate
    entry.verifyRate = result.verifyRate
    entry.files = result.files
    entry.injectedBlocks = result.injectedBlocks
    entry.imageBytes = result.imageBytes
    entry.mappedBytes = result.mappedBytes
    entry.writtenRanges = result.writtenRanges
    entry.hostKeyFingerprint = result.hostKeyFingerprint
    entry.ok = result.ok
    entry.error = result.error
    entry.exitCode = result.exitCode
    do {
        try journal.finish(entry)
    } catch {
        reporter.warning("the journal cannot be written, this attempt's outcome is not recorded: \(error)")
    }
    if opened == nil && journal.pendingWrites > 0 {
        reporter.warning("the journal's database is unreachable: retrying for up to 60 s to record this attempt")
        let deadline = monotonicSeconds() + 60
        var remaining = journal.pendingWrites
        while remaining > 0 && monotonicSeconds() < deadline {
            usleep(1_000_000)
            remaining = (try? journal.flushPending()) ?? journal.pendingWrites
        }
        if remaining > 0 {
            reporter.warning("the journal's database is still unreachable: this attempt is not recorded")
        }
    }
    return result
}
