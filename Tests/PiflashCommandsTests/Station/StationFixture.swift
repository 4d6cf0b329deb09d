import Foundation
import Testing

/// Loop devices reserved for the station tests (high numbers `losetup -f` does not reach in
/// practice), each standing in for a card reader: detached = no card; `losetup DEV FILE` = a card
/// inserted (udev sees a `change` with the size going from 0 to N).
struct ReservedLoop {
    let number: Int
    var path: String { "/dev/loop\(number)" }
    var majorMinor: String { "7:\(number)" }

    /// Makes sure the device exists and is detached; a device attached to a file that is not one
    /// of ours is left alone (the test then fails to reserve it).
    func reserve() throws {
        if let backing = backingFile() {
            guard backing.contains("piflash-station-test") else {
                throw FixtureError("\(path) is in use by someone else (\(backing))")
            }
            try Shell.sh("losetup -d \(path)")
        }
        if !FileManager.default.fileExists(atPath: path) {
            try Shell.sh("mknod \(path) b 7 \(number)")
        }
        // Opening the node makes the kernel create the loop device (so cgroup limits can name it).
        try Shell.sh("blockdev --getsize64 \(path) >/dev/null")
    }

    func backingFile() -> String? {
        let text = (try? Shell.sh("cat /sys/block/loop\(number)/loop/backing_file 2>/dev/null || true"))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        return text.isEmpty ? nil : text
    }

    /// Inserts a card: attaches the backing file.
    func insert(_ file: String) throws { try Shell.sh("losetup \(path) '\(file)'") }

    /// Pulls the card the way a reader shows it: the backing file loses its content and the size
    /// drops to 0 (`losetup -c`).
    func pull() throws {
        if let backing = backingFile() { try Shell.sh("truncate -s 0 '\(backing)' && losetup -c \(path)") }
    }

    func detach() { _ = try? Shell.run(["losetup", "-d", path]) }
}

/// Everything a station test needs, removed at the end even when the test fails: a scratch folder
/// with an image and two hosts (`dir` secrets with real ssh-keygen keys), a runtime udev rule
/// naming the slots of the reserved loop devices, and the station file.
final class StationFixture {
    let scratch: ScratchDirectory
    let image: String
    let imageSize: UInt64
    let hostsDir: String
    let journal: String
    let stateFile: String
    let configPath: String
    let loops: [ReservedLoop]
    let ruleFile: String
    private var cgroups: [String] = []

    /// - Parameters:
    ///   - slots: the loop numbers that get PIFLASH_SLOT (named TA, TB, …, in order).
    ///   - unslotted: loop numbers that are candidates but in no slot.
    ///   - hosts: host names to create (all in the queue).
    ///   - ageHost: a host (not in the queue) with the repository's age-encrypted demo secrets.
    ///   - psks: Wi-Fi passphrases by host (default `psk-HOST`).
    init(slots: [Int], unslotted: [Int] = [], hosts: [String] = ["pi-01", "pi-02"], imageMiB: Int? = nil,
         slotHosts: [Int: String] = [:], ageHost: String? = nil, extraConfig: String = "",
         psks: [String: String] = [:]) throws {
        scratch = try ScratchDirectory("piflash-station-test")
        loops = (slots + unslotted).map { ReservedLoop(number: $0) }
        for loop in loops { try loop.reserve() }
        // The image, as `piflash flash` would take it: compressed.
        let raw = scratch.file("nixos.img")
        var extra = ""
        if let imageMiB { extra = "--extra-mib \(imageMiB)" }
        try Shell.sh("'\(Shell.packageRoot)/scripts/mk-nixos-like-image' '\(raw)' \(extra) >/dev/null")
        imageSize = try FileManager.default.attributesOfItem(atPath: raw)[.size] as! UInt64
        image = try ImageFixture.compress(raw, "zst")
        hostsDir = scratch.file("hosts")
        for host in hosts {
            let secrets = "\(hostsDir)/secrets/\(host)"
            try Shell.sh("""
                mkdir -p '\(secrets)' && ssh-keygen -q -t ed25519 -N '' -C '' -f '\(secrets)/ssh_host_ed25519_key' \
                && rm '\(secrets)/ssh_host_ed25519_key.pub' && printf 'net-\(host)' > '\(secrets)/wifi_ssid' \
                && printf '\(psks[host] ?? "psk-\(host)")' > '\(secrets)/wifi_psk'
                """)
            try """
                [image]
                path = "../nixos.img.zst"
                [secrets]
                dir = "secrets/\(host)"
                \(HostFileText.canonicalFiles())
                """.write(toFile: "\(hostsDir)/\(host).toml", atomically: true, encoding: .utf8)
        }
        if let ageHost {
            // The repository's demo: secrets encrypted to hosts/demo-age-identity.txt (DEMO ONLY).
            try Shell.sh("cp '\(Shell.packageRoot)/hosts/secrets/example.yaml.age' '\(hostsDir)/secrets/\(ageHost).yaml.age'")
            try """
                [image]
                path = "../nixos.img.zst"
                [secrets]
                age = "secrets/\(ageHost).yaml.age"
                \(HostFileText.canonicalFiles(modes: false))
                """.write(toFile: "\(hostsDir)/\(ageHost).toml", atomically: true, encoding: .utf8)
        }
        journal = scratch.file("journal.sqlite")
        stateFile = scratch.file("run/station.json")
        ruleFile = "/run/udev/rules.d/61-piflash-station-test-\(getpid()).rules"
        var rules = "# piflash station tests: these loop devices only\n"
        var slotTables = ""
        for (index, number) in slots.enumerated() {
            let name = Self.slotName(index)
            rules += "SUBSYSTEM==\"block\", KERNEL==\"loop\(number)\", ENV{PIFLASH_SLOT}=\"\(name)-\(getpid())\", ENV{PIFLASH_CANDIDATE}=\"1\"\n"
            slotTables += "[[slot]]\nname = \"\(name)\"\nmatch = { PIFLASH_SLOT = \"\(name)-\(getpid())\" }\n"
            if let host = slotHosts[index] { slotTables += "host = \"\(host)\"\n" }
        }
        for number in unslotted {
            rules += "SUBSYSTEM==\"block\", KERNEL==\"loop\(number)\", ENV{PIFLASH_CANDIDATE}=\"1\"\n"
        }
        try FileManager.default.createDirectory(atPath: "/run/udev/rules.d", withIntermediateDirectories: true)
        try rules.write(toFile: ruleFile, atomically: true, encoding: .utf8)
        try Shell.sh("udevadm control --reload && udevadm settle")
        configPath = scratch.file("station.toml")
        try """
            hosts = "hosts"
            journal = "journal.sqlite"
            state_file = "run/station.json"
            queue = [\(hosts.map { "\"\($0)\"" }.joined(separator: ", "))]
            eject = false
            \(extraConfig)
            \(slotTables)
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    static func slotName(_ index: Int) -> String { "T" + String(UnicodeScalar(UInt8(65 + index))) }

    /// A fresh blank card file of the image's size plus 16 MiB.
    func blankCard(_ name: String) throws -> String {
        let file = scratch.file(name)
        try Shell.sh("truncate -s \(imageSize + (16 << 20)) '\(file)'")
        return file
    }

    /// A cgroup v1 blkio group throttling the given devices; the station is started inside it.
    func throttle(_ limits: [(majorMinor: String, writeBPS: UInt64, readBPS: UInt64?)]) throws -> String {
        let directory = "/sys/fs/cgroup/blkio/piflash-station-test-\(getpid())-\(cgroups.count)"
        guard FileManager.default.fileExists(atPath: "/sys/fs/cgroup/blkio") else {
            throw FixtureError("no cgroup v1 blkio hierarchy at /sys/fs/cgroup/blkio")
        }
        try Shell.sh("mkdir -p \(directory)")
        cgroups.append(directory)
        for limit in limits {
            try Shell.sh("echo '\(limit.majorMinor) \(limit.writeBPS)' > \(directory)/blkio.throttle.write_bps_device")
            if let read = limit.readBPS {
                try Shell.sh("echo '\(limit.majorMinor) \(read)' > \(directory)/blkio.throttle.read_bps_device")
            }
        }
        return directory
    }

    /// Lifts a device's write limit in a group.
    func unthrottle(_ directory: String, _ majorMinor: String) {
        _ = try? Shell.sh("echo '\(majorMinor) 0' > \(directory)/blkio.throttle.write_bps_device")
    }

    /// Starts the station with --json (on the fixture's station file, or `config`), optionally inside
    /// a throttling cgroup or a network namespace, and waits until it is ready.
    func startStation(config: String? = nil, cgroup: String? = nil, environment: [String] = [], netns: String? = nil)
        throws -> PiflashProcess
    {
        let wrap: ([String]) -> [String] = { command in
            var withEnvironment = environment.isEmpty ? command : ["env"] + environment + command
            if let netns { withEnvironment = ["ip", "netns", "exec", netns] + withEnvironment }
            guard let cgroup else { return withEnvironment }
            return ["bash", "-c", "echo $$ > \(cgroup)/cgroup.procs && exec \"$@\"", "piflash-station-test"] + withEnvironment
        }
        let station = try PiflashProcess(["station", "--config", config ?? configPath, "--json"], wrap: wrap)
        guard station.waitForLine(timeout: 60, { Self.event($0)?["state"] as? String == "ready" }) != nil else {
            let end = station.finish(timeout: 5)
            throw FixtureError("the station did not get ready: \(end.stderr) \(end.lines.suffix(5))")
        }
        return station
    }

    static func event(_ line: String) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    }

    /// The root partition (offset, size) of a card file, read with sfdisk (independent of piflash).
    static func rootPartition(of file: String) throws -> (offset: UInt64, size: UInt64) {
        let json = try Shell.sh("sfdisk -J '\(file)'")
        let table = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        let partitions = (table["partitiontable"] as! [String: Any])["partitions"] as! [[String: Any]]
        let root = partitions[1]
        return (UInt64(root["start"] as! Int) * 512, UInt64(root["size"] as! Int) * 512)
    }

    /// Mounts a card file's root partition read-only through an offset loop device (a kernel
    /// check, independent of libext2fs) and runs `body` with the mount point.
    static func withMountedRoot<T>(of file: String, in scratch: ScratchDirectory, _ body: (String) throws -> T) throws -> T {
        let (offset, size) = try rootPartition(of: file)
        let device = try Shell.sh("losetup -r -f --show -o \(offset) --sizelimit \(size) '\(file)'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Shell.run(["losetup", "-d", device]) }
        let mountPoint = scratch.file("mnt-\(UUID().uuidString.prefix(6))")
        try Shell.sh("mkdir -p '\(mountPoint)' && mount -t ext4 -o ro,noload \(device) '\(mountPoint)'")
        defer { _ = try? Shell.run(["umount", mountPoint]) }
        return try body(mountPoint)
    }

    deinit {
        for loop in loops { loop.detach() }
        try? FileManager.default.removeItem(atPath: ruleFile)
        _ = try? Shell.sh("udevadm control --reload")
        for directory in cgroups { _ = try? Shell.run(["rmdir", directory]) }
    }
}

/// The station tests need root, loop devices and a running systemd-udevd (started when it is not).
enum StationEnvironment {
    static let available: Bool = {
        guard Shell.isRoot else { return false }
        if (try? Shell.run(["udevadm", "control", "--ping"]))?.status == 0 { return true }
        guard FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd-udevd") else { return false }
        // The daemon must not inherit our pipes, or reading them to the end would never finish.
        _ = try? Shell.run(["bash", "-c", "/lib/systemd/systemd-udevd --daemon </dev/null >/dev/null 2>&1"])
        return (try? Shell.run(["udevadm", "control", "--ping", "--timeout=5"]))?.status == 0
    }()
}

/// The station's `--json` events read in order: each wait starts after the event the previous
/// wait returned, so an old event never answers a new question.
final class StationEvents {
    let process: PiflashProcess
    private var consumed = 0

    init(_ process: PiflashProcess) {
        self.process = process
    }

    /// Waits (bounded) for the next event satisfying `predicate`; nil when the station ended or
    /// the time ran out.
    func next(timeout: TimeInterval = 120, _ predicate: ([String: Any]) -> Bool) -> [String: Any]? {
        var index = 0
        var found: (Int, [String: Any])?
        let start = consumed
        _ = process.waitForLine(timeout: timeout) { line in
            defer { index += 1 }
            guard index >= start, let event = StationFixture.event(line), predicate(event) else { return false }
            found = (index, event)
            return true
        }
        guard let (position, event) = found else { return nil }
        consumed = position + 1
        return event
    }

    /// The next `slot` event of `slot` in `state`.
    func slot(_ slot: String, _ state: String, timeout: TimeInterval = 120) -> [String: Any]? {
        next(timeout: timeout) { $0["event"] as? String == "slot" && $0["slot"] as? String == slot && $0["state"] as? String == state }
    }

    /// The next `result` of `slot`.
    func result(_ slot: String, timeout: TimeInterval = 300) -> [String: Any]? {
        next(timeout: timeout) { $0["event"] as? String == "result" && $0["slot"] as? String == slot }
    }
}

/// A unix datagram socket standing in for systemd's `$NOTIFY_SOCKET`.
final class NotifySocket {
    let path: String
    private let fd: Int32

    init(in scratch: ScratchDirectory) throws {
        path = scratch.file("notify.sock")
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw FixtureError("cannot bind \(path)") }
    }

    /// The next datagram, waiting (poll) up to `timeout` seconds; nil when none came.
    func receive(timeout: Double) -> String? {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count < 0 ? nil : String(decoding: buffer.prefix(count), as: UTF8.self)
    }

    /// Waits for a datagram equal to `message`, skipping others (STATUS=…).
    func waitFor(_ message: String, timeout: Double = 30) -> Bool {
        while let received = receive(timeout: timeout) {
            if received == message { return true }
        }
        return false
    }

    deinit { close(fd) }
}
