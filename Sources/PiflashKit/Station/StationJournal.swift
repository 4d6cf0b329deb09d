import Foundation

/// The station's rows in the journal: who claims (a stable claimant per slot, so a restarted
/// station takes its own stale claims back), claiming and releasing queue hosts, failures that
/// never reached a flash job, and the entry a job left behind.
struct StationJournal: Sendable {
    let journal: Journal
    /// The station's name (the station file's `name`, else the machine's host name), part of every
    /// claimant.
    let station: String
    /// Seconds without a heartbeat after which another station's claims are stale.
    let heartbeatTimeout: Double

    /// The reason a card waits while the journal's database does not answer.
    static func unreachable(_ journal: Journal) -> String {
        "the journal \(journal.path) does not answer; the card is taken when it does"
    }

    /// `station@NAME:slot`.
    func claimant(_ slot: String) -> String { StationDaemon.label(of: station) + ":" + slot }

    /// Gives back every claim a slot held when the station last stopped.
    func releaseStaleClaims(slots: [String]) {
        for slot in slots { try? journal.releaseClaims(claimant: claimant(slot)) }
    }

    /// The next queue host for the slot, claimed atomically; nil when the queue is done.
    func claimNextHost(queue: [String], slot: String) throws -> String? {
        try journal.claimNextHost(queue: queue, claimant: claimant(slot), staleAfter: heartbeatTimeout)
    }

    /// Whether hosts are left in the queue that are all being flashed (claimed) right now: one
    /// comes back if its flash fails or its station stops heart-beating.
    func queueHasClaimedHosts(queue: [String]) -> Bool {
        guard let status = try? journal.queueStatus(queue: queue, staleAfter: heartbeatTimeout) else { return false }
        return !status.claimed.isEmpty
    }

    /// Gives back every claim the slot holds (a claim may have been written before the answer to
    /// it was lost).
    func releaseAll(slot: String) {
        try? journal.releaseClaims(claimant: claimant(slot))
    }

    /// Gives a claimed host back (its flash ended; a host without a successful flash goes back
    /// to the queue).
    func release(host: String, slot: String) {
        try? journal.releaseClaim(host: host, claimant: claimant(slot))
    }

    /// Records a card that failed before a flash job ran (refused, unpreparable).
    /// - Throws: when the journal cannot be written.
    func recordFailure(slot: String, disk: DiskDescription, host: String?, image: String?, error: PiflashError) throws {
        let entry = JournalEntry(
            command: "station", host: host, slot: slot, station: station, devicePath: disk.devnode, deviceModel: disk.model,
            deviceSerial: disk.serial, deviceByPath: disk.byPath, deviceSize: disk.size, imagePath: image ?? "",
            ok: false, error: error.description, exitCode: error.status.rawValue)
        _ = try journal.record(entry)
    }

    /// The id of the newest entry of this slot and host (the job just recorded it).
    func latestEntryID(slot: String, host: String) -> Int64? {
        (try? journal.entries(limit: 20))?.first { $0.slot == slot && $0.host == host && ($0.station ?? station) == station }?.id
    }
}
