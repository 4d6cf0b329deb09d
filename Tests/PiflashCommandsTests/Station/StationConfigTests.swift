import Foundation
import PiflashKit
import Testing

/// The station file, the card tracker, the slot lines and the state file: pure logic, runs anywhere.
@Suite("station file, card tracking and state")
struct StationConfigTests {
    let path = "/etc/piflash/station.toml"

    @Test("the spec's example parses, relative paths resolved against the file")
    func specExample() throws {
        let config = try StationConfig.parse("""
            hosts = "pis/hosts"
            journal = "/var/lib/piflash/journal.sqlite"
            queue = ["pi-01", "pi-02", "pi-03"]
            reflash = true
            max_size = "64G"
            [[slot]]
            name = "A"
            match = { PIFLASH_SLOT = "A" }
            host = "bastet"
            [[slot]]
            name = "B"
            match = { PIFLASH_SLOT = "B", ID_PATH = "pci-*-usb-0:2:*" }
            reflash = false
            """, path: path)
        #expect(config.hosts == "/etc/piflash/pis/hosts")
        #expect(config.journal == "/var/lib/piflash/journal.sqlite")
        #expect(config.queue == ["pi-01", "pi-02", "pi-03"])
        #expect(config.maxSize == 64 << 30)
        #expect(config.slots.map(\.name) == ["A", "B"])
        #expect(config.slots[0].host == "bastet")
        #expect(config.reflash(config.slots[0]) == true)
        #expect(config.reflash(config.slots[1]) == false)
        #expect(config.slot(for: ["PIFLASH_SLOT": "A"])?.name == "A")
        #expect(config.slot(for: ["PIFLASH_SLOT": "B", "ID_PATH": "pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0"])?.name == "B")
        #expect(config.slot(for: ["PIFLASH_SLOT": "B", "ID_PATH": "pci-0000:00:14.0-usb-0:3:1.0"]) == nil)
        #expect(config.slot(for: ["ID_PATH": "x"]) == nil, "a disk in no slot")
    }

    @Test("a postgresql:// journal is kept as it is; name and heartbeat_timeout; the state file then defaults beside the default journal")
    func sharedJournal() throws {
        let config = try StationConfig.parse("""
            journal = "postgresql://piflash@db.lan:5433/piflash?sslmode=require"
            name = "bench-1"
            heartbeat_timeout = 30
            queue = ["pi-01"]
            [[slot]]
            name = "A"
            match = { PIFLASH_SLOT = "A" }
            """, path: path)
        #expect(config.journal == "postgresql://piflash@db.lan:5433/piflash?sslmode=require")
        #expect(config.name == "bench-1")
        #expect(config.heartbeatTimeout == 30)
        #expect(try StationConfig.parse("queue = [\"a\"]\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", path: path)
            .heartbeatTimeout == 60)
        if geteuid() != 0 {
            #expect(config.defaultStateFile(environment: ["HOME": "/home/u"]) == "/home/u/.local/state/piflash/station.json")
        }
    }

    @Test("unknown keys and broken rules are usage errors naming the key", arguments: [
        ("hosts = \"h\"\nqueue = [\"a\"]\njornal = \"x\"\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", "unknown key `jornal`"),
        ("queue = [\"a\"]\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }\nhots = \"b\"", "unknown key `hots`"),
        ("queue = [\"a\"]", "no [[slot]]"),
        ("[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", "no `queue`"),
        ("queue = [\"a\"]\n[[slot]]\nname = \"A\"\nmatch = {}", "empty `match`"),
        ("queue = [\"a\"]\n[[slot]]\nname = \"A\"", "needs `match`"),
        ("queue = [\"a\", \"a\"]\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", "twice"),
        ("queue = [\"a\"]\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }\n[[slot]]\nname = \"A\"\nmatch = { S = \"B\" }", "two slots"),
        ("queue = [\"a\"]\nreflash = \"yes\"\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", "true or false"),
        ("queue = [\"a\"\n", "malformed TOML"),
        ("journal = \"postgresql://db.lan/piflash\"\nqueue = [\"a\"]\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", "no user"),
        ("journal = \"postgresql://u@db.lan\"\nqueue = [\"a\"]\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", "no database"),
        ("name = \"bench 1\"\nqueue = [\"a\"]\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", "station name"),
        ("heartbeat_timeout = 1\nqueue = [\"a\"]\n[[slot]]\nname = \"A\"\nmatch = { S = \"A\" }", "heartbeat_timeout"),
    ])
    func rejects(text: String, message: String) {
        do {
            _ = try StationConfig.parse(text, path: path)
            Issue.record("accepted: \(text)")
        } catch let error as PiflashError {
            #expect(error.status == .usage)
            #expect(error.message.contains(message), "\(error.message)")
            #expect(error.message.contains(path))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a reader's card arrives on add or on a change from size 0 to N, not on a change that keeps the size")
    func tracker() {
        var tracker = CardTracker()
        let reader = "/sys/devices/pci0000:00/usb1/1-1/host2/target2:0:0/2:0:0:0/block/sdb"
        #expect(tracker.observe(action: "add", syspath: reader, size: 0) == .none, "an empty reader appears")
        #expect(tracker.observe(action: "change", syspath: reader, size: 31_914_983_424) == .arrived(size: 31_914_983_424))
        #expect(tracker.observe(action: "change", syspath: reader, size: 31_914_983_424) == .none, "udev's watch after a write")
        #expect(tracker.observe(action: "change", syspath: reader, size: 0) == .removed)
        #expect(tracker.observe(action: "change", syspath: reader, size: 0) == .none)
        #expect(tracker.observe(action: "change", syspath: reader, size: 15_931_539_456) == .arrived(size: 15_931_539_456))
        #expect(tracker.observe(action: "remove", syspath: reader, size: 0) == .removed)
        #expect(tracker.observe(action: "add", syspath: "/sys/devices/virtual/block/mmcblk0", size: 1 << 30) == .arrived(size: 1 << 30))
        var seeded = CardTracker()
        seeded.seed(syspath: reader, size: 1 << 30)
        #expect(seeded.observe(action: "change", syspath: reader, size: 1 << 30) == .none, "a card present at start-up")
    }

    @Test("slot lines and the state file round trip")
    func stateFileRoundTrip() throws {
        let folder = NSTemporaryDirectory() + "piflash-state-\(getpid())-\(UUID().uuidString.prefix(6))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = StationStatusFile(path: folder + "/station.json")
        let slots = [
            SlotStatus(slot: "A", state: .flashing(phase: "write", done: 50, total: 200, rate: 20 * 1_048_576), device: "/dev/sdb", host: "pi-01"),
            SlotStatus(slot: "B", state: .verified(alreadyProvisioned: true), device: "/dev/sdc", host: "pi-02"),
            SlotStatus(slot: "C", state: .failed(reason: "the card was removed"), host: "pi-03"),
            SlotStatus(slot: "D"),
        ]
        try file.write(.init(pid: getpid(), config: "/etc/piflash/station.toml", startedAt: Date(), updatedAt: Date(),
                             running: true, slots: slots))
        let back = try file.read()
        #expect(back.pid == getpid())
        #expect(back.processAlive)
        #expect(back.slots.map(\.state) == slots.map(\.state))
        #expect(back.slots.map(\.host) == slots.map(\.host))
        #expect(back.slots[0].line == "A  flashing pi-01  write 25%  20.0 MiB/s  /dev/sdb")
        #expect(back.slots[1].line.contains("verified ✓ pi-02 (already provisioned"))
        #expect(back.slots[2].line == "C  failed ✗ pi-03: the card was removed")
        #expect(back.slots[3].line == "D  idle")
        #expect(back.lines[0].hasPrefix("station running (pid \(getpid()))"))
    }

    @Test("READY=1 reaches $NOTIFY_SOCKET as a datagram")
    func notify() throws {
        let scratch = try ScratchDirectory()
        let socket = try NotifySocket(in: scratch)
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.path])
        #expect(notifier.notify("READY=1"))
        #expect(socket.receive(timeout: 5) == "READY=1")
        #expect(!SystemdNotifier(environment: [:]).notify("READY=1"), "nothing without systemd")
    }
}
