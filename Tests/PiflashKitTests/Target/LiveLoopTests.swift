import Foundation
import PiflashKit
import PiflashPlatform
import Synchronization
import Testing

/// Runs a tool and returns its stdout; throws with its stderr when it fails.
@discardableResult
func run(_ tool: String, _ arguments: String...) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : "/usr/bin/env")
    process.arguments = tool.hasPrefix("/") ? arguments : [tool] + arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: output, as: UTF8.self)
    guard process.terminationStatus == 0 else {
        throw PiflashError.failure("\(tool) \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): "
            + String(decoding: errors, as: UTF8.self))
    }
    return text.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// The live udev environment: root, a running udevd, and a runtime rule that tags only the loop
/// devices these tests attach to files named `*piflash-tagged*`.
enum LiveUdev {
    static let rulePath = "/run/udev/rules.d/99-piflash-test-loops.rules"
    static let rule = """
        # piflash tests: tag only the loop devices the tests attach to their own files.
        SUBSYSTEM=="block", KERNEL=="loop*", ENV{DEVTYPE}=="disk", ATTR{loop/backing_file}=="*piflash-tagged*", ENV{PIFLASH_CANDIDATE}="1"

        """

    /// Whether live tests can run; starts udevd when it is installed but not running.
    static let ready: Bool = {
        guard geteuid() == 0 else { return false }
        if (try? run("udevadm", "control", "--ping")) != nil { return true }
        guard FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd-udevd") else { return false }
        // The daemon keeps its standard streams: give it /dev/null, not pipes we would wait on.
        let daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: "/lib/systemd/systemd-udevd")
        daemon.arguments = ["--daemon"]
        daemon.standardInput = FileHandle.nullDevice
        daemon.standardOutput = FileHandle.nullDevice
        daemon.standardError = FileHandle.nullDevice
        guard (try? daemon.run()) != nil else { return false }
        daemon.waitUntilExit()
        return (try? run("udevadm", "control", "--ping", "--timeout=10")) != nil
    }()

    static let skipMessage: Comment = "live udev tests need root and systemd-udevd (/lib/systemd/systemd-udevd --daemon)"
}

/// Installs the test rule for the suite and removes it afterwards, even when tests fail.
struct TaggingRule: SuiteTrait, TestScoping {
    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void)
        async throws
    {
        guard LiveUdev.ready else { return try await function() }  // the suite skips itself
        try FileManager.default.createDirectory(atPath: "/run/udev/rules.d", withIntermediateDirectories: true)
        try LiveUdev.rule.write(toFile: LiveUdev.rulePath, atomically: true, encoding: .utf8)
        try run("udevadm", "control", "--reload")
        defer {
            try? FileManager.default.removeItem(atPath: LiveUdev.rulePath)
            _ = try? run("udevadm", "control", "--reload")
        }
        try await function()
    }
}

/// What one test created, undone in reverse order by `cleanUp()` (called from `defer`).
final class Scratch: @unchecked Sendable {
    let directory: String
    private var loops: [String] = []
    private var mountPoints: [String] = []
    private var paths: [String] = []

    init() throws {
        directory = try run("mktemp", "-d", "/tmp/piflash-udev-test.XXXXXX")
    }

    /// A sparse file of `size` bytes; `tagged` puts `piflash-tagged` in its name.
    func file(_ name: String, size: UInt64, tagged: Bool) throws -> String {
        let path = "\(directory)/\(tagged ? "piflash-tagged" : "piflash-plain")-\(name).img"
        try run("truncate", "-s", String(size), path)
        return path
    }

    /// Attaches a loop device (`losetup -f --show`), settles udev's processing of it.
    func attach(_ file: String, readOnly: Bool = false) throws -> String {
        let device = readOnly ? try run("losetup", "-f", "--show", "-r", file) : try run("losetup", "-f", "--show", file)
        loops.append(device)
        try settle(device)
        return device
    }

    func remember(loop device: String) { if !loops.contains(device) { loops.append(device) } }

    /// Runs the rules for a device again and waits until udev has processed it.
    func settle(_ device: String) throws {
        let name = String(device.split(separator: "/").last!)
        try run("udevadm", "trigger", "--action=change", "--settle", "/sys/class/block/\(name)")
    }

    func mount(_ device: String, at mountPoint: String) throws {
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        paths.append(mountPoint)
        try run("mount", "-o", "ro", device, mountPoint)
        mountPoints.append(mountPoint)
    }

    /// Detaches a loop device and waits until it is really free: while udevd's probe still
    /// holds it open, the kernel only marks it for autoclear.
    func detach(_ device: String) throws {
        try run("losetup", "-d", device)
        try run("udevadm", "settle", "--timeout=30")
    }

    func cleanUp() {
        for mountPoint in mountPoints.reversed() { _ = try? run("umount", mountPoint) }
        for loop in loops.reversed() { try? detach(loop) }
        for path in paths.reversed() { try? FileManager.default.removeItem(atPath: path) }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Collects what the resolver reports, and signals when it starts waiting for a card.
final class RecordingReporter: Reporter, @unchecked Sendable {
    let lock = NSLock()
    var notes: [String] = []
    var events: [String] = []
    let waiting = DispatchSemaphore(value: 0)

    func begin(_ phase: String, total: UInt64?) {}
    func progress(_ phase: String, done: UInt64, total: UInt64?) {}
    func end(_ phase: String, bytes: UInt64, seconds: Double) {}
    func note(_ message: String) { lock.withLock { notes.append(message) } }
    func warning(_ message: String) { lock.withLock { notes.append("warning: " + message) } }
    func event(_ name: String, _ fields: [(String, JSONValue)]) {
        lock.withLock { events.append(name) }
        if name == "waiting" { waiting.signal() }
    }
}

/// Nobody at the keyboard.
struct NoTerminal: TargetPrompt {
    var isInteractive: Bool { false }
    func choose(_ candidates: [DiskDescription]) throws -> DiskDescription? { nil }
    func confirm(_ disk: DiskDescription, summary: [String]) throws -> Bool { false }
}

@Suite("Live udev on loop devices", .serialized, .enabled(if: LiveUdev.ready, LiveUdev.skipMessage), TaggingRule())
struct LiveLoopTests {
    let mib: UInt64 = 1 << 20

    @Test("a tagged loop device is a candidate with its size; found by node and through a symlink")
    func taggedLoop() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let device = try scratch.attach(try scratch.file("a", size: 64 * mib, tagged: true))
        let live = try LiveDisks()
        let disk = try live.describe(path: device)
        #expect(disk.devnode == device)
        #expect(disk.isTagged, "the runtime rule should have set PIFLASH_CANDIDATE=1")
        #expect(disk.size == 64 * mib)
        #expect(disk.bus == .loop)
        #expect(disk.readOnly == false)
        #expect(disk.loopBackingFile?.hasSuffix("piflash-tagged-a.img") == true)
        #expect(disk.deviceNumber?.major == 7)
        let decision = try live.decide(disk, policy: SafetyPolicy(imageSize: 32 * mib))
        #expect(decision.isCandidate, "\(decision.summary)")
        #expect(decision.candidateBecause == ["tagged"])

        try run("ln", "-s", device, "\(scratch.directory)/link")
        #expect(try live.describe(path: "\(scratch.directory)/link").devnode == device)

        let surveyed = try live.survey(SafetyPolicy())
        let mine = try #require(surveyed.first { $0.disk.devnode == device })
        #expect(mine.decision.isCandidate)
        // This machine's own disk is never a candidate.
        if let vda = surveyed.first(where: { $0.disk.sysname == "vda" }) {
            #expect(!vda.decision.isCandidate)
            #expect(vda.decision.reasons.contains(.systemMount(device: "vda", mountPoint: "/")))
        }
    }

    @Test("an untagged loop device is refused: not removable, not USB or MMC, not tagged")
    func untaggedLoop() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let device = try scratch.attach(try scratch.file("b", size: 64 * mib, tagged: false))
        let live = try LiveDisks()
        let disk = try live.describe(path: device)
        #expect(!disk.isTagged)
        #expect(try live.decide(disk, policy: SafetyPolicy()).reasons == [.notCandidate(bus: .loop)])
        #expect(throws: PiflashError.self) {
            try resolveTarget(TargetRequest(device: device, assumeYes: true), reporter: SilentReporter(), prompt: NoTerminal())
        }
        do {
            _ = try resolveTarget(TargetRequest(device: device, assumeYes: true), reporter: SilentReporter(), prompt: NoTerminal())
        } catch let error as PiflashError {
            #expect(error.status == .refused)
            #expect(error.hint?.contains("PIFLASH_CANDIDATE") == true)
        }
    }

    @Test("a read-only loop device (losetup -r) is refused as read-only")
    func readOnlyLoop() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let device = try scratch.attach(try scratch.file("c", size: 64 * mib, tagged: true), readOnly: true)
        let live = try LiveDisks()
        let disk = try live.describe(path: device)
        #expect(disk.readOnly)
        #expect(disk.isTagged)
        #expect(try live.decide(disk, policy: SafetyPolicy()).reasons == [.readOnly(bus: .loop)])
    }

    @Test("a loop device smaller than the image is refused")
    func tooSmall() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let device = try scratch.attach(try scratch.file("d", size: 16 * mib, tagged: true))
        let live = try LiveDisks()
        let disk = try live.describe(path: device)
        #expect(try live.decide(disk, policy: SafetyPolicy(imageSize: 32 * mib)).reasons
            == [.tooSmall(size: 16 * mib, needed: 32 * mib)])
        do {
            _ = try resolveTarget(TargetRequest(device: device, imageSize: 32 * mib, assumeYes: true),
                                  reporter: SilentReporter(), prompt: NoTerminal())
            Issue.record("a too small device was accepted")
        } catch let error as PiflashError {
            #expect(error.status == .refused)
            #expect(error.message.contains("too small"))
        }
    }

    @Test("a mounted loop: refused at a system path or a manual mount, unmounted by the resolver under /mnt")
    func mounted() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let file = try scratch.file("e", size: 64 * mib, tagged: true)
        try run("mkfs.ext4", "-q", "-F", "-L", "PIFLASHTEST", file)
        let device = try scratch.attach(file)
        let live = try LiveDisks()

        // A manual mount in a scratch folder: refused, someone mounted it on purpose.
        let manual = "\(scratch.directory)/mnt"
        try scratch.mount(device, at: manual)
        let disk = try live.describe(path: device)
        #expect(disk.mountPoints == [manual])
        let decision = try live.decide(disk, policy: SafetyPolicy())
        #expect(decision.reasons == [.mounted(device: disk.sysname, mountPoint: manual)])

        // The same mount as this machine would show it at /var: the real mountinfo with the
        // mount point changed.
        var table = try MountTable.read()
        let index = try #require(table.entries.firstIndex { $0.device == disk.deviceNumber })
        #expect(table.entries[index].source == device)
        table.entries[index].mountPoint = "/var"
        #expect(SafetyPolicy().decide(disk, mounts: table).reasons == [.systemMount(device: disk.sysname, mountPoint: "/var")])
        _ = try run("umount", manual)

        // Under /mnt it is an auto-mount: a candidate, and the resolver unmounts it.
        let auto = "/mnt/piflash-test-\(getpid())-\(disk.sysname)"
        try scratch.mount(device, at: auto)
        let mountedDisk = try live.describe(path: device)
        let autoDecision = try live.decide(mountedDisk, policy: SafetyPolicy())
        #expect(autoDecision.isCandidate, "\(autoDecision.summary)")
        #expect(autoDecision.autoMounts.map(\.mountPoint) == [auto])
        let reporter = RecordingReporter()
        let resolved = try resolveTarget(TargetRequest(device: device, assumeYes: true), reporter: reporter, prompt: NoTerminal())
        #expect(resolved.devnode == device)
        #expect(resolved.mountPoints.isEmpty)
        #expect(try MountTable.read().mounts(of: try #require(disk.deviceNumber)).isEmpty, "still mounted after resolveTarget")
        #expect(reporter.notes.contains { $0.contains("unmounting") && $0.contains(auto) })
        #expect(reporter.events.contains("target"))
    }

    @Test("without --yes and without a terminal the resolver refuses and says to pass --yes")
    func noConfirmation() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let device = try scratch.attach(try scratch.file("f", size: 64 * mib, tagged: true))
        do {
            _ = try resolveTarget(TargetRequest(device: device), reporter: SilentReporter(), prompt: NoTerminal())
            Issue.record("wrote without confirmation")
        } catch let error as PiflashError {
            #expect(error.status == .refused)
            #expect(error.hint?.contains("--yes") == true)
        }
    }

    @Test("the monitor sees a change event with size 0 → N when a detached loop is attached to a file")
    func changeEventOnAttach() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let file = try scratch.file("g", size: 48 * mib, tagged: true)
        // Get a loop device of our own, then detach it: it stays as an empty node.
        let device = try scratch.attach(file)
        try scratch.detach(device)
        let name = String(device.split(separator: "/").last!)
        #expect(Sysfs.read("/sys/class/block/\(name)/size") == "0")

        let monitor = try UdevMonitor(context: try UdevContext())
        try run("losetup", device, file)
        scratch.remember(loop: device)
        // Attaching gives more than one change event (the new capacity, then the bound device);
        // read them until one carries the rule's tag.
        var events: [UdevEvent] = []
        let deadline = monotonicSeconds() + 20
        while !events.contains(where: { $0.properties["PIFLASH_CANDIDATE"] == "1" }), monotonicSeconds() < deadline {
            guard let event = try monitor.next(timeout: deadline - monotonicSeconds()) else { break }
            if event.sysname == name { events.append(event) }
        }
        let described = events.map { "\($0.action) size=\($0.sizeBytes) tagged=\($0.properties["PIFLASH_CANDIDATE"] ?? "-")" }
        let first = try #require(events.first, "no event for \(device) within 20 s")
        #expect(first.action == "change", "\(described)")
        #expect(events.allSatisfy { $0.action == "change" }, "\(described)")
        let event = try #require(events.last { $0.properties["PIFLASH_CANDIDATE"] == "1" }, "no tagged event: \(described)")
        #expect(event.sizeBytes == 48 * mib)
        #expect(event.devtype == "disk")
        #expect(event.devnode == device)
        #expect(isMediaArrival(event))
    }

    @Test("waiting on the monitor sleeps in poll(2): no busy loop")
    func monitorDoesNotSpin() throws {
        func cpuSeconds() -> Double {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
                + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        let monitor = try UdevMonitor(context: try UdevContext())
        let startCPU = cpuSeconds()
        let start = monotonicSeconds()
        let deadline = start + 1.5
        // Other people's devices may send events meanwhile: keep waiting until the deadline.
        while monotonicSeconds() < deadline {
            _ = try monitor.next(timeout: deadline - monotonicSeconds())
        }
        let wall = monotonicSeconds() - start
        let cpu = cpuSeconds() - startCPU
        #expect(wall >= 1.5 && wall < 3)
        #expect(cpu < 0.3, "waiting 1.5 s cost \(cpu) s of CPU")
    }

    @Test("waiting for a card: the resolver takes the loop attached while it waits")
    func waitForCard() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let before = try LiveDisks().survey(SafetyPolicy()).filter(\.decision.isCandidate)
        try #require(before.isEmpty, "another candidate is present: \(before.map(\.disk.devnode))")
        let file = try scratch.file("h", size: 40 * mib, tagged: true)
        let device = try scratch.attach(file)
        try scratch.detach(device)
        let name = String(device.split(separator: "/").last!)
        #expect(Sysfs.read("/sys/class/block/\(name)/size") == "0")

        let reporter = RecordingReporter()
        let result = Mutex<Result<DiskDescription, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            let outcome = Result {
                try resolveTarget(TargetRequest(imageSize: 32 * (1 << 20), waitSeconds: 30, assumeYes: true),
                                  reporter: reporter, prompt: NoTerminal())
            }
            result.withLock { $0 = outcome }
            done.signal()
        }
        thread.start()
        #expect(reporter.waiting.wait(timeout: .now() + 30) == .success, "the resolver never started waiting")
        try run("losetup", device, file)
        scratch.remember(loop: device)
        #expect(done.wait(timeout: .now() + 40) == .success, "the resolver did not return")
        let outcome = try #require(result.withLock { $0 })
        let disk = try outcome.get()
        #expect(disk.devnode == device)
        #expect(disk.size == 40 * (1 << 20))
    }

    @Test("waiting ends with a failure when no card comes")
    func waitTimesOut() throws {
        let before = try LiveDisks().survey(SafetyPolicy()).filter(\.decision.isCandidate)
        try #require(before.isEmpty, "another candidate is present")
        let start = monotonicSeconds()
        do {
            _ = try resolveTarget(TargetRequest(waitSeconds: 1.5, assumeYes: true), reporter: SilentReporter(), prompt: NoTerminal())
            Issue.record("found a card that is not there")
        } catch let error as PiflashError {
            #expect(error.status == .failure)
            #expect(error.message.contains("no card"))
        }
        let elapsed = monotonicSeconds() - start
        #expect(elapsed >= 1.4 && elapsed < 10)
    }

    @Test("the shipped rules parse cleanly in udevd and leave a plain loop device untagged")
    func shippedRules() throws {
        var packageRoot = #filePath
        for _ in 0..<4 { packageRoot = String(packageRoot[..<packageRoot.lastIndex(of: "/")!]) }
        let shipped = [
            ("\(packageRoot)/udev-rules/60-piflash.rules", "/run/udev/rules.d/60-piflash-shipped-test.rules"),
            ("\(packageRoot)/udev-rules/61-piflash-slots.rules.example", "/run/udev/rules.d/61-piflash-slots-shipped-test.rules"),
        ]
        let scratch = try Scratch()
        defer {
            scratch.cleanUp()
            for (_, installed) in shipped { try? FileManager.default.removeItem(atPath: installed) }
        }
        for (source, installed) in shipped {
            try FileManager.default.copyItem(atPath: source, toPath: installed)
        }
        let device = try scratch.attach(try scratch.file("rules", size: 8 * mib, tagged: false))
        let name = String(device.split(separator: "/").last!)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["udevadm", "test", "--action=change", "/sys/class/block/\(name)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(output.contains("60-piflash-shipped-test.rules"), "udevadm test did not read the shipped rules")
        let complaints = output.split(separator: "\n").filter { $0.contains("shipped-test.rules:") }
        #expect(complaints.isEmpty, "udevd complains about the shipped rules: \(complaints)")
        #expect(!output.contains("PIFLASH_CANDIDATE=1"), "a plain loop device must not be tagged")
    }

    @Test("a path that is not a block device is a usage error")
    func notABlockDevice() throws {
        let live = try LiveDisks()
        #expect(throws: PiflashError.self) { try live.describe(path: "/etc/hostname") }
        do {
            _ = try live.describe(path: "/dev/does-not-exist")
        } catch let error as PiflashError {
            #expect(error.status == .usage)
        }
    }
}
