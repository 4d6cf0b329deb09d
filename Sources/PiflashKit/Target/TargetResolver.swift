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
    /// `--wait`: how long to wait for a card to be inserted when none is there (0: do not wait).
    public var waitSeconds: Double
    /// `--yes`: do not ask for confirmation.
    public var assumeYes: Bool

    public init(device: String? = nil, imageSize: UInt64? = nil, maxSize: UInt64 = SafetyPolicy.defaultMaxSize,
                waitSeconds: Double = 0, assumeYes: Bool = false) {
        self.device = device
        self.imageSize = imageSize
        self.maxSize = maxSize
        self.waitSeconds = waitSeconds
        self.assumeYes = assumeYes
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

    private func ask(_ question: String) -> String? {
        guard fd >= 0 else { return nil }
        writeAll(question, to: fd)
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
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
            disk = try waitForCard(monitor: monitor, live: live, policy: policy, seconds: request.waitSeconds, reporter: reporter)
        default:
            guard prompt.isInteractive else {
                throw PiflashError.usage(
                    "several cards could be written: " + candidates.map(\.oneLine).joined(separator: "; "),
                    hint: "choose one with --device")
            }
            guard let chosen = try prompt.choose(candidates) else {
                throw PiflashError.refused("no card was chosen")
            }
            disk = chosen
        }
    }

    let summary = disk.summaryLines
    for line in summary { reporter.note(line) }
    reporter.event("target", disk.jsonFields(includeProperties: false))
    if !request.assumeYes {
        guard prompt.isInteractive else {
            throw PiflashError.refused("not writing to \(disk.devnode) without confirmation: there is no terminal to ask on",
                                       path: disk.devnode, hint: "pass --yes to write without asking")
        }
        guard try prompt.confirm(disk, summary: summary) else {
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
/// partitions are ignored; a disk that appears but is refused is reported once.
func waitForCard(monitor: UdevMonitor, live: LiveDisks, policy: SafetyPolicy, seconds: Double, reporter: any Reporter)
    throws -> DiskDescription
{
    reporter.note("waiting up to \(formatDuration(seconds)) for a card to be inserted…")
    reporter.event("waiting", [("seconds", .double(seconds))])
    let deadline = monotonicSeconds() + seconds
    var reported: Set<String> = []
    while true {
        let remaining = deadline - monotonicSeconds()
        guard remaining > 0, let event = try monitor.next(timeout: remaining) else {
            throw PiflashError.failure(
                "no card was inserted within \(formatDuration(seconds))",
                hint: "insert a card and try again, or see why each disk is refused with `piflash devices --all`")
        }
        guard isMediaArrival(event) else { continue }
        guard let disk = try? live.describe(syspath: event.syspath) else { continue }
        let decision = try live.decide(disk, policy: policy)
        if decision.isCandidate { return disk }
        if !decision.candidateBecause.isEmpty, !reported.contains(disk.devnode) {
            reported.insert(disk.devnode)
            reporter.note("\(disk.devnode) appeared but \(decision.summary)")
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

    /// What to show before asking: identity, size, bus, by-path and the partitions with their
    /// filesystems, labels and mount points.
    public var summaryLines: [String] {
        var lines = ["Target: \(devnode)"]
        lines.append("  model:   " + [vendor, model].compactMap { $0 }.joined(separator: " "))
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
