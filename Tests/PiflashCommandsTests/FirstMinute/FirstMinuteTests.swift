import Foundation
import Testing

/// The loop-device "cards" of this suite only: backing files named `piflash-fm-<pid>-…`, tagged
/// `PIFLASH_CANDIDATE=1` by a runtime udev rule whose file name carries this process's pid, so
/// neither the rule nor the cards are confused with another suite's running at the same time.
enum FirstMinuteCards {
    static let prefix = "piflash-fm-\(getpid())-"
    static let rulePath = "/run/udev/rules.d/99-piflash-firstminute-\(getpid()).rules"

    static let ready: Bool = {
        guard CandidateTagging.ready else { return false }
        let rule = """
            # piflash first-minute tests (pid \(getpid())): tag only this test process's card files.
            SUBSYSTEM=="block", KERNEL=="loop*", ENV{DEVTYPE}=="disk", ATTR{loop/backing_file}=="*/\(prefix)*", ENV{PIFLASH_CANDIDATE}="1"

            """
        do {
            try FileManager.default.createDirectory(atPath: "/run/udev/rules.d", withIntermediateDirectories: true)
            try rule.write(toFile: rulePath, atomically: true, encoding: .utf8)
            try Shell.sh("udevadm control --reload")
            atexit {
                unlink(FirstMinuteCards.rulePath)
                _ = try? Shell.run(["udevadm", "control", "--reload"])
            }
            return true
        } catch {
            return false
        }
    }()

    /// A sparse backing file for a card (not attached yet).
    static func backingFile(in scratch: ScratchDirectory, size: UInt64) throws -> String {
        let path = scratch.file(prefix + UUID().uuidString.prefix(8))
        try Shell.sh("truncate -s \(size) '\(path)'")
        return path
    }

    /// A card attached now and already tagged by udev.
    static func attached(in scratch: ScratchDirectory, size: UInt64) throws -> LoopDevice {
        let loop = try LoopDevice(backing: try backingFile(in: scratch, size: size))
        try Shell.sh("udevadm settle")
        let properties = try Shell.sh("udevadm info --query=property --name=\(loop.path)")
        try #require(properties.contains("PIFLASH_CANDIDATE=1"), "the test rule tagged \(loop.path)")
        return loop
    }

    /// The tagged candidates of other suites running at the same time (they would be offered too).
    static func otherCandidates() throws -> [String] {
        let out = try Shell.sh("'\(Shell.piflash)' devices --json")
        return out.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  object["event"] as? String == "device" else { return nil }
            return object["device"] as? String
        }
    }
}

/// What a new user sees in the first minute, on a real pseudo-terminal: waiting for a card,
/// choosing one, the description shown once, the capacity step in words, Ctrl-C.
@Suite("the first minute at a terminal", .serialized,
       .enabled(if: FirstMinuteCards.ready, "needs root (loop devices), systemd-udevd and python3"))
struct FirstMinuteTerminalTests {
    /// Waits (bounded) until no other suite's card is a candidate: piflash would rightly take or
    /// offer it, and the test could not tell what it saw. Those cards belong to tests running at
    /// the same time on this machine and go away when they end; there is no event to wait on
    /// for "another process detached its loop device", so this looks again every second.
    func requireNoForeignCandidate(timeout: Double = 600) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var others = try FirstMinuteCards.otherCandidates()
        while !others.isEmpty && Date() < deadline {
            usleep(1_000_000)
            others = try FirstMinuteCards.otherCandidates()
        }
        try #require(others.isEmpty, "another test's cards stayed candidates for \(Int(timeout))s (\(others)); run this suite alone")
    }

    @Test("with no card, `piflash HOST` waits on a terminal, names the reader, and flashes the card once it is inserted")
    func waitsForACard() throws {
        let host = try HostFixture(name: "example")
        try requireNoForeignCandidate()
        let session = try TerminalSession([
            host.name, "--hosts", host.hostsDirectory, "--age-identity", host.identityFile,
            "--journal", host.scratch.file("journal.sqlite"), "--no-eject",
        ])
        try #require(session.waitFor("insert a card for example… (Ctrl-C to stop)"), "screen: \(session.screen)")
        // Inserting the card: attaching the file is a udev `change` event, like a reader's.
        let backing = try FirstMinuteCards.backingFile(in: host.scratch, size: 96 << 20)
        let card = try LoopDevice(backing: backing)
        try #require(session.waitFor("Type yes to continue"), "screen: \(session.screen)")
        let screen = session.screen
        #expect(screen.contains("card found in \(card.path) (loop device over \(backing))"), "screen: \(screen)")
        try #require(screen.contains("Everything on \(card.path) will be overwritten"), "asked about another card: \(screen)")
        #expect(occurrences(of: "Target: \(card.path)", in: screen) == 1, "the description once: \(screen)")
        session.type("yes\n")
        let status = session.finish()
        let all = session.screen
        #expect(status == 0, "screen: \(all)")
        #expect(all.contains("card capacity checked (last MiB read back)"), "screen: \(all)")
        #expect(!all.contains("capacity done"), "no zero-byte capacity line: \(all)")
        #expect(!all.contains("done: 0 B"), "no zero-byte phase: \(all)")
        #expect(all.contains("known_hosts line"))
        // The card holds the image's partition table now (sfdisk, not piflash, says so).
        let table = try Shell.sh("sfdisk -J \(card.path)")
        #expect(table.contains("\"type\": \"83\""), "sfdisk: \(table)")
    }

    @Test("after choosing among several cards, the description is shown once, before the question")
    func describesTheChosenCardOnce() throws {
        let scratch = try ScratchDirectory("piflash-fm")
        let image = try ImageFixture.make(in: scratch)
        try requireNoForeignCandidate()
        let first = try FirstMinuteCards.attached(in: scratch, size: 96 << 20)
        let second = try FirstMinuteCards.attached(in: scratch, size: 128 << 20)
        let session = try TerminalSession(["write", image, "--no-eject"])
        try #require(session.waitFor("Which one"), "screen: \(session.screen)")
        #expect(session.screen.contains(first.path) && session.screen.contains(second.path))
        session.type(second.path + "\n")
        try #require(session.waitFor("Type yes to continue"), "screen: \(session.screen)")
        session.type("no\n")
        let status = session.finish()
        let screen = session.screen
        #expect(status == 3, "not confirmed is a refusal: \(screen)")
        let afterChoice = screen.components(separatedBy: "Which one").last ?? ""
        #expect(occurrences(of: "Target: \(second.path)", in: afterChoice) == 1, "the description once: \(screen)")
        #expect(occurrences(of: "size:    128.0 MiB", in: screen) == 1, "screen: \(screen)")
        #expect(screen.contains("not confirmed: \(second.path) was left untouched"))
        #expect(try headIsZeroed(second.path), "nothing was written")
    }

    @Test("Ctrl-C while waiting for a card stops at once, saying nothing was written")
    func ctrlCStopsTheWait() throws {
        let scratch = try ScratchDirectory("piflash-fm")
        let image = try ImageFixture.make(in: scratch)
        try requireNoForeignCandidate()
        let session = try TerminalSession(["write", image])
        try #require(session.waitFor("(Ctrl-C to stop)"), "screen: \(session.screen)")
        #expect(session.screen.contains("insert a card for nixos…"), "the write names the image: \(session.screen)")
        session.type("\u{03}")
        let status = session.finish(timeout: 30)
        #expect(status == 1, "screen: \(session.screen)")
        #expect(session.screen.contains("interrupted by SIGINT while waiting for a card (nothing was written)"), "screen: \(session.screen)")
    }

    @Test("Ctrl-C at the confirmation question stops at once and leaves the card untouched")
    func ctrlCAtTheQuestion() throws {
        let scratch = try ScratchDirectory("piflash-fm")
        let image = try ImageFixture.make(in: scratch)
        let card = try FirstMinuteCards.attached(in: scratch, size: 96 << 20)
        let session = try TerminalSession(["write", image, "--device", card.path])
        try #require(session.waitFor("Type yes to continue"), "screen: \(session.screen)")
        session.type("\u{03}")
        let status = session.finish(timeout: 30)
        #expect(status == 1, "screen: \(session.screen)")
        #expect(session.screen.contains("\npiflash: interrupted by SIGINT while asking for confirmation (\(card.path) was left untouched)"),
                "screen: \(session.screen)")
        #expect(try headIsZeroed(card.path))
    }

    @Test("with --json (a script) on a terminal, no card is an immediate answer, not a wait")
    func scriptsDoNotWait() throws {
        let scratch = try ScratchDirectory("piflash-fm")
        let image = try ImageFixture.make(in: scratch)
        try requireNoForeignCandidate()
        let session = try TerminalSession(["write", image, "--json"])
        let status = session.finish(timeout: 60)
        #expect(status == 1, "screen: \(session.screen)")
        #expect(session.screen.contains("no SD card found"))
        #expect(!session.screen.contains("insert a card for"))
    }

    @Test("--wait SECONDS on a terminal says how long it waits, and gives up after it")
    func boundedWait() throws {
        let scratch = try ScratchDirectory("piflash-fm")
        let image = try ImageFixture.make(in: scratch)
        try requireNoForeignCandidate()
        let session = try TerminalSession(["write", image, "--wait", "1"])
        let status = session.finish(timeout: 60)
        #expect(status == 1, "screen: \(session.screen)")
        #expect(session.screen.contains("(waiting up to 1.0s; Ctrl-C to stop)"), "screen: \(session.screen)")
        #expect(session.screen.contains("no card was inserted within 1.0s"))
    }
}

/// `piflash devices --all` on a machine with empty loop and zram devices, and `piflash` alone.
@Suite("the first minute: devices and the bare command", .serialized)
struct FirstMinuteListingTests {
    /// Whole disks whose sysfs size is 0 and that are loop, zram or nbd devices — read from
    /// sysfs, not from piflash.
    static func emptyVirtualDisks() throws -> Set<String> {
        let names = try FileManager.default.contentsOfDirectory(atPath: "/sys/block")
        return Set(names.filter { name in
            guard name.hasPrefix("loop") || name.hasPrefix("zram") || name.hasPrefix("nbd") else { return false }
            let size = (try? String(contentsOfFile: "/sys/block/\(name)/size", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
            return size == "0"
        }.map { "/dev/" + $0 })
    }

    @Test("devices --all counts the empty loop/zram devices in one last line; --verbose lists them")
    func devicesAllStaysShort() throws {
        try #require(Shell.isRoot, "loop devices need root")
        // Make sure there are at least eight detached loop devices: hold our own files attached
        // (`losetup -f` takes a free node, and creates one when none is free) until, once they
        // are detached again, eight nodes will be empty; then detach them.
        let scratch = try ScratchDirectory("piflash-fm")
        var held: [LoopDevice] = []
        while try Self.emptyVirtualDisks().filter({ $0.hasPrefix("/dev/loop") }).count + held.count < 8 && held.count < 16 {
            held.append(try LoopDevice(backing: scratch.file("empty-\(held.count)"), size: 1 << 20))
        }
        held.removeAll()
        let before = try Self.emptyVirtualDisks()
        try #require(before.filter { $0.hasPrefix("/dev/loop") }.count >= 8)
        let run = try Shell.run([Shell.piflash, "devices", "--all"])
        let after = try Self.emptyVirtualDisks()
        #expect(run.status == 0, "\(run.stderr)")
        let lines = run.stdout.split(separator: "\n").map(String.init)
        let stable = before.intersection(after)  // empty before and after: another test did not touch them
        for line in lines where !line.hasPrefix(" ") {
            let device = String(line.split(separator: " ").first ?? "")
            #expect(!stable.contains(device), "an empty device is listed: \(line)")
        }
        let last = try #require(lines.last)
        let count = try #require(Int(last.split(separator: " ").first ?? ""), "the last line counts: \(run.stdout)")
        #expect(count >= stable.count && count <= before.union(after).count, "\(last) vs sysfs \(before)")
        #expect(last.contains(" empty loop") && last.hasSuffix("not shown (" + (last.components(separatedBy: "not shown (").last ?? "")))
        #expect(last.contains("--verbose lists them"), "\(last)")

        let verbose = try Shell.run([Shell.piflash, "devices", "--all", "--verbose"])
        #expect(verbose.status == 0)
        for device in stable.intersection(try Self.emptyVirtualDisks()) {
            #expect(verbose.stdout.contains("\n\(device) ") || verbose.stdout.hasPrefix("\(device) ") || verbose.stdout.contains("\(device)  "),
                    "--verbose lists \(device)")
        }
        #expect(!verbose.stdout.contains("not shown"))
        #expect(verbose.stdout.contains("refused: has no backing file (a detached loop device)"), "\(verbose.stdout)")
    }

    @Test("`piflash` alone prints the short usage and the hosts of ./hosts, not an error above the whole help")
    func bareCommand() throws {
        let scratch = try ScratchDirectory("piflash-fm")
        try Shell.sh("mkdir -p '\(scratch.path)/hosts' && touch '\(scratch.path)/hosts/bastet.toml' '\(scratch.path)/hosts/example.toml' '\(scratch.path)/hosts/.hidden.toml'")
        let run = try Shell.run(["bash", "-c", "cd '\(scratch.path)' && env -u PIFLASH_HOSTS '\(Shell.piflash)'"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.hasPrefix("usage: piflash HOST"), "\(run.stdout)")
        #expect(run.stdout.contains("hosts in \(scratch.path)/hosts (from ./hosts):\n  bastet  example\n"), "\(run.stdout)")
        #expect(!run.stdout.contains(".hidden"))
        #expect(!(run.stdout + run.stderr).contains("Missing expected argument"))
        #expect(run.stdout.split(separator: "\n").count < 20, "short: \(run.stdout)")

        // $PIFLASH_HOSTS is honoured, and no folder at all is said plainly.
        let empty = try ScratchDirectory("piflash-fm")
        let fromVariable = try Shell.run(["bash", "-c", "cd '\(empty.path)' && PIFLASH_HOSTS='\(scratch.path)/hosts' '\(Shell.piflash)'"])
        #expect(fromVariable.stdout.contains("(from $PIFLASH_HOSTS)"), "\(fromVariable.stdout)")
        if !FileManager.default.fileExists(atPath: "/etc/piflash/hosts") {
            let none = try Shell.run(["bash", "-c", "cd '\(empty.path)' && env -u PIFLASH_HOSTS '\(Shell.piflash)'"])
            #expect(none.status == 0)
            #expect(none.stdout.contains("no hosts folder"), "\(none.stdout)")
        }
    }
}
