#if canImport(Glibc)
import Glibc
#endif
import PiflashPlatform

/// What the write and flash commands ask for: see ``resolveTarget(_:reporter:prompt:)``.
public struct TargetRequest: Sendable {
    /// `--device`: a device node or a link to one. Nil: find the card.
    public var device: String?
    /// The uncompressed image size, when known: smaller disks are refused.
    public var imageSize: UInt64?
    /// `--max-size`: larger disks are refused.
    public var maxSize: UInt64
    /// `--wait`: how long to wait for a card to be inserted when none is there (0: do not wait;
    /// `.infinity`: until one is inserted or the user presses Ctrl-C — the default on a terminal).
    public var waitSeconds: Double
    /// What the card is for, in the waiting line ("insert a card for bastet…"): the host, or the image.
    public var cardFor: String?
    /// `--yes`: do not ask for confirmation.
    public var assumeYes: Bool

    public init(device: String? = nil, imageSize: UInt64? = nil, maxSize: UInt64 = SafetyPolicy.defaultMaxSize,
                waitSeconds: Double = 0, assumeYes: Bool = false, cardFor: String? = nil) {
        self.device = device
        self.imageSize = imageSize
        self.maxSize = maxSize
        self.waitSeconds = waitSeconds
        self.assumeYes = assumeYes
        self.cardFor = cardFor
    }

    public var policy: SafetyPolicy { SafetyPolicy(maxSize: maxSize, imageSize: imageSize) }
}

/// How the resolver talks with the person at the keyboard.
public protocol TargetPrompt {
    /// Whether there is someone to ask (a terminal).
    var isInteractive: Bool { get }
    /// Lets the person pick one of several candidates; nil when they pick none.
    func choose(_ candidates: [DiskDescription]) throws -> DiskDescription?
    /// Asks whether to overwrite this disk, after showing `summary`.
    func confirm(_ disk: DiskDescription, summary: [String]) throws -> Bool
}

/// Asks on the controlling terminal (`/dev/tty`), so it works while stdout carries `--json`
/// and stdin carries something else. Without a controlling terminal it is not interactive.
public final class TerminalPrompt: TargetPrompt {
    private let fd: Int32

    /// Opens `/dev/tty`; when that fails (a service, a pipe, CI) the prompt is not interactive.
    public init(path: String = "/dev/tty") {
        fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY)
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    public var isInteractive: Bool { fd >= 0 }

    /// Writes the question and reads one line; nil at end of input or when Ctrl-C (SIGINT or
    /// SIGTERM, see ``Interrupts``) ends the wait — whichever thread the signal reached.
    private func ask(_ question: String) -> String? {
        guard fd >= 0 else { return nil }
        writeAll(question, to: fd)
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            if Interrupts.signal != nil { return nil }
            var descriptors = [
                pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: Interrupts.descriptor, events: Int16(POLLIN), revents: 0),
            ]
            if poll(&descriptors, 2, -1) < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if descriptors[1].revents != 0 { return nil }
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            if byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        return String(decoding: line, as: UTF8.self).trimmingSpaces()
    }

    public func choose(_ candidates: [DiskDescription]) throws -> DiskDescription? {
        var text = "Several cards could be written:\n"
        for (index, disk) in candidates.enumerated() {
            text += "  \(index + 1)) " + disk.oneLine + "\n"
        }
        while true {
            guard let answer = ask(text + "Which one (1-\(candidates.count), empty to cancel)? ") else { return nil }
            if answer.isEmpty { return nil }
            if let number = Int(answer), (1...candidates.count).contains(number) { return candidates[number - 1] }
            if let disk = candidates.first(where: { $0.devnode == answer || $0.sysname == answer }) { return disk }
            text = "Please answer with a number from the list.\n"
        }
    }

    public func confirm(_ disk: DiskDescription, summary: [String]) throws -> Bool {
        let text = summary.joined(separator: "\n") + "\nEverything on \(disk.devnode) will be overwritten. Type yes to continue: "
        return ask(text)?.lowercased() == "yes"
    }
}

/// Finds, checks and prepares the disk to write, the way SPEC step 2 says:
///
/// 1. With `request.device`: describe that device and decide; a refused device throws
///    ``PiflashError`` `.refused` (exit 3) listing every reason.
/// 2. Without: survey the whole disks; one candidate is taken; several are offered to choose
///    from on the terminal (no terminal: a `.usage` error listing them, exit 2); none: wait up to
///    `request.waitSeconds` for a udev `add` event, or a `change` event whose size went from 0
///    to N (a card inserted into a reader), that yields a candidate (nothing: `.failure`, exit 1).
/// 3. Show model, serial, size, bus, by-path and the current partitions, and unless
///    `request.assumeYes` ask for confirmation on `/dev/tty` (no terminal: `.refused` with a hint
///    to pass `--yes`; answered no: `.refused`).
/// 4. Decide again with fresh mounts, unmount the auto-mounted filesystems (under `/media`,
///    `/run/media`, `/mnt`), check nothing on it is mounted any more.
///
/// Reporter: notes for the human, and a `target` event (the disk's JSON fields) in `--json`.
///
/// - Returns: the disk as it is after unmounting.
/// - Throws: ``PiflashError`` as above, or for udev/mount failures.
public func resolveTarget(_ request: TargetRequest, reporter: any Reporter, prompt: any TargetPrompt = TerminalPrompt())
    throws -> DiskDescription
{
    let live = try LiveDisks()
    let policy = request.policy
    var disk: DiskDescription

    if let path = request.device {
        disk = try live.describe(path: path)
        let decision = try live.decide(disk, policy: policy)
        guard decision.isCandidate else { throw refusal(disk, decision) }
    } else {
        // Listen before looking, so a card inserted in between is not missed.
        let monitor = request.waitSeconds > 0 ? try UdevMonitor(context: live.context) : nil
        try Interrupts.check("looking for a card")
        let surveyed = try live.survey(policy)
        let candidates = surveyed.filter(\.decision.isCandidate).map(\.disk)
        switch candidates.count {
        case 1:
            disk = candidates[0]
        case 0:
            guard let monitor else {
                throw PiflashError.failure(
                    "no SD card found", hint: "insert one, pass --wait SECONDS to wait for it, or see why each disk is refused with `piflash devices --all`")
            }
            // A card already in a reader but refused (locked, too small) is why we wait: say so.
            for entry in surveyed where !entry.decision.candidateBecause.isEmpty && entry.disk.size > 0 {
                reporter.note("the card in \(entry.disk.readerDescription) is refused (\(entry.decision.summary))")
            }
            disk = try waitForCard(monitor: monitor, live: live, policy: policy, seconds: request.waitSeconds,
                                   cardFor: request.cardFor, reporter: reporter)
        default:
            guard prompt.isInteractive else {
                throw PiflashError.usage(
                    "several cards could be written: " + candidates.map(\.oneLine).joined(separator: "; "),
                    hint: "choose one with --device")
            }
            guard let chosen = try prompt.choose(candidates) else {
                try Interrupts.check("choosing a card (nothing was written)")
                throw PiflashError.refused("no card was chosen")
            }
            disk = chosen
        }
    }

    // The description is shown once: with the question when there is one, else as notes (a log
    // of a `--yes` run still says which card it wrote).
    let summary = disk.summaryLines
    let asking = !request.assumeYes && prompt.isInteractive
    if !asking {
        for line in summary { reporter.note(line) }
    }
    reporter.event("target", disk.jsonFields(includeProperties: false))
    if !request.assumeYes {
        guard asking else {
            throw PiflashError.refused("not writing to \(disk.devnode) without confirmation: there is no terminal to ask on",
                                       path: disk.devnode, hint: "pass --yes to write without asking")
        }
        guard try prompt.confirm(disk, summary: summary) else {
            try Interrupts.check("asking for confirmation (\(disk.devnode) was left untouched)")
            throw PiflashError.refused("not confirmed: \(disk.devnode) was left untouched", path: disk.devnode)
        }
    }

    // The world may have moved while the person was reading: the same medium must still be
    // there (a new card bumps DISKSEQ), then decide again and unmount.
    let confirmed = disk
    disk = try live.describe(syspath: "/sys" + (disk.devpath ?? "/class/block/\(disk.sysname)"))
    if disk.size != confirmed.size || disk.properties["DISKSEQ"] != confirmed.properties["DISKSEQ"]
        || disk.serial != confirmed.serial
    {
        throw PiflashError.refused("the card in \(disk.devnode) changed while waiting for confirmation", path: disk.devnode,
                                   hint: "run the command again")
    }
    let decision = try live.decide(disk, policy: policy)
    guard decision.isCandidate else { throw refusal(disk, decision) }
    for mount in decision.autoMounts {
        reporter.note("unmounting \(mount.source) from \(mount.mountPoint)")
        try unmountFilesystem(at: mount.mountPoint)
    }
    if !decision.autoMounts.isEmpty {
        disk = try live.describe(syspath: "/sys" + (disk.devpath ?? "/class/block/\(disk.sysname)"))
        let after = try live.decide(disk, policy: policy)
        guard after.isCandidate, after.autoMounts.isEmpty else {
            let still = after.autoMounts.map(\.mountPoint).joined(separator: ", ")
            throw PiflashError.refused("\(disk.devnode) is still mounted (\(still))", path: disk.devnode,
                                       hint: "unmount it and try again")
        }
    }
    return disk
}

/// The `.refused` error for a disk the policy refuses, with every reason.
public func refusal(_ disk: DiskDescription, _ decision: Decision) -> PiflashError {
    var hint: String? = nil
    if decision.reasons.contains(where: { if case .notCandidate = $0 { true } else { false } }) {
        hint = "if it really is a card, tag it with a udev rule setting ENV{PIFLASH_CANDIDATE}=\"1\" (see udev-rules/60-piflash.rules)"
    } else if decision.reasons.contains(.readOnly(bus: disk.bus)), disk.bus != .loop {
        hint = "slide the card's lock switch away from LOCK and reinsert it"
    } else if decision.reasons.contains(where: { if case .tooLarge = $0 { true } else { false } }) {
        hint = "if you are sure, raise the limit with --max-size"
    }
    return PiflashError.refused(
        "\(disk.devnode) (\(disk.displayName)) is refused: " + decision.reasons.map(\.description).joined(separator: "; "),
        path: disk.devnode, hint: hint)
}

/// Waits on the udev monitor for a card: an `add` of a whole disk, or a `change` that gives it a
/// size (a reader announcing a new medium). Events with a bogus device path (`/sdb`) and
/// partitions are ignored; a disk that appears but is refused is reported once. Says first what
/// it waits for ("insert a card for bastet… (Ctrl-C to stop)") and then which reader the card
/// appeared in.
///
/// - Parameters:
///   - seconds: the longest wait; `.infinity` waits until a card comes or a signal ends it.
///   - cardFor: the host or image the card is for, for the waiting line.
/// - Throws: ``PiflashError`` `.failure` when the time runs out or SIGINT/SIGTERM ends the wait.
func waitForCard(monitor: UdevMonitor, live: LiveDisks, policy: SafetyPolicy, seconds: Double, cardFor: String?,
                 reporter: any Reporter) throws -> DiskDescription
{
    let limited = seconds.isFinite
    reporter.note(
        "insert a card" + (cardFor.map { " for \($0)" } ?? "") + "… ("
            + (limited ? "waiting up to \(formatDuration(seconds)); " : "") + "Ctrl-C to stop)")
    reporter.event("waiting", [("seconds", limited ? .double(seconds) : .null), ("for", .string(cardFor))])
    let deadline = monotonicSeconds() + seconds
    var reported: Set<String> = []
    while true {
        let remaining = deadline - monotonicSeconds()
        let event = remaining > 0 ? try monitor.next(timeout: remaining, wake: Interrupts.descriptor) : nil
        try Interrupts.check("waiting for a card (nothing was written)")
        guard let event else {
            throw PiflashError.failure(
                "no card was inserted within \(formatDuration(seconds))",
                hint: "insert a card and try again, or see why each disk is refused with `piflash devices --all`")
        }
        guard isMediaArrival(event) else { continue }
        guard let disk = try? live.describe(syspath: event.syspath) else { continue }
        let decision = try live.decide(disk, policy: policy)
        if decision.isCandidate {
            reporter.note("card found in \(disk.readerDescription): \(formatBytes(disk.size))")
            reporter.event("card_inserted", [("device", .string(disk.devnode)), ("reader", .string(disk.readerDescription)),
                                             ("by_path", .string(disk.byPath)), ("size", .uint(disk.size))])
            return disk
        }
        if !decision.candidateBecause.isEmpty, !reported.contains(disk.devnode) {
            reported.insert(disk.devnode)
            reporter.note("a card appeared in \(disk.readerDescription) but \(decision.summary)")
        }
    }
}

/// Whether a udev event may announce a card: `add` or `change` of a whole disk with a real
/// sysfs path (`/devices/…`, not the bogus `/sdb` of stray media-change uevents) and a size.
public func isMediaArrival(_ event: UdevEvent) -> Bool {
    (event.action == "add" || event.action == "change") && event.devtype == "disk" && event.devpath.hasPrefix("/devices/")
        && event.sizeBytes > 0
}

extension DiskDescription {
    /// `/dev/sdb  29.7 GiB  usb  Generic- SD/MMC  serial 058F63626420`.
    public var oneLine: String {
        var parts = [devnode, formatBytes(size), bus.rawValue, displayName]
        if let serial { parts.append("serial \(serial)") }
        return parts.joined(separator: "  ")
    }

    /// The reader a card sits in, for "card found in …": the reader's vendor and model with
    /// the device node and its port (`ID_PATH`), or for a loop device the file behind it.
    public var readerDescription: String {
        if bus == .loop {
            return "\(devnode) (loop device" + (loopBackingFile.map { " over \($0)" } ?? "") + ")"
        }
        let details = (displayName == devnode ? [] : [devnode]) + (byPath.map { ["port \($0)"] } ?? [])
        let name = displayName == devnode ? devnode : displayName
        return details.isEmpty ? name : name + " (" + details.joined(separator: ", ") + ")"
    }

    /// What to show before asking: identity, size, bus, by-path and the partitions with their
    /// filesystems, labels and mount points.
    public var summaryLines: [String] {
        var lines = ["Target: \(devnode)"]
        let identity = [vendor, model].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: " ")
        if !identity.isEmpty { lines.append("  model:   " + identity) }
        if let serial { lines.append("  serial:  \(serial)") }
        lines.append("  size:    \(formatBytes(size)) (\(size) bytes)")
        lines.append("  bus:     \(bus.rawValue)" + (removable ? ", removable" : "") + (readOnly ? ", read-only" : ""))
        if let byPath { lines.append("  by-path: \(byPath)") }
        if let loopBackingFile { lines.append("  file:    \(loopBackingFile)") }
        if partitions.isEmpty {
            lines.append("  partitions: none" + (mountPoints.isEmpty ? "" : " (mounted at \(mountPoints.joined(separator: ", ")))"))
        } else {
            lines.append("  partitions:")
            for partition in partitions {
                var line = "    \(partition.sysname)  \(formatBytes(partition.size))  \(partition.fsType ?? "-")"
                if let label = partition.label { line += "  \"\(label)\"" }
                if !partition.mountPoints.isEmpty { line += "  mounted at \(partition.mountPoints.joined(separator: ", "))" }
                lines.append(line)
            }
        }
        return lines
    }

    /// The disk as JSON fields: `device`, `model`, `vendor`, `serial`, `size`, `bus`, `by_path`,
    /// `removable`, `read_only`, `partitions` (each `device`, `number`, `size`, `fstype`,
    /// `label`, `mountpoints`), `holders`, and with `includeProperties` the raw udev `properties`.
    public func jsonFields(includeProperties: Bool = true) -> [(String, JSONValue)] {
        var fields: [(String, JSONValue)] = [
            ("device", .string(devnode)), ("sysname", .string(sysname)), ("model", .string(model)),
            ("vendor", .string(vendor)), ("serial", .string(serial)), ("size", .uint(size)), ("bus", .string(bus.rawValue)),
            ("by_path", .string(byPath)), ("by_path_link", .string(byPathLink)), ("removable", .bool(removable)),
            ("read_only", .bool(readOnly)), ("tagged", .bool(isTagged)),
            ("mountpoints", .array(mountPoints.map { .string($0) })),
            ("partitions", .array(partitions.map { partition in
                .object([
                    ("device", .string(partition.devnode)), ("number", partition.number.map { .int(Int64($0)) } ?? .null),
                    ("size", .uint(partition.size)), ("fstype", .string(partition.fsType)), ("label", .string(partition.label)),
                    ("mountpoints", .array(partition.mountPoints.map { .string($0) })),
                ])
            })),
            ("holders", .array(holders.map { holder in
                .string(holder.mapperName.map { "\(holder.sysname) (\($0))" } ?? holder.sysname)
            })),
        ]
        if let loopBackingFile { fields.append(("backing_file", .string(loopBackingFile))) }
        if includeProperties {
            fields.append(("properties", .object(properties.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
        }
        return fields
    }
}

extension Decision {
    /// `candidate`, `because` and `reasons` (each `code` and `message`) as JSON fields.
    public var jsonFields: [(String, JSONValue)] {
        [
            ("candidate", .bool(isCandidate)),
            ("because", .array(candidateBecause.map { .string($0) })),
            ("reasons", .array(reasons.map { .object([("code", .string($0.code)), ("message", .string($0.description))]) })),
            ("will_unmount", .array(autoMounts.map { .string($0.mountPoint) })),
        ]
    }
}
