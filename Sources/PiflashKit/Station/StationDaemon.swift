import Foundation
import Glibc
import PiflashSecrets

/// How the station runs a prepared flash job and records it in the journal (the command layer's
/// `runRecorded`): given the job, the host's catalog name, the slot and the job's reporter.
public typealias StationJobRunner = @Sendable (_ job: FlashJob, _ hostName: String, _ slot: String, _ reporter: Reporter)
    -> FlashResult

/// The unattended station (piflash-station(8)): listens to udev, flashes each card that arrives in
/// one of its slots with the slot's host (fixed, or the next of the queue claimed in the journal),
/// one dedicated thread per running job, and publishes every slot's state.
///
/// Not thread-safe itself: ``run()`` is called once, from one thread, and blocks until SIGTERM or
/// SIGINT (``Interrupts``), after which it lets running jobs stop safely and returns.
public final class StationDaemon: @unchecked Sendable {
    /// How the state is shown on stdout.
    public enum Output: Sendable {
        /// One JSON object per line: `slot` events, the jobs' own events with `slot`, and a
        /// `result` per job.
        case json
        /// One line per slot, redrawn in place.
        case terminal
        /// A line whenever a slot changes state (a log, e.g. the journal of systemd).
        case log
    }

    public let config: StationConfig
    private let output: Output
    private let runJob: StationJobRunner
    private let catalog: HostCatalog
    private let journal: Journal
    private let statusFile: StationStatusFile
    private let notifier: SystemdNotifier
    private let events: JSONLinesReporter
    private let startedAt = Date()
    private let machine: String
    /// The station's name in the journal (`name`, else the machine's).
    private let stationName: String
    private var pulse: StationPulse?

    /// Shared between the event loop and the job threads.
    private struct Shared {
        var statuses: [String: SlotStatus] = [:]
        var dirty = true
        var finished: [String] = []
        /// Slots whose job gave its card back to wait (the journal stopped answering, or every host
        /// left in the queue is claimed), and how many seconds to wait before trying again.
        var giveBack: [(slot: String, delay: Double)] = []
    }
    private let shared: Locked<Shared>

    // Owned by the event loop.
    private var tracker = CardTracker()
    private var running: [String: (thread: WorkerThread, syspath: String)] = [:]
    private var pending: [String: String] = [:]
    /// Cards (slot → syspath) left waiting: while the journal's database does not answer, or every
    /// host left in the queue is claimed; retried once the journal answers, not before `retryAt`.
    private var waitingCards: [String: (syspath: String, retryAt: Double)] = [:]
    private var drawnLines = 0
    private var loggedLines: [String: String] = [:]
    private var lastStateWrite = 0.0

    /// Prepares the station: opens the journal and the hosts folder and checks every host the
    /// station file names, so a typo fails now rather than at the first card.
    /// - Parameter journal: the journal the jobs record into (opened from the station file when nil).
    /// - Throws: ``PiflashError`` (exit 2) for a bad hosts folder or host file, (exit 1) when the
    ///   journal cannot be opened.
    public init(config: StationConfig, output: Output, journal: Journal? = nil,
                runJob: @escaping StationJobRunner) throws {
        self.config = config
        self.output = output
        self.runJob = runJob
        catalog = try HostCatalog(directory: config.hosts)
        self.journal = try journal ?? Journal(path: Journal.defaultPath(explicit: config.journal))
        statusFile = StationStatusFile(path: config.defaultStateFile())
        notifier = SystemdNotifier()
        events = JSONLinesReporter(interval: 0.5)
        var name = [UInt8](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        machine = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
        stationName = config.name ?? machine
        var statuses: [String: SlotStatus] = [:]
        for slot in config.slots { statuses[slot.name] = SlotStatus(slot: slot.name) }
        shared = Locked(Shared(statuses: statuses))
        let named = Set(config.slots.compactMap(\.host) + config.queue)
        for host in named.sorted() { _ = try catalog.load(host) }
    }

    /// The journal claimant of a slot: stable across restarts, so a restarted station takes its
    /// own stale claims back.
    public func claimant(_ slot: SlotConfig) -> String { "station@\(stationName):\(slot.name)" }

    /// Runs until SIGTERM or SIGINT: handles the cards present at start-up, then every arrival.
    /// On the signal it stops taking cards, lets the running jobs stop (each leaves its card
    /// unbootable and its journal entry failed), writes the final state and returns.
    /// - Throws: ``PiflashError`` when udev cannot be listened to (at start, or later: then only
    ///   after the running jobs ended).
    public func run() throws {
        Interrupts.install()
        for slot in config.slots { try? journal.releaseClaims(claimant: claimant(slot)) }
        startPulse()
        defer { pulse?.stop() }
        let context = try UdevContext()
        // The monitor first: a card inserted while enumerating is not missed.
        let monitor = try UdevMonitor(context: context)
        let live = try LiveDisks(context: context)
        for disk in try live.all() {
            guard let slot = config.slot(for: disk.properties) else { continue }
            let syspath = "/sys" + (disk.devpath ?? "/block/\(disk.sysname)")
            tracker.seed(syspath: syspath, size: disk.size)
            if disk.size > 0 {
                note("slot \(slot.name): a card is present at start-up in \(disk.devnode)")
                start(slot, syspath: syspath, live: live)
            }
        }
        writeState(force: true)
        notifier.notify("READY=1")
        notifyStatus()
        if output == .json {
            events.event("station", [("state", "ready"), ("config", .string(config.path)),
                                     ("slots", .array(config.slots.map { .string($0.name) }))])
            for status in statuses { events.event("slot", status.jsonFields) }
        }

        var monitorFailure: Error?
        while Interrupts.signal == nil {
            do {
                if let event = try monitor.next(timeout: 0.25) {
                    handle(event, live: live)
                }
            } catch {
                // No more events: take no new cards, let the running jobs finish, then fail.
                warning("udev cannot be listened to any more: \(error)")
                monitorFailure = error
                break
            }
            reapFinished(live: live)
            resumeWaiting(live: live)
            refresh()
        }

        let signalName = monitorFailure != nil ? "udev failure" : Interrupts.signal == SIGINT ? "SIGINT" : "SIGTERM"
        notifier.notify("STOPPING=1")
        notifier.notify("STATUS=stopping on \(signalName): \(running.count) job(s) winding down")
        if output == .json {
            events.event("station", [("state", "stopping"), ("signal", .string(signalName)),
                                     ("running_jobs", .int(Int64(running.count)))])
        } else {
            note("\(signalName): no new cards; waiting for \(running.count) running job(s) to stop safely")
        }
        pending.removeAll()
        waitingCards.removeAll()
        while !running.isEmpty {
            for (slot, job) in running {
                let done = shared.withLock { $0.finished.contains(slot) }
                if done {
                    job.thread.join()
                    running[slot] = nil
                }
            }
            shared.withLock { state in state.finished.removeAll { running[$0] == nil } }
            refresh()
            if !running.isEmpty {
                if monitorFailure == nil {
                    _ = try? monitor.next(timeout: 0.1)
                } else {
                    usleep(100_000)
                }
            }
        }
        flushJournalBeforeExit()
        refresh(final: true)
        writeState(force: true, running: false)
        if output == .json { events.event("station", [("state", "stopped")]) }
        if let monitorFailure { throw monitorFailure }
    }

    // MARK: Events

    private func handle(_ event: UdevEvent, live: LiveDisks) {
        guard event.devtype == "disk", event.devpath.hasPrefix("/devices/") else { return }
        // Only the readers the station file allows: anything else is not even looked at.
        guard let slot = config.slot(for: event.properties) else { return }
        let change = tracker.observe(action: event.action, syspath: event.syspath, size: event.sizeBytes)
        switch change {
        case .none:
            return
        case .removed:
            waitingCards[slot.name] = nil
            if running[slot.name] != nil {
                // The job sees its own I/O errors; the slot shows the failure it reports.
                if pending[slot.name] == event.syspath { pending[slot.name] = nil }
                return
            }
            update(slot.name) { status in
                status.state = .idle
                status.device = nil
                status.host = nil
            }
        case .arrived:
            if running[slot.name] != nil {
                // A new card while the slot's job still winds down: handled when it ends.
                pending[slot.name] = event.syspath
                return
            }
            start(slot, syspath: event.syspath, live: live)
        }
    }

    private func reapFinished(live: LiveDisks) {
        let finished = shared.withLock { state in
            let names = state.finished
            state.finished.removeAll()
            return names
        }
        let givenBack = shared.withLock { state in
            let names = state.giveBack
            state.giveBack.removeAll()
            return names
        }
        for name in finished {
            running[name]?.thread.join()
            let syspath = running.removeValue(forKey: name)?.syspath
            if let syspath, let back = givenBack.last(where: { $0.slot == name }), (tracker.sizes[syspath] ?? 0) > 0 {
                waitingCards[name] = (syspath, monotonicSeconds() + back.delay)
            }
            // A verified card pulled before its thread was reaped: the slot is idle again. A failed
            // one keeps showing why it failed until the next card.
            if let syspath, (tracker.sizes[syspath] ?? 0) == 0 {
                update(name) { status in
                    if case .verified = status.state {
                        status.state = .idle
                        status.device = nil
                        status.host = nil
                    }
                }
            }
            if let syspath = pending.removeValue(forKey: name), let slot = config.slots.first(where: { $0.name == name }),
               (tracker.sizes[syspath] ?? 0) > 0 {
                start(slot, syspath: syspath, live: live)
            }
        }
    }

    private func start(_ slot: SlotConfig, syspath: String, live: LiveDisks) {
        guard Interrupts.signal == nil else { return }
        let disk: DiskDescription
        do {
            disk = try live.describe(syspath: syspath)
        } catch {
            update(slot.name) { $0.state = .failed(reason: "the card vanished before it could be described: \(error)") }
            return
        }
        guard disk.size > 0 else { return }
        if !journal.isAvailable {
            waitingCards[slot.name] = (syspath, 0)
            update(slot.name) { status in
                status.state = .waiting(reason: journalUnreachable)
                status.device = disk.devnode
            }
            return
        }
        let decision: Decision
        do {
            decision = try live.decide(disk, policy: SafetyPolicy(maxSize: config.maxSize))
        } catch {
            update(slot.name) { $0.state = .failed(reason: "\(error)") }
            return
        }
        update(slot.name) { status in
            status.device = disk.devnode
            status.host = slot.host
        }
        shared.withLock { $0.finished.removeAll { $0 == slot.name } }
        let thread = WorkerThread { [self] in
            runCard(slot, disk: disk, decision: decision)
            shared.withLock { $0.finished.append(slot.name) }
        }
        running[slot.name] = (thread, syspath)
    }

    // MARK: One card (on its own thread)

    private func runCard(_ slot: SlotConfig, disk: DiskDescription, decision: Decision) {
        if !decision.isCandidate {
            let error = refusal(disk, decision)
            recordFailure(slot, disk: disk, host: slot.host, image: nil, error: error)
            fail(slot, disk: disk, host: slot.host, error: error)
            return
        }
        if !config.reflash(slot), case .success(let previous) = alreadyProvisioned(slot, disk: disk, report: true) {
            update(slot.name) { status in
                status.state = .verified(alreadyProvisioned: true)
                status.host = previous.host
                status.journalID = previous.id
            }
            note("slot \(slot.name): \(disk.devnode) holds \(previous.host ?? "?") as flashed in journal entry "
                 + "\(previous.id ?? 0); not flashed again (reflash = false)")
            return
        }

        update(slot.name) { $0.state = .flashing(phase: "prepare", done: 0, total: nil, rate: 0) }
        var claimed: String?
        let hostName: String
        if let fixed = slot.host {
            hostName = fixed
        } else {
            do {
                guard let next = try journal.claimNextHost(queue: config.queue, claimant: claimant(slot),
                                                           staleAfter: config.heartbeatTimeout) else {
                    if let queue = try? journal.queueStatus(queue: config.queue, staleAfter: config.heartbeatTimeout),
                       !queue.claimed.isEmpty {
                        // Hosts are left, all being flashed: one comes back if its flash fails or its
                        // station stops heart-beating. The card waits for it.
                        update(slot.name) { status in
                            status.state = .waiting(reason: "every host left in the queue is being flashed; "
                                                    + "the card gets the first that comes back")
                        }
                        shared.withLock { $0.giveBack.append((slot.name, 1)) }
                        return
                    }
                    fail(slot, disk: disk, host: nil,
                         error: .failure("the queue is empty: every host of it was flashed successfully or is being flashed",
                                         hint: "add hosts to queue in the station file"))
                    return
                }
                claimed = next
                hostName = next
            } catch where !journal.isAvailable {
                // The claim may have been written before the answer was lost: give it back first
                // (kept in order until the database answers), then take the card again.
                try? journal.releaseClaims(claimant: claimant(slot))
                update(slot.name) { $0.state = .waiting(reason: journalUnreachable) }
                shared.withLock { $0.giveBack.append((slot.name, 0)) }
                return
            } catch {
                fail(slot, disk: disk, host: nil, error: error as? PiflashError ?? .failure("\(error)"))
                return
            }
        }
        defer {
            if let claimed { try? journal.releaseClaim(host: claimed, claimant: claimant(slot)) }
        }
        update(slot.name) { $0.host = hostName }

        let reporter = SlotReporter(slot: slot.name, station: self, forward: output == .json
            ? JSONLinesReporter(interval: 0.5, context: [("slot", .string(slot.name))]) : nil)
        let job: FlashJob
        var imagePath: String?
        do {
            let host = try catalog.load(hostName)
            for warning in host.warnings { reporter.warning(warning) }
            let path = try host.imagePath(runBuild: config.build, reporter: reporter)
            imagePath = path
            let source = try ImageSource(path: path, expectedSHA256: host.image.sha256)
            if let needed = source.uncompressedSize, needed > disk.size {
                throw PiflashError.refused(
                    "\(disk.devnode) (\(formatBytes(disk.size))) is smaller than the image (\(formatBytes(needed)))",
                    path: disk.devnode)
            }
            let bootstrap = try host.bootstrap(identities: identities(for: host))
            for mount in decision.autoMounts {
                reporter.note("unmounting \(mount.source) from \(mount.mountPoint)")
                try unmountFilesystem(at: mount.mountPoint)
            }
            try Interrupts.check("preparing \(hostName) for \(disk.devnode)")
            let target = FlashTarget(kind: .device, path: disk.devnode, model: disk.model, serial: disk.serial,
                                     byPath: disk.byPath, bus: disk.bus.rawValue, size: disk.size, eject: config.eject)
            job = FlashJob(image: source, target: target, host: host.name,
                           injection: bootstrap.files.isEmpty ? nil : .bootstrap(bootstrap.files, root: host.root),
                           hostKeyFingerprint: bootstrap.hostKey?.fingerprint, knownHostsLine: bootstrap.knownHostsLine)
        } catch {
            let failure = error as? PiflashError ?? .failure("\(error)")
            recordFailure(slot, disk: disk, host: hostName, image: imagePath, error: failure)
            fail(slot, disk: disk, host: hostName, error: failure)
            return
        }

        let result = runJob(job, hostName, slot.name, reporter)
        if output == .json {
            var fields: [(String, JSONValue)] = []
            if case .object(let pairs) = result.json { fields = pairs.filter { $0.0 != "event" } }
            events.event("result", [("slot", .string(slot.name))] + fields)
        }
        let entryID = (try? journal.entries(limit: 20))?.first { $0.slot == slot.name && $0.host == hostName }?.id
        update(slot.name) { status in
            status.state = result.ok ? .verified(alreadyProvisioned: false)
                : .failed(reason: result.error ?? "unknown error")
            status.journalID = entryID
        }
    }

    private var journalUnreachable: String {
        "the journal \(journal.path) does not answer; the card is taken when it does"
    }

    /// Records kept while the journal's database did not answer get `heartbeat_timeout` seconds
    /// (at most 60) more to be written before the station exits; what is still kept then is lost,
    /// loudly.
    private func flushJournalBeforeExit() {
        guard journal.pendingWrites > 0 else { return }
        pulse?.stop()
        pulse = nil
        let deadline = monotonicSeconds() + min(config.heartbeatTimeout, 60)
        note("\(journal.pendingWrites) journal record(s) wait for the database; retrying before exiting")
        while journal.pendingWrites > 0 && monotonicSeconds() < deadline {
            if (try? journal.flushPending()) == 0 { break }
            usleep(500_000)
        }
        if journal.pendingWrites > 0 {
            warning("\(journal.pendingWrites) journal record(s) could not be written: \(journal.path) did not answer")
        }
    }

    /// Waiting cards are tried again once the journal answers, nothing waits to be written, and
    /// their delay has passed.
    private func resumeWaiting(live: LiveDisks) {
        guard !waitingCards.isEmpty, journal.isAvailable else { return }
        let now = monotonicSeconds()
        for (name, card) in waitingCards.sorted(by: { $0.key < $1.key }) where card.retryAt <= now && running[name] == nil {
            waitingCards[name] = nil
            guard let slot = config.slots.first(where: { $0.name == name }), (tracker.sizes[card.syspath] ?? 0) > 0 else {
                continue
            }
            start(slot, syspath: card.syspath, live: live)
        }
    }

    /// Starts the heartbeat thread (``StationPulse``): four heartbeats per `heartbeat_timeout`, at
    /// most 5 s apart.
    private func startPulse() {
        let interval = min(max(config.heartbeatTimeout / 4, 0.5), 5)
        let claimants = config.slots.map(claimant)
        let name = stationName
        let machine = machine
        let started = startedAt
        let pulse = StationPulse(journal: journal, interval: interval, beat: { [unowned self] in
            let slots = JSONValue.array(self.statuses.map { .object($0.jsonFields) }).serialized()
            return (StationHeartbeat(name: name, machine: machine, pid: getpid(), startedAt: started, slots: slots), claimants)
        }, changed: { [unowned self] reachable, error in
            if reachable {
                self.note("the journal answers again: taking cards")
                if self.output == .json { self.events.event("journal", [("state", "reachable")]) }
            } else {
                self.warning("the journal does not answer (\(error ?? "")): no new cards; running jobs finish and "
                             + "are recorded when it answers again")
                if self.output == .json { self.events.event("journal", [("state", "unreachable")]) }
            }
            self.shared.withLock { $0.dirty = true }
        })
        pulse.start()
        self.pulse = pulse
    }

    /// The journal entry that shows the card in this slot was just provisioned, or why not.
    ///
    /// All must hold: the slot's newest journal entry is a success; the card has the device
    /// serial, by-path and size recorded there (a different card, or the same card after it was
    /// rewritten elsewhere, usually differs in size or fails the next check); and the card still
    /// holds exactly the files injected then (each file's digest — keyed for secret-derived
    /// content —, mode, uid and gid read back from the card's root filesystem equal the
    /// journal's). Anything unreadable means "no".
    func alreadyProvisioned(_ slot: SlotConfig, disk: DiskDescription, report: Bool = false)
        -> Result<JournalEntry, PiflashError>
    {
        func no(_ why: String) -> Result<JournalEntry, PiflashError> {
            if report { note("slot \(slot.name): \(disk.devnode) is flashed: \(why)") }
            return .failure(.failure(why))
        }
        let entries: [JournalEntry]
        do {
            entries = try journal.entries(limit: 200)
        } catch {
            return no("the journal cannot be read: \(error)")
        }
        guard let last = entries.first(where: { $0.slot == slot.name }) else {
            return no("the slot has no journal entry")
        }
        guard last.ok, let hostName = last.host else { return no("the slot's last job (entry \(last.id ?? 0)) failed") }
        guard last.deviceSize == disk.size, last.deviceSerial == disk.serial, last.deviceByPath == disk.byPath else {
            return no("the card's size, serial or by-path differ from journal entry \(last.id ?? 0)")
        }
        do {
            let host = try catalog.load(hostName)
            if last.files.isEmpty { return .success(last) }
            let files = try host.bootstrap(identities: identities(for: host)).files
            let root = try RootPartition.locate(on: disk.devnode, selector: host.root)
            // The card holds the files as rendered now (read back); the journal's records
            // describe them (keyed digests recomputed under the host's key, legacy plain ones by
            // SHA-256): then the card holds what was injected then.
            try InjectionVerifier.verify(files, root: root, on: disk.devnode)
            return last.files.count == files.count && zip(last.files, files).allSatisfy { $0.describes($1) }
                ? .success(last) : no("the files on the card differ from journal entry \(last.id ?? 0)")
        } catch {
            return no("the card does not hold \(hostName)'s files: \(error)")
        }
    }

    /// The age identities a host's secrets need: none for plain `dir` secrets or no secrets.
    private func identities(for host: HostFile) throws -> [AgeIdentity] {
        switch host.secrets {
        case nil, .dir?: return []
        case .sops?, .age?:
            return try AgeIdentity.load(explicitFile: config.ageIdentity, environment: ProcessInfo.processInfo.environment)
        }
    }

    private func recordFailure(_ slot: SlotConfig, disk: DiskDescription, host: String?, image: String?,
                               error: PiflashError) {
        let entry = JournalEntry(
            command: "station", host: host, slot: slot.name, devicePath: disk.devnode, deviceModel: disk.model,
            deviceSerial: disk.serial, deviceByPath: disk.byPath, deviceSize: disk.size, imagePath: image ?? "",
            ok: false, error: error.description, exitCode: error.status.rawValue)
        do {
            _ = try journal.record(entry)
        } catch {
            warning("slot \(slot.name): the journal cannot be written: \(error)")
        }
    }

    private func fail(_ slot: SlotConfig, disk: DiskDescription, host: String?, error: PiflashError) {
        update(slot.name) { status in
            status.state = .failed(reason: error.message)
            status.host = host
        }
        if output == .json {
            var result = FlashResult()
            result.host = host
            result.device = disk.devnode
            result.fail(error)
            var fields: [(String, JSONValue)] = []
            if case .object(let pairs) = result.json { fields = pairs.filter { $0.0 != "event" } }
            events.event("result", [("slot", .string(slot.name))] + fields)
        }
    }

    // MARK: State

    /// Changes a slot's status (from any thread); a change of state emits a `slot` event at once.
    func update(_ slot: String, _ change: (inout SlotStatus) -> Void) {
        let (before, after) = shared.withLock { state -> (SlotStatus?, SlotStatus?) in
            guard var status = state.statuses[slot] else { return (nil, nil) }
            let before = status
            change(&status)
            if status.state.name != before.state.name { status.since = Date() }
            state.statuses[slot] = status
            state.dirty = true
            return (before, status)
        }
        guard let before, let after, output == .json else { return }
        let progressOnly: Bool
        if case .flashing(let phase, _, _, _) = after.state, case .flashing(let old, _, _, _) = before.state,
           phase == old, after.host == before.host {
            progressOnly = true
        } else {
            progressOnly = false
        }
        if !progressOnly || slotEventDue(slot) {
            events.event("slot", after.jsonFields)
        }
    }

    private let lastSlotEvent = Locked<[String: Double]>([:])

    private func slotEventDue(_ slot: String) -> Bool {
        let now = monotonicSeconds()
        return lastSlotEvent.withLock { last in
            if now - (last[slot] ?? 0) < 0.5 { return false }
            last[slot] = now
            return true
        }
    }

    /// Every slot's status, in station-file order.
    public var statuses: [SlotStatus] {
        shared.withLock { state in config.slots.compactMap { state.statuses[$0.name] } }
    }

    private func refresh(final: Bool = false) {
        let dirty = shared.withLock { state in
            let was = state.dirty
            state.dirty = false
            return was
        }
        guard dirty || final else { return }
        let current = statuses
        switch output {
        case .json:
            break
        case .terminal:
            var text = drawnLines > 0 ? "\u{1B}[\(drawnLines)F" : ""
            for status in current { text += "\u{1B}[2K" + status.line + "\n" }
            drawnLines = current.count
            writeAll(text, to: STDOUT_FILENO)
        case .log:
            for status in current {
                let key = status.state.name + (status.host ?? "") + (status.device ?? "")
                if loggedLines[status.slot] != key {
                    loggedLines[status.slot] = key
                    writeAll(status.line + "\n", to: STDOUT_FILENO)
                }
            }
        }
        writeState(force: final)
        notifyStatus()
    }

    private func writeState(force: Bool, running: Bool = true) {
        let now = monotonicSeconds()
        guard force || now - lastStateWrite >= 0.5 else {
            shared.withLock { $0.dirty = true }
            return
        }
        lastStateWrite = now
        let snapshot = StationStatusFile.Snapshot(pid: getpid(), config: config.path, startedAt: startedAt,
                                                  updatedAt: Date(), running: running, slots: statuses)
        do {
            try statusFile.write(snapshot)
        } catch {
            if force { warning("\(error)") }
        }
    }

    private func notifyStatus() {
        guard notifier.isActive else { return }
        let busy = statuses.filter { if case .flashing = $0.state { true } else { false } }.count
        notifier.notify("STATUS=\(busy) of \(config.slots.count) slot(s) flashing")
    }

    func note(_ message: String) {
        switch output {
        case .json: events.note(message)
        case .log: writeAll(message + "\n", to: STDOUT_FILENO)
        case .terminal: break
        }
    }

    func warning(_ message: String) {
        switch output {
        case .json: events.warning(message)
        default: writeAll("warning: " + message + "\n", to: STDERR_FILENO)
        }
    }
}

/// A job's reporter inside the station: turns its phases and progress into the slot's state,
/// and forwards everything (with `slot`) in JSON mode.
final class SlotReporter: Reporter, @unchecked Sendable {
    private let slot: String
    private unowned let station: StationDaemon
    private let forward: Reporter?
    private let started = Locked<[String: Double]>([:])

    init(slot: String, station: StationDaemon, forward: Reporter?) {
        self.slot = slot
        self.station = station
        self.forward = forward
    }

    func begin(_ phase: String, total: UInt64?) {
        started.withLock { $0[phase] = monotonicSeconds() }
        station.update(slot) { $0.state = .flashing(phase: phase, done: 0, total: total, rate: 0) }
        forward?.begin(phase, total: total)
    }

    func progress(_ phase: String, done: UInt64, total: UInt64?) {
        let begun = started.withLock { $0[phase] } ?? monotonicSeconds()
        let rate = Double(done) / max(monotonicSeconds() - begun, 1e-6)
        station.update(slot) { $0.state = .flashing(phase: phase, done: done, total: total, rate: rate) }
        forward?.progress(phase, done: done, total: total)
    }

    func end(_ phase: String, bytes: UInt64, seconds: Double) {
        forward?.end(phase, bytes: bytes, seconds: seconds)
    }

    func note(_ message: String) { forward?.note(message) }

    func warning(_ message: String) {
        if let forward { forward.warning(message) } else { station.warning("slot \(slot): \(message)") }
    }

    func event(_ name: String, _ fields: [(String, JSONValue)]) { forward?.event(name, fields) }
}
