import Foundation
import Testing

/// The invariant of issue #9: a card carries a valid partition table only if every phase passed.
/// Checked with tools piflash did not write: `sfdisk -d` and `blkid -p` must find no table on a card
/// whose run did not end `ok`; a card whose run did is fully provisioned (e2fsck, a kernel mount).
@Suite("a card that looks valid is a provisioned, verified card", .serialized,
       .enabled(if: CandidateTagging.ready, "needs root (loop devices, mounts, cgroup v1 blkio) and systemd-udevd"),
       .candidateTagging)
struct AtomicFlashTests {
    /// Whether an independent tool finds a partition table (or any signature) on the card.
    func looksValid(_ device: String) throws -> (sfdisk: Bool, blkid: Bool) {
        _ = try Shell.run(["blockdev", "--flushbufs", device])
        let sfdisk = try Shell.run(["sfdisk", "-d", device])
        let blkid = try Shell.run(["blkid", "-p", "-c", "/dev/null", device])
        return (sfdisk.status == 0 && sfdisk.stdout.contains("start="), blkid.status == 0 && blkid.stdout.contains("PTTYPE"))
    }

    /// A provisioned card: the table is there, e2fsck is clean, the kernel reads the host key.
    func checkProvisioned(_ device: String, host: HostFixture) throws {
        let root = try rootPartition(of: device)
        let fsck = try Shell.run(["e2fsck", "-fn", "\(device)?offset=\(root.offset)"])
        #expect(fsck.status == 0, "e2fsck: \(fsck.stdout)")
        let mount = try KernelMount(image: device, offset: root.offset, size: root.size, scratch: host.scratch)
        let key = try String(contentsOfFile: host.hostKeyFile, encoding: .utf8)
        #expect(try mount.contents("/var/lib/bootstrap/ssh_host_ed25519_key") == Data(key.utf8))
        #expect(try mount.contents("/var/lib/networkmanager/system-connections.env").count > 0)
    }

    /// Where to kill: a phase's event, then how many further progress events of it to let pass.
    struct Moment: CustomStringConvertible {
        var event: String
        var phase: String
        var progressAfter: Int
        /// Flash with --full (every byte) rather than the mapped ranges.
        var full = false
        var description: String { "\(event) \(phase) +\(progressAfter)\(full ? " --full" : "")" }
    }

    @Test("SIGKILL at random moments in every phase: no table unless the run ended ok")
    func sigkillAnywhere() throws {
        let host = try HostFixture(compression: "zst", extraMiB: 24)
        var generator = SystemRandomNumberGenerator()
        var moments: [Moment] = [
            Moment(event: "phase", phase: "capacity", progressAfter: 0),
            Moment(event: "phase", phase: "inject", progressAfter: 0),
            Moment(event: "phase", phase: "check-files", progressAfter: 0),
            Moment(event: "phase_done", phase: "check-files", progressAfter: 0),
            Moment(event: "phase", phase: "commit", progressAfter: 0),
        ]
        for phase in ["write", "verify"] {
            // A mapped flash moves few bytes (few progress events); --full moves them all.
            for full in [false, false, true, true] {
                moments.append(Moment(event: "phase", phase: phase,
                                      progressAfter: Int.random(in: 0...(full ? 4 : 1), using: &generator), full: full))
            }
        }
        moments.shuffle(using: &generator)
        var killedBeforeOk = 0
        for moment in moments {
            let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
            let throttle = try #require(
                ThrottleGroup(device: card.loop, writeBytesPerSecond: 12 << 20, readBytesPerSecond: 24 << 20),
                "cgroup v1 blkio is needed")
            let process = try PiflashProcess(
                host.flashArguments(["--device", card.path, "--yes", "--no-eject"] + (moment.full ? ["--full"] : [])),
                wrap: throttle.wrap)
            let started = process.waitForLine {
                $0.contains("\"event\":\"\(moment.event)\"") && $0.contains("\"phase\":\"\(moment.phase)\"")
            }
            var progress = 0
            if started != nil && moment.progressAfter > 0 {
                _ = process.waitForLine {
                    if $0.contains("\"event\":\"progress\"") && $0.contains("\"phase\":\"\(moment.phase)\"") { progress += 1 }
                    return progress >= moment.progressAfter
                }
            }
            kill(process.pid, SIGKILL)
            let (_, lines, _) = process.finish()
            let ok = PiflashProcess.result(lines)?["ok"] as? Bool == true
            let found = try looksValid(card.path)
            if ok {
                #expect(found.sfdisk && found.blkid, "\(moment): an ok run leaves a table")
                try checkProvisioned(card.path, host: host)
            } else if (moment.phase == "commit" || moment.event == "phase_done" && moment.phase == "check-files")
                        && (found.sfdisk || found.blkid) {
                // Killed after the last check passed, while or after the head was written but before
                // `ok` was printed: the only moment a table may exist without `ok` — and then every
                // phase passed and the card is complete.
                try checkProvisioned(card.path, host: host)
            } else {
                killedBeforeOk += 1
                #expect(!found.sfdisk, "\(moment): sfdisk -d finds a table on a card whose run did not end ok")
                #expect(!found.blkid, "\(moment): blkid -p finds a table on a card whose run did not end ok")
            }
        }
        #expect(killedBeforeOk >= moments.count - 2, "most kills landed before the end (\(killedBeforeOk) of \(moments.count))")
    }

    @Test("a card pulled during the read-back or the injection keeps no table", arguments: ["verify", "inject"])
    func pulledMidJob(phase: String) throws {
        let host = try HostFixture(compression: "zst", extraMiB: 24)
        let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        let throttle = try #require(
            ThrottleGroup(device: card.loop, writeBytesPerSecond: 12 << 20, readBytesPerSecond: 24 << 20),
            "cgroup v1 blkio is needed")
        let process = try PiflashProcess(host.flashArguments(["--device", card.path, "--yes", "--no-eject"]), wrap: throttle.wrap)
        #expect(process.waitForLine { $0.contains("\"event\":\"phase\"") && $0.contains("\"phase\":\"\(phase)\"") } != nil)
        // The reader loses the card's tail: what the card still has is checked below.
        try Shell.sh("truncate -s \(40 << 20) '\(card.loop.backing)' && losetup -c \(card.path)")
        let (status, lines, stderr) = process.finish()
        #expect(status != 0, "stderr: \(stderr)")
        let result = try #require(PiflashProcess.result(lines))
        #expect(result["ok"] as? Bool == false)
        #expect((result["error"] as? String)?.isEmpty == false)
        let found = try looksValid(card.path)
        #expect(!found.sfdisk && !found.blkid, "a pulled card (\(phase)) holds no partition table")
        #expect(try headIsZeroed(card.path))
    }

    @Test("verify --host: exit 0 on an intact card; 4 with the offset for a flipped byte in the body, an injected block and the head")
    func verifyHost() throws {
        let host = try HostFixture()
        let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        let flash = try runPiflash(host.flashArguments(["--device", card.path, "--yes", "--no-eject"]))
        #expect(flash.status == 0, "\(flash.stderr)")
        #expect((flash.result?["injected_blocks"] as? Int ?? 0) > 0)
        let verify = ["verify", "--host", host.name, "--device", card.path, "--hosts", host.hostsDirectory,
                      "--age-identity", host.identityFile, "--journal", host.scratch.file("journal.sqlite"), "--json"]
        let intact = try runPiflash(verify)
        #expect(intact.status == 0, "\(intact.result?["error"] ?? intact.stderr)")

        // The journal holds keyed digests only (the host has secrets).
        let history = try Shell.run([Shell.piflash, "history", host.name, "--json", "--journal", host.scratch.file("journal.sqlite")])
        #expect(history.stdout.contains("\"hmac_sha256\""), "keyed digests of the injected blocks")

        let root = try rootPartition(of: card.path)
        let blockSize = UInt64(try Shell.sh("dumpe2fs -h '\(card.path)?offset=\(root.offset)' 2>/dev/null | awk -F: '/^Block size/ {print $2}'")
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        let block = UInt64(try Shell.sh("debugfs -R 'bmap /var/lib/bootstrap/ssh_host_ed25519_key 0' '\(card.path)?offset=\(root.offset)' 2>/dev/null")
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        let keyByte = root.offset + block * blockSize + 7
        // A byte the flash wrote past the head: the middle of its first written range there.
        let entries = history.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let entry = try #require(entries.first { $0["ok"] as? Bool == true })
        let ranges = try #require(entry["written_ranges"] as? [[String: Any]])
        let body = try #require(ranges.compactMap { range -> UInt64? in
            guard let offset = range["offset"] as? Int, let length = range["length"] as? Int, offset >= 1 << 20 else { return nil }
            return UInt64(offset + length / 2)
        }.first, "a sparse flash records the ranges it wrote")
        let cases: [(String, UInt64, String)] = [("body", body, "image"), ("injected file", keyByte, "injected_block"),
                                                 ("head", 446, "image")]
        for (name, offset, region) in cases {
            let original = try readBytes(card.path, count: 1, at: offset)[0]
            try flip(card.path, at: offset, to: original ^ 0x5a)
            let damaged = try runPiflash(verify)
            #expect(damaged.status == 4, "\(name): \(damaged.result?["error"] ?? damaged.stderr)")
            let reported = UInt64(damaged.result?["error_offset"] as? Int ?? -1)
            if region == "image" {
                #expect(reported == offset, "\(name)")
            } else {
                #expect(reported <= offset && offset < reported + 4096, "\(name): \(reported) names the block holding \(offset)")
            }
            #expect(damaged.result?["error_region"] as? String == region, "\(name)")
            #expect((damaged.result?["error"] as? String)?.contains("offset \(reported)") == true)
            try flip(card.path, at: offset, to: original)
        }
        #expect(try runPiflash(verify).status == 0, "restored")
        // `verify IMAGE --device` keeps working for write cards; on a provisioned card it finds the injection.
        let plain = try runPiflash(["verify", host.image, "--device", card.path, "--json"])
        #expect(plain.status == 4)
    }

    @Test("one owner of the card: a whole flash opens the card by path once (e2fsck, a child process, aside)")
    func cardOpenedOnce() throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/strace"), "strace is installed by make test")
        let host = try HostFixture()
        let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        let trace = host.scratch.file("strace.txt")
        let process = try PiflashProcess(host.flashArguments(["--device", card.path, "--yes", "--no-eject"]),
                                         wrap: { ["strace", "-f", "-qq", "-e", "trace=openat,open,execve", "-o", trace] + $0 })
        let (status, lines, stderr) = process.finish()
        #expect(status == 0, "\(PiflashProcess.result(lines)?["error"] ?? stderr)")
        let text = try String(contentsOfFile: trace, encoding: .utf8)
        let events = text.split(separator: "\n")
        // Processes other than piflash's own threads: the e2fsck it runs.
        let children = Set(events.filter { $0.contains("execve(") && !$0.contains("piflash") }.compactMap { $0.split(separator: " ").first })
        let opens = events.filter { line in
            (line.contains("openat(") || line.contains(" open(")) && line.contains("\"\(card.path)\"")
                && !children.contains(line.split(separator: " ").first ?? "")
        }
        #expect(opens.count == 1, "the card is opened once, exclusively: \(opens)")
        #expect(opens.first?.contains("O_EXCL") == true)
        #expect(!children.isEmpty, "e2fsck ran (as a child) and was told apart")
    }

    func flip(_ device: String, at offset: UInt64, to value: UInt8) throws {
        try Shell.sh("printf '\\x\(String(format: "%02x", value))' | dd of=\(device) bs=1 seek=\(offset) conv=notrunc,fsync status=none")
        _ = try Shell.run(["blockdev", "--flushbufs", device])
    }

    @Test("a dir-secrets host flashes, verifies and prints its known_hosts line with no age key anywhere")
    func dirSecretsNeedNoAgeKey() throws {
        let host = try HostFixture(dirSecrets: true)
        let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        let home = host.scratch.file("empty-home")
        try Shell.sh("mkdir -p '\(home)'")
        let noAge: ([String]) -> [String] = { ["env", "-u", "SOPS_AGE_KEY", "-u", "SOPS_AGE_KEY_FILE", "HOME=\(home)", "XDG_CONFIG_HOME=\(home)"] + $0 }
        let arguments = ["flash", host.name, "--hosts", host.hostsDirectory, "--json", "--journal", host.scratch.file("journal.sqlite"),
                         "--device", card.path, "--yes", "--no-eject"]
        let process = try PiflashProcess(arguments, wrap: noAge)
        let (status, lines, stderr) = process.finish()
        #expect(status == 0, "\(PiflashProcess.result(lines)?["error"] ?? stderr)")
        try checkProvisioned(card.path, host: host)
        let verify = try PiflashProcess(["verify", "--host", host.name, "--device", card.path, "--hosts", host.hostsDirectory,
                                         "--journal", host.scratch.file("journal.sqlite"), "--json"], wrap: noAge)
        #expect(verify.finish().status == 0)
        let known = try PiflashProcess(["known-hosts", host.name, "--hosts", host.hostsDirectory], wrap: noAge).finish()
        #expect(known.status == 0, "\(known.stderr)")
    }

    @Test("the three host-file mistakes: exit 2 from hosts --check and from flash, the card byte for byte untouched", arguments: [
        "nix-path-registration", "component over 255 bytes", "a file that is another file's parent",
    ])
    func hostFileMistakes(mistake: String) throws {
        let host = try HostFixture()
        let file = "\(host.hostsDirectory)/\(host.name).toml"
        var toml = try String(contentsOfFile: file, encoding: .utf8)
        switch mistake {
        case "nix-path-registration":
            toml = toml.replacingOccurrences(of: "\"/var/lib/networkmanager/system-connections.env\"", with: "\"/nix-path-registration\"")
        case "component over 255 bytes":
            toml = toml.replacingOccurrences(of: "\"/var/lib/networkmanager/", with: "\"/var/lib/\(String(repeating: "n", count: 256))/")
        default:
            toml = toml.replacingOccurrences(of: "\"/var/lib/networkmanager/system-connections.env\"", with: "\"/var/lib/bootstrap/ssh_host_ed25519_key/env\"")
        }
        try toml.write(toFile: file, atomically: true, encoding: .utf8)
        let check = try Shell.run([Shell.piflash, "hosts", "--check", "--hosts", host.hostsDirectory, "--age-identity", host.identityFile])
        #expect(check.status == 2, "hosts --check: \(check.stdout)\(check.stderr)")
        let card = try CandidateCard(scratch: host.scratch, size: 96 << 20)
        try Shell.sh("head -c \(96 << 20) /dev/urandom > '\(host.scratch.file("before"))' && dd if='\(host.scratch.file("before"))' of=\(card.path) bs=4M conv=fsync status=none")
        let run = try runPiflash(host.flashArguments(["--device", card.path, "--yes", "--no-eject"]))
        #expect(run.status == 2, "\(run.result?["error"] ?? run.stderr)")
        #expect(try Shell.run(["cmp", host.scratch.file("before"), card.path]).status == 0, "the card is byte for byte untouched")
    }
}
