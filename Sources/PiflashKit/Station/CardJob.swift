import Foundation

/// One card in one slot, on its own thread: refused, left alone (just provisioned), or given a
/// host (fixed, or claimed from the queue), prepared, flashed through the station's job runner,
/// and its outcome put on the slot.
struct CardJob: Sendable {
    let slot: SlotConfig
    let disk: DiskDescription
    let decision: Decision
    let config: StationConfig
    let board: SlotBoard
    let stream: StationStream
    let rows: StationJournal
    let preparation: JobPreparation
    let provisioned: ProvisionedCheck
    let runJob: StationJobRunner

    /// - Returns: nil when the card's job is over; else the seconds after which the event loop
    ///   should take the card again (it waits: the journal does not answer, or every host left in
    ///   the queue is being flashed elsewhere).
    func run() -> Double? {
        if !decision.isCandidate {
            let error = refusal(disk, decision)
            recordFailure(host: slot.host, image: nil, error: error)
            fail(host: slot.host, error: error)
            return nil
        }
        if !config.reflash(slot) {
            switch provisioned.check(slot: slot.name, disk: disk) {
            case .success(let previous):
                board.verified(slot.name, host: previous.host, journalID: previous.id, alreadyProvisioned: true)
                stream.send(.note("slot \(slot.name): \(disk.devnode) holds \(previous.host ?? "?") as flashed in journal "
                                  + "entry \(previous.id ?? 0); not flashed again (reflash = false)"))
                return nil
            case .failure(let why):
                stream.send(.note("slot \(slot.name): \(disk.devnode) will be flashed: \(why.message)"))
            }
        }

        board.preparing(slot.name)
        var claimed: String?
        let hostName: String
        if let fixed = slot.host {
            hostName = fixed
        } else {
            do {
                guard let next = try rows.claimNextHost(queue: config.queue, slot: slot.name) else {
                    if rows.queueHasClaimedHosts(queue: config.queue) {
                        // Hosts are left, all being flashed: one comes back if its flash fails or its
                        // station stops heart-beating. The card waits for it.
                        board.waiting(slot.name, reason: "every host left in the queue is being flashed; "
                                      + "the card gets the first that comes back")
                        return 1
                    }
                    fail(host: nil,
                         error: .failure("the queue is empty: every host of it was flashed successfully or is being flashed",
                                         hint: "add hosts to queue in the station file"))
                    return nil
                }
                claimed = next
                hostName = next
            } catch where !rows.journal.isAvailable {
                // The claim may have been written before the answer was lost: give it back first
                // (kept in order until the database answers), then take the card again.
                rows.releaseAll(slot: slot.name)
                board.waiting(slot.name, reason: StationJournal.unreachable(rows.journal))
                return 0
            } catch {
                fail(host: nil, error: error as? PiflashError ?? .failure("\(error)"))
                return nil
            }
        }
        defer {
            if let claimed { rows.release(host: claimed, slot: slot.name) }
        }
        board.hostAssigned(slot.name, host: hostName)

        let reporter = SlotReporter(slot: slot.name, board: board, stream: stream)
        let job: FlashJob
        var imagePath: String?
        do {
            job = try preparation.prepare(host: hostName, disk: disk, decision: decision, reporter: reporter,
                                          imagePath: &imagePath)
        } catch {
            let failure = error as? PiflashError ?? .failure("\(error)")
            recordFailure(host: hostName, image: imagePath, error: failure)
            fail(host: hostName, error: failure)
            return nil
        }

        let result = runJob(job, hostName, slot.name, reporter)
        stream.send(.result(slot: slot.name, result))
        let entryID = rows.latestEntryID(slot: slot.name, host: hostName)
        if result.ok {
            board.verified(slot.name, host: nil, journalID: entryID, alreadyProvisioned: false)
        } else {
            board.failed(slot.name, reason: result.error ?? "unknown error", journalID: .some(entryID))
        }
        return nil
    }

    private func recordFailure(host: String?, image: String?, error: PiflashError) {
        do {
            try rows.recordFailure(slot: slot.name, disk: disk, host: host, image: image, error: error)
        } catch {
            stream.send(.warning("slot \(slot.name): the journal cannot be written: \(error)"))
        }
    }

    private func fail(host: String?, error: PiflashError) {
        board.failed(slot.name, reason: error.message, host: .some(host))
        var result = FlashResult()
        result.host = host
        result.device = disk.devnode
        result.fail(error)
        stream.send(.result(slot: slot.name, result))
    }
}
