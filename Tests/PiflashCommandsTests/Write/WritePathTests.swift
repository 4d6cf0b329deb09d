import Foundation
import Testing

/// `piflash write` and `piflash verify` end to end, on real loop devices and image files, checked
/// with cmp, sha256sum and raw reads — never by piflash alone.
@Suite("write path on loop devices", .serialized, .enabled(if: CandidateTagging.ready, "needs root and systemd-udevd"), .candidateTagging)
struct WritePathTests {
    @Test("raw, zstd, xz and gzip images land byte for byte and are verified", arguments: ["img", "zst", "xz", "gz"])
    func writesEveryCompression(kind: String) throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let image = try ImageFixture.compress(raw, kind)
        let size = try FileManager.default.attributesOfItem(atPath: raw)[.size] as! UInt64
        let card = try CandidateCard(scratch: scratch, size: size + 24 << 20)
        let run = try runPiflash(["write", image, "--device", card.path, "--yes", "--no-eject", "--json", "--journal", scratch.file("journal.sqlite")])
        #expect(run.status == 0, "stderr: \(run.stderr)")
        let result = try #require(run.result)
        #expect(result["ok"] as? Bool == true)
        #expect(result["image_sha256"] as? String == (try ImageFixture.sha256(raw)))
        #expect(result["bytes"] as? Int == Int(size))
        #expect(result["compression"] as? String == ["img": "raw", "zst": "zstd", "xz": "xz", "gz": "gzip"][kind])
        // Independent check: the device holds the image, byte for byte.
        let cmp = try Shell.run(["cmp", "-n", "\(size)", raw, card.path])
        #expect(cmp.status == 0, "cmp: \(cmp.stdout)\(cmp.stderr)")
    }

    @Test("unsafe targets are refused with exit 3 and a reason, and left unchanged", arguments: [
        "untagged", "mounted", "read-only", "too small",
    ])
    func refusesUnsafeTargets(case name: String) throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let device: String
        var keep: [AnyObject] = []
        switch name {
        case "untagged":
            let loop = try LoopDevice(backing: scratch.file("plain-disk"), size: 96 << 20)
            try Shell.sh("udevadm trigger --action=change --settle \(loop.path)")
            keep.append(loop)
            device = loop.path
        case "mounted":
            let card = try CandidateCard(scratch: scratch, size: 96 << 20)
            try Shell.sh("mkfs.ext4 -q -F \(card.path) && mkdir -p '\(scratch.file("mnt"))' && mount -o ro \(card.path) '\(scratch.file("mnt"))'")
            keep.append(card)
            device = card.path
        case "read-only":
            try Shell.sh("truncate -s \(96 << 20) '\(scratch.file("piflash-card-ro"))'")
            let loop = try LoopDevice(backing: scratch.file("piflash-card-ro"), readOnly: true)
            try Shell.sh("udevadm trigger --action=change --settle \(loop.path)")
            keep.append(loop)
            device = loop.path
        default:
            let card = try CandidateCard(scratch: scratch, size: 16 << 20)
            keep.append(card)
            device = card.path
        }
        defer { if name == "mounted" { _ = try? Shell.run(["umount", scratch.file("mnt")]) } }
        let before = try Shell.sh("sha256sum \(device)")
        let run = try runPiflash(["write", raw, "--device", device, "--yes", "--no-eject", "--json", "--journal", scratch.file("journal.sqlite")])
        #expect(run.status == 3, "\(name): \(run.result?["error"] ?? run.stderr)")
        let error = (run.result?["error"] as? String ?? "").lowercased()
        let expected = ["untagged": "not", "mounted": "mounted", "read-only": "read-only", "too small": "too small"][name]!
        #expect(error.contains(expected), "\(name): \(error)")
        #expect(try Shell.sh("sha256sum \(device)") == before, "the device is unchanged")
        _ = keep
    }

    @Test("peak memory does not grow with the image: 32 MiB and 1 GiB images")
    func memoryIsBounded() throws {
        let scratch = try ScratchDirectory()
        func peakRSS(imageMiB: Int) throws -> Int {
            let image = scratch.file("zeros-\(imageMiB).img.zst")
            try Shell.sh("head -c \(imageMiB << 20) /dev/zero | zstd -q -o '\(image)'")
            // The child's own peak (ru_maxrss of the one child of a fresh python3), in KiB.
            let script = "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); "
                + "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
            let run = try Shell.run(["python3", "-c", script, Shell.piflash, "write", image, "--output", scratch.file("out.img"),
                                     "--json", "--journal", scratch.file("journal.sqlite")])
            #expect(run.status == 0, "\(run.stderr)")
            try Shell.sh("rm -f '\(scratch.file("out.img"))' '\(image)'")
            return Int(run.stdout.split(separator: "\n").last!.trimmingCharacters(in: .whitespaces))!
        }
        let small = try peakRSS(imageMiB: 32)
        let large = try peakRSS(imageMiB: 1024)
        #expect(large < 64 << 10, "peak RSS \(large) KiB stays under 64 MiB")
        #expect(large - small < 4 << 10, "peak RSS grows by \(large - small) KiB from 32 MiB to 1 GiB")
    }

    @Test("without --device, a card inserted while waiting is found through udev and written")
    func waitsForACard() throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let process = try PiflashProcess(["write", raw, "--wait", "60", "--yes", "--no-eject", "--json",
                                          "--journal", scratch.file("journal.sqlite")])
        #expect(process.waitForLine { $0.contains("\"event\":\"waiting\"") } != nil, "piflash waits for a card")
        // Insert the card: attaching the backing file is what a reader's media change looks like.
        let card = try LoopDevice(backing: scratch.file("piflash-card-inserted"), size: 96 << 20)
        let (status, lines, stderr) = process.finish(timeout: 120)
        #expect(status == 0, "\(stderr)")
        let result = try #require(PiflashProcess.result(lines))
        #expect(result["device"] as? String == card.path)
        let size = try FileManager.default.attributesOfItem(atPath: raw)[.size] as! UInt64
        #expect(try Shell.run(["cmp", "-n", "\(size)", raw, card.path]).status == 0)
    }

    @Test("--output writes an image file that equals the image")
    func writesToAnImageFile() throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let zst = try ImageFixture.compress(raw, "zst")
        let run = try runPiflash(["write", zst, "--output", scratch.path, "--json", "--journal", scratch.file("journal.sqlite")])
        #expect(run.status == 0, "stderr: \(run.stderr)")
        let output = try #require(run.result?["output"] as? String)
        #expect(output == scratch.file("nixos.img"))
        #expect(try Shell.run(["cmp", raw, output]).status == 0)
    }

    @Test("a truncated or corrupt compressed image fails with exit 2: untouched when the map pass finds it, else no valid table",
          arguments: [("truncated", false), ("corrupt", false), ("truncated", true), ("corrupt", true)])
    func damagedImage(damage: String, full: Bool) throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let zst = try ImageFixture.compress(raw, "zst")
        let compressedSize = try FileManager.default.attributesOfItem(atPath: zst)[.size] as! Int
        if damage == "truncated" {
            try Shell.sh("truncate -s \(compressedSize / 2) '\(zst)'")
        } else {
            try Shell.sh("printf '\\xde\\xad\\xbe\\xef\\xde\\xad\\xbe\\xef' | dd of='\(zst)' bs=1 seek=\(compressedSize / 2) conv=notrunc status=none")
        }
        let card = try CandidateCard(scratch: scratch, size: 96 << 20)
        // The card held a valid image before.
        try Shell.sh("dd if='\(raw)' of=\(card.path) bs=1M conv=fsync status=none")
        let run = try runPiflash(["write", zst, "--device", card.path, "--yes", "--no-eject", "--json", "--journal", scratch.file("journal.sqlite")]
                                 + (full ? ["--full"] : []))
        #expect(run.status == 2)
        let result = try #require(run.result)
        #expect(result["ok"] as? Bool == false)
        let error = try #require(result["error"] as? String)
        #expect(error.contains(damage == "truncated" ? "ends early" : "corrupt"), "\(error)")
        let events = run.lines.joined(separator: "\n")
        if events.contains("\"phase\":\"write\"") {
            // The write had started: afterwards the card must not look valid.
            #expect(try headIsZeroed(card.path))
            #expect(try Shell.run(["sfdisk", "-d", card.path]).status != 0, "no partition table is left")
        } else {
            // The map pass found the damage before the card was opened: it is exactly as it was.
            #expect(!full, "only the map pass runs before the write")
            #expect(try Shell.run(["cmp", "-n", String(try FileManager.default.attributesOfItem(atPath: raw)[.size] as! Int), raw, card.path]).status == 0,
                    "the card was not touched")
        }
    }

    @Test("a dying card (I/O errors past some offset) fails with the offset and no valid table")
    func dyingCard() throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let tmpfs = scratch.file("small")
        try Shell.sh("mkdir -p '\(tmpfs)' && mount -t tmpfs -o size=24M tmpfs '\(tmpfs)'")
        defer { _ = try? Shell.run(["umount", "-l", tmpfs]) }
        let card = try CandidateCard(directory: tmpfs, size: 96 << 20)
        // --full: every byte goes to the card, so the write runs into the end of the medium.
        let run = try runPiflash(["write", raw, "--device", card.path, "--yes", "--no-eject", "--full", "--json", "--journal", scratch.file("journal.sqlite")])
        #expect(run.status == 1)
        let result = try #require(run.result)
        #expect(result["ok"] as? Bool == false)
        let offset = try #require(result["error_offset"] as? Int)
        #expect(offset >= 20 << 20 && offset <= 24 << 20, "the failure is placed where the medium ran out: \(offset)")
        #expect((result["error"] as? String)?.contains("at byte \(offset)") == true)
        #expect(try headIsZeroed(card.path))
    }

    @Test("a card pulled mid-write (size drops to 0) fails cleanly")
    func pulledCard() throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let card = try CandidateCard(scratch: scratch, size: 96 << 20)
        let throttle = try #require(ThrottleGroup(device: card.loop, writeBytesPerSecond: 8 << 20), "cgroup v1 blkio is needed")
        let process = try PiflashProcess(["write", raw, "--device", card.path, "--yes", "--no-eject", "--json", "--journal", scratch.file("journal.sqlite")], wrap: throttle.wrap)
        let progress = process.waitForLine { $0.contains("\"event\":\"progress\"") && $0.contains("\"phase\":\"write\"") }
        #expect(progress != nil, "the write started")
        // Pull the card: the backing file goes, the device's size drops to 0.
        try Shell.sh("truncate -s 0 '\(card.loop.backing)' && losetup -c \(card.path)")
        let (status, lines, stderr) = process.finish()
        #expect(status != 0, "stderr: \(stderr)")
        let result = try #require(PiflashProcess.result(lines))
        #expect(result["ok"] as? Bool == false)
        #expect((result["error"] as? String)?.isEmpty == false)
        #expect(!lines.contains { $0.contains("\"ok\":true") })
    }

    @Test("SIGINT mid-write stops, says where, and leaves no valid table")
    func interrupted() throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let card = try CandidateCard(scratch: scratch, size: 96 << 20)
        try Shell.sh("dd if='\(raw)' of=\(card.path) bs=1M conv=fsync status=none")
        let throttle = try #require(ThrottleGroup(device: card.loop, writeBytesPerSecond: 8 << 20), "cgroup v1 blkio is needed")
        let process = try PiflashProcess(["write", raw, "--device", card.path, "--yes", "--no-eject", "--json", "--journal", scratch.file("journal.sqlite")], wrap: throttle.wrap)
        #expect(process.waitForLine { $0.contains("\"event\":\"progress\"") && $0.contains("\"phase\":\"write\"") } != nil)
        kill(process.pid, SIGINT)
        let (status, lines, _) = process.finish()
        #expect(status == 1)
        let result = try #require(PiflashProcess.result(lines))
        #expect((result["error"] as? String)?.contains("interrupted by SIGINT while writing at byte") == true)
        #expect(try headIsZeroed(card.path))
    }

    @Test("verify names the first changed byte and exits 4; exit 0 on an intact card")
    func verifyFindsAChangedByte() throws {
        let scratch = try ScratchDirectory()
        let raw = try ImageFixture.make(in: scratch)
        let xz = try ImageFixture.compress(raw, "xz")
        let card = try CandidateCard(scratch: scratch, size: 80 << 20)
        try Shell.sh("dd if='\(raw)' of=\(card.path) bs=1M conv=fsync status=none")
        let intact = try runPiflash(["verify", xz, "--device", card.path, "--json"])
        #expect(intact.status == 0, "\(intact.stderr)")
        #expect(intact.result?["image_sha256"] as? String == (try ImageFixture.sha256(raw)))
        let offset = 41_234_567
        let original = try readBytes(card.path, count: 1, at: UInt64(offset))[0]
        try Shell.sh("printf '\\x\(String(format: "%02x", original ^ 0xff))' | dd of=\(card.path) bs=1 seek=\(offset) conv=notrunc,fsync status=none")
        let damaged = try runPiflash(["verify", xz, "--device", card.path, "--json"])
        #expect(damaged.status == 4)
        #expect(damaged.result?["error_offset"] as? Int == offset)
        #expect((damaged.result?["error"] as? String)?.contains("offset \(offset)") == true)
    }
}
