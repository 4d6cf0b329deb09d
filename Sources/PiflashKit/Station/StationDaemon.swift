import Foundation
import Glibc

/// How the station runs a prepared flash job and records it in the journal (the command layer's
/// `runRecorded`): given the job, the host's catalog name, the slot and the job's reporter.
public typealias StationJobRunner = @Sendable (_ job: FlashJob, _ hostName: String, _ slot: String, _ reporter: Reporter)
    -> FlashResult

/// The unattended station (piflash-station(8)): its event loop. Listens to udev, hands each card
/// that arrives in one of its slots to a ``CardJob`` on a dedicated thread, reaps the jobs, and
/// publishes everything on one ``StationStream`` that every view (terminal, log, JSON lines, state
/// file, systemd, web page) is fed from.
///
/// Not thread-safe itself: ``run()`` is called once, from one thread, and blocks until SIGTERM or
/// SIGINT (``Interrupts``), after which it lets running jobs stop safely and returns.
public final class StationDaemon: @unchecked Sendable {
    public let config: StationConfig
    /// The station's events; add views before ``run()``.
    public let stream: StationStream
    /// Every slot's status.
    public let board: SlotBoard
    /// The journal the station claims hosts in and records to.
    public let journal: Journal
    /// The hosts folder.
    public let catalog: HostCatalog
    /// The machine's host name.
    public let machine: String
    /// The station's name in the journal (`name`, else the machine's).
    public let name: String
    /// When the station was prepared.
    public let startedAt = Date()
    private let runJob: StationJobRunner
    private let rows: StationJournal
    private let preparation: JobPreparation
    private let provisioned: ProvisionedCheck
    private let finished = Locked<[String]>([])
    /// Slots whose job gave its card back to wait, and the seconds to wait before trying again.
    private let givenBack = Locked<[String: Double]>([:])
    private var pulse: StationPulse?

    // Owned by the event loop.
    private var tracker = CardTracker()
    private var running: [String: (thread: WorkerThread, syspath: String)] = [:]
    private var pending: [String: String] = [:]
    /// Cards (slot → syspath) left waiting: while the journal's database does not answer, or every
    /// host left in the queue is claimed; retried once the journal answers, not before `retryAt`.
    private var waitingCards: [String: (syspath: String, retryAt: Double)] = [:]

    /// Prepares the station: opens the journal and the hosts folder and checks every host the
    /// station file names, so a typo fails now rather than at the first card. The state file and
    /// systemd's notifications are already views of ``stream``.
    /// - Parameter journal: the journal the jobs record into (opened from the station file when nil).
    /// - Throws: ``PiflashError`` (exit 2) for a bad hosts folder or host file, (exit 1) when the
    ///   journal cannot be opened.
    /// This machine's host name (`gethostname`).
    public static var machineName: String {
        var name = [UInt8](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        return String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// The name a station with this file has in the journal: the file's `name`, else the machine's.
    public static func name(for config: StationConfig) -> String { config.name ?? machineName }

    /// How a station is shown and claims: `station@NAME`.
    public static func label(of name: String) -> String { "station@\(name)" }

    public init(config: StationConfig, journal: Journal? = nil, runJob: @escaping StationJobRunner) throws {
        self.config = config
        self.runJob = runJob
        let stream = StationStream()
        self.stream = stream
        catalog = try HostCatalog(directory: config.hosts)
        self.journal = try journal ?? Journal(path: Journal.defaultPath(explicit: config.journal))
        machine = Self.machineName
        self.name = Self.name(for: config)
        board = SlotBoard(slots: config.slots.map(\.name), stream: stream)
        rows = StationJournal(journal: self.journal, station: self.name, heartbeatTimeout: config.heartbeatTimeout)
        preparation = JobPreparation(config: config, catalog: catalog)
        provisioned = ProvisionedCheck(journal: self.journal, catalog: catalog, preparation: preparation)
        let named = Set(config.slots.compactMap(\.host) + config.queue)
        for host in named.sorted() { _ = try catalog.load(host) }
        stream.add(StationStateFileObserver(
            file: StationStatusFile(path: config.defaultStateFile()), board: board, config: config.path,
            startedAt: startedAt, warn: { stream.send(.warning($0)) }))
        stream.add(SystemdStatusObserver(board: board, slotCount: config.slots.count))
    }

    /// The journal claimant of a slot: stable across restarts, so a restarted station takes its
    /// own stale claims back.
    public func claimant(_ slot: SlotConfig) -> String { rows.claimant(slot.name) }

    /// Every slot's status, in station-file order.
    public var statuses: [SlotStatus] { board.statuses }

    /// Runs until SIGTERM or SIGINT: handles the cards present at start-up, then every arrival.
    /// On the signal it stops taking cards, lets the running jobs stop (each leaves its card
    /// unbootable and its journal entry failed), publishes the final state and returns.
    /// - Throws: ``PiflashError`` when udev cannot be listened to (at start, or later: then only
    ///   after the running jobs ended).
    public func run() throws {
        Interrupts.install()
        rows.releaseStaleClaims(slots: config.slots.map(\.name))
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
                stream.send(.note("slot \(slot.name): a card is present at start-up in \(disk.devnode)"))
                start(slot, syspath: syspath, live: live)
            }
        }
        stream.send(.station(.ready(config: config.path, slots: config.slots.map(\.name))))

        var monitorFailure: Error?
        while Interrupts.signal == nil {
            do {
                if let event = try monitor.next(timeout: 0.25) {
                    handle(event, live: live)
                }
            } catch {
                // No more events: take no new cards, let the running jobs finish, then fail.
                stream.send(.warning("udev cannot be listened to any more: \(error)"))
                monitorFailure = error
                break
            }
            reapFinished(live: live)
            resumeWaiting(live: live)
            stream.send(.tick)
        }

        let reason = monitorFailure != nil ? "udev failure" : Interrupts.signal == SIGINT ? "SIGINT" : "SIGTERM"
        stream.send(.station(.stopping(reason: reason, runningJobs: running.count)))
        pending.removeAll()
        waitingCards.removeAll()
        while !running.isEmpty {
            let done = finished.withLock { names in
                defer { names.removeAll() }
                return names
            }
            for slot in done {
                running[slot]?.thread.join()
                running[slot] = nil
            }
            stream.send(.tick)
            if !running.isEmpty {
                if monitorFailure == nil {
                    _ = try? monitor.next(timeout: 0.1)
                } else {
                    usleep(100_000)
                }
            }
        }
        flushJournalBeforeExit()
        stream.send(.tick)
        stream.send(.station(.stopped))
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
            board.cardRemoved(slot.name)
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
        let done = finished.withLock { names in
            defer { names.removeAll() }
            return names
        }
        let back = givenBack.withLock { delays in
            defer { delays.removeAll() }
            return delays
        }
        for name in done {
            running[name]?.thread.join()
            let syspath = running.removeValue(forKey: name)?.syspath
            if let syspath, let delay = back[name], (tracker.sizes[syspath] ?? 0) > 0 {
                waitingCards[name] = (syspath, monotonicSeconds() + delay)
            }
            if let syspath, (tracker.sizes[syspath] ?? 0) == 0 { board.verifiedCardGone(name) }
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
            board.failed(slot.name, reason: "the card vanished before it could be described: \(error)")
            return
        }
        guard disk.size > 0 else { return }
        if !journal.isAvailable {
            // No new card while the journal does not answer: it is taken when it does.
            waitingCards[slot.name] = (syspath, 0)
            board.waiting(slot.name, reason: StationJournal.unreachable(journal), device: disk.devnode)
            return
        }
        let decision: Decision
        do {
            decision = try live.decide(disk, policy: SafetyPolicy(maxSize: config.maxSize))
        } catch {
            board.failed(slot.name, reason: "\(error)")
            return
        }
        board.cardTaken(slot.name, disk: disk, host: slot.host)
        finished.withLock { $0.removeAll { $0 == slot.name } }
        let job = CardJob(slot: slot, disk: disk, decision: decision, config: config, board: board, stream: stream,
                          rows: rows, preparation: preparation, provisioned: provisioned, runJob: runJob)
        let thread = WorkerThread { [finished, givenBack] in
            if let delay = job.run() { givenBack.withLock { $0[slot.name] = delay } }
            finished.withLock { $0.append(slot.name) }
        }
        running[slot.name] = (thread, syspath)
    }

    // MARK: The shared journal

    /// Waiting cards are tried again once the journal answers and their delay has passed.
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
    /// most 5 s apart; it also writes what a lost connection kept back.
    private func startPulse() {
        let interval = min(max(config.heartbeatTimeout / 4, 0.5), 5)
        let claimants = config.slots.map(claimant)
        let heartbeat = StationHeartbeat(name: name, machine: machine, pid: getpid(), startedAt: startedAt, slots: "")
        let board = board
        let stream = stream
        let pulse = StationPulse(journal: journal, interval: interval, beat: {
            var beat = heartbeat
            beat.slots = JSONValue.array(board.statuses.map { .object($0.jsonFields) }).serialized()
            return (beat, claimants)
        }, changed: { reachable, error in
            stream.send(.journal(reachable: reachable, detail: error))
        })
        pulse.start()
        self.pulse = pulse
    }

    /// Records kept while the journal's database did not answer get `heartbeat_timeout` seconds
    /// (at most 60) more to be written before the station exits; what is still kept then is lost,
    /// loudly.
    private func flushJournalBeforeExit() {
        guard journal.pendingWrites > 0 else { return }
        pulse?.stop()
        pulse = nil
        let deadline = monotonicSeconds() + min(config.heartbeatTimeout, 60)
        stream.send(.note("\(journal.pendingWrites) journal record(s) wait for the database; retrying before exiting"))
        while journal.pendingWrites > 0 && monotonicSeconds() < deadline {
            if (try? journal.flushPending()) == 0 { break }
            usleep(500_000)
        }
        if journal.pendingWrites > 0 {
            stream.send(.warning("\(journal.pendingWrites) journal record(s) could not be written: \(journal.path) did not answer"))
        }
    }
}
