import ArgumentParser
import PiflashKit

/// `piflash devices`: the disks piflash would write to, and with `--all` every other disk with
/// the reason it is refused.
struct Devices: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List the cards piflash may write to; with --all, every disk and why it is refused.",
        discussion: """
            A disk is a candidate when it is removable media (sysfs removable=1), sits on the USB \
            or MMC bus, or is tagged PIFLASH_CANDIDATE=1 by a udev rule (udev-rules/60-piflash.rules). \
            It is refused when it, one of its partitions or a device stacked on it (LUKS, LVM, RAID) \
            backs a mounted system path or is swap, when it is read-only, has no medium (a reader \
            without a card), is larger than --max-size, is built-in eMMC storage, or is a server BMC's virtual medium. Filesystems \
            mounted under /media, /run/media or /mnt are not a reason: piflash unmounts them before \
            writing.

            Human output is a table on stdout: DEVICE, SIZE, BUS, RO (read-only), MODEL, VENDOR, \
            SERIAL and BY-PATH (the udev ID_PATH of the port, stable across cards), then one line per \
            partition with its filesystem, label and mount points; with --all, a STATUS column and \
            the reasons of each refused disk. Virtual disks with nothing behind them (detached loop \
            devices, empty zram and nbd devices) are not listed one by one: a last line counts them \
            ("8 empty loop/zram devices not shown"), and --verbose lists them too.

            With --json, one JSON object per line: an {"event":"device",...} object per disk \
            (device, sysname, model, vendor, serial, size in bytes, bus, by_path, by_path_link, \
            removable, read_only, tagged, mountpoints, partitions, holders, candidate, because, \
            reasons with code and message, will_unmount, properties), then a final \
            {"event":"result","ok":true,"candidates":N,"devices":N,"max_size":BYTES} (on failure \
            "ok":false with "error" and "exit_code"). With --json, --all lists every disk, the \
            unused virtual ones included.

            Exit status: 0 when the list was made (even if it is empty), 1 when udev or the mount \
            table could not be read, 2 for a bad option.
            """
    )

    @Flag(name: .long, help: "Also list every refused disk, with the reasons it is refused.")
    var all = false

    @Flag(name: .long, help: "With --all, also list the unused virtual disks (detached loop, empty zram and nbd devices) instead of counting them. Implies --all.")
    var verbose = false

    @Flag(name: .long, help: "Print one JSON object per line instead of a table.")
    var json = false

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Refuse disks larger than this (default 256G). K, M, G, T are binary units; KB, MB, GB, TB decimal.",
            valueName: "SIZE"))
    var maxSize: String?

    func validate() throws {
        if let maxSize, parseByteSize(maxSize) == nil {
            throw ValidationError("--max-size: '\(maxSize)' is not a size (examples: 256G, 64GB, 512M, 1T)")
        }
    }

    func run() async throws {
        let limit = maxSize.flatMap(parseByteSize) ?? SafetyPolicy.defaultMaxSize
        let surveyed: [SurveyedDisk]
        do {
            surveyed = try LiveDisks().survey(SafetyPolicy(maxSize: limit))
        } catch let error as PiflashError where json {
            JSONLinesReporter().event("result", [
                ("ok", false), ("error", .string(error.description)), ("exit_code", .int(Int64(error.status.rawValue))),
            ])
            throw error
        }
        let all = self.all || verbose
        let listed = all ? surveyed : surveyed.filter(\.decision.isCandidate)
        // A person reads the disks they could mean; scripts (--json) get every disk.
        let hideUnused = !json && !verbose
        let shown = hideUnused ? listed.filter { !$0.disk.isUnusedVirtualDisk } : listed
        let unused = hideUnused ? listed.filter(\.disk.isUnusedVirtualDisk).map(\.disk) : []
        let candidates = surveyed.filter(\.decision.isCandidate).count
        if json {
            let reporter = JSONLinesReporter()
            for entry in shown {
                reporter.event("device", entry.disk.jsonFields() + entry.decision.jsonFields)
            }
            reporter.event("result", [
                ("ok", true), ("candidates", .int(Int64(candidates))), ("devices", .int(Int64(shown.count))),
                ("max_size", .uint(limit)),
            ])
            return
        }
        if !shown.isEmpty { writeAll(DeviceTable.render(shown, showStatus: all), to: 1) }
        if let line = DeviceTable.unusedLine(unused) { writeAll(line + "\n", to: 1) }
        if candidates == 0 {
            let hint = all
                ? "No candidate: insert a card (or tag a disk with PIFLASH_CANDIDATE=1).\n"
                : "No candidate: insert a card, or run `piflash devices --all` to see why each disk is refused.\n"
            writeAll(hint, to: 2)
        }
    }
}

/// The aligned table of `piflash devices`.
enum DeviceTable {
    /// The count of unused virtual disks left out of the table, by kind:
    /// `8 empty loop/zram devices not shown (7 loop, 1 zram; --verbose lists them)`; nil for none.
    static func unusedLine(_ disks: [DiskDescription]) -> String? {
        guard !disks.isEmpty else { return nil }
        var counts: [(DiskBus, Int)] = []
        for disk in disks {
            if let index = counts.firstIndex(where: { $0.0 == disk.bus }) { counts[index].1 += 1 } else { counts.append((disk.bus, 1)) }
        }
        let kinds = counts.map(\.0.rawValue).joined(separator: "/")
        let noun = disks.count == 1 ? "device" : "devices"
        let split = counts.count > 1 ? counts.map { "\($0.1) \($0.0.rawValue)" }.joined(separator: ", ") + "; " : ""
        return "\(disks.count) empty \(kinds) \(noun) not shown (\(split)--verbose lists them)"
    }

    static func render(_ rows: [SurveyedDisk], showStatus: Bool) -> String {
        var header = ["DEVICE", "SIZE", "BUS", "RO", "MODEL", "VENDOR", "SERIAL", "BY-PATH"]
        if showStatus { header.insert("STATUS", at: 1) }
        var table: [[String]] = [header]
        var details: [[String]] = [[]]
        for row in rows {
            let disk = row.disk
            var cells = [
                disk.devnode, formatBytes(disk.size), disk.bus.rawValue, disk.readOnly ? "yes" : "no", disk.model ?? "-",
                disk.vendor ?? "-", disk.serial ?? "-", disk.byPath ?? "-",
            ]
            if showStatus { cells.insert(row.decision.isCandidate ? "candidate" : "refused", at: 1) }
            table.append(cells)
            var lines: [String] = []
            if !disk.mountPoints.isEmpty { lines.append("mounted at " + disk.mountPoints.joined(separator: ", ")) }
            if let file = disk.loopBackingFile { lines.append("file " + file) }
            for partition in disk.partitions {
                var line = "\(partition.sysname)  \(formatBytes(partition.size))  \(partition.fsType ?? "-")"
                if let label = partition.label { line += "  \"\(label)\"" }
                if !partition.mountPoints.isEmpty { line += "  mounted at " + partition.mountPoints.joined(separator: ", ") }
                lines.append(line)
            }
            if row.decision.isCandidate, !row.decision.autoMounts.isEmpty {
                lines.append("will unmount " + row.decision.autoMounts.map(\.mountPoint).joined(separator: ", ") + " before writing")
            }
            for reason in row.decision.reasons { lines.append("refused: " + reason.description) }
            details.append(lines)
        }
        var widths = [Int](repeating: 0, count: header.count)
        for cells in table {
            for (index, cell) in cells.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        var out = ""
        for (index, cells) in table.enumerated() {
            var line = ""
            for (column, cell) in cells.enumerated() {
                line += column == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count + 2)
            }
            out += line + "\n"
            for detail in details[index] { out += "    " + detail + "\n" }
        }
        return out
    }
}
