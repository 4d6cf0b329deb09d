import PiflashKit
import PiflashPlatform
import Testing

/// The policy's rules one by one, on samples changed the way the machine would show them.
@Suite("Safety policy rules", .enabled(if: UdevSamples.available, Comment(rawValue: UdevSamples.skipMessage)))
struct SafetyPolicyTests {
    func card() throws -> DiskDescription {
        // A USB reader with a 4 GB card, sdd + sdd1 (8:48, 8:49).
        var disk = try #require(DiskDescription.fromRecords(try UdevSamples.records("usb-sd-reader-card.txt")).first)
        disk.size = 3_965_190_144
        disk.removable = true
        return disk
    }

    @Test("auto-mounted partitions are not a reason: they are listed to unmount, deepest first")
    func autoMounts() throws {
        let mounts = mountinfo([
            ("8:49", "/dev/sdd1", "/media/me/CARD", "vfat"),
            ("8:49", "/dev/sdd1", "/media/me/CARD/bind", "vfat"),
            ("8:49", "/dev/sdd1", "/run/media/me/CARD", "vfat"),
            ("8:49", "/dev/sdd1", "/mnt", "vfat"),
        ])
        let decision = SafetyPolicy().decide(try card(), mounts: mounts)
        #expect(decision.isCandidate)
        #expect(decision.autoMounts.map(\.mountPoint) == ["/media/me/CARD/bind", "/run/media/me/CARD", "/media/me/CARD", "/mnt"])
    }

    @Test("a mount elsewhere is refused: someone mounted it on purpose")
    func mountedElsewhere() throws {
        let decision = SafetyPolicy().decide(try card(), mounts: mountinfo([("8:49", "/dev/sdd1", "/srvdata/photos", "vfat")]))
        #expect(decision.reasons == [.mounted(device: "sdd1", mountPoint: "/srvdata/photos")])
    }

    @Test("system paths", arguments: ["/", "/boot", "/boot/efi", "/usr", "/var", "/var/lib/docker", "/home", "/nix", "/nix/store", "/tmp"])
    func systemPaths(path: String) throws {
        #expect(SafetyPolicy.isSystemPath(path))
        let decision = SafetyPolicy().decide(try card(), mounts: mountinfo([("8:49", "/dev/sdd1", path, "ext4")]))
        #expect(decision.reasons == [.systemMount(device: "sdd1", mountPoint: path)])
    }

    @Test("auto-mount locations are not system paths", arguments: ["/media/u/X", "/run/media/u/X", "/mnt", "/mnt/card"])
    func notSystemPaths(path: String) {
        #expect(!SafetyPolicy.isSystemPath(path))
        #expect(SafetyPolicy.isAutoMount(path))
    }

    @Test("a mount of the whole disk counts like a partition's")
    func wholeDiskMounted() throws {
        let decision = SafetyPolicy().decide(try card(), mounts: mountinfo([("8:48", "/dev/sdd", "/home", "ext4")]))
        #expect(decision.reasons == [.systemMount(device: "sdd", mountPoint: "/home")])
    }

    @Test("swap on a partition is refused")
    func swap() throws {
        let swaps = SwapTable.parse(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/sdd1                               partition\t1048572\t\t0\t\t-2\n",
            resolve: { path, _ in path == "/dev/sdd1" ? BlockDeviceNumber(major: 8, minor: 49) : nil })
        #expect(swaps == [SwapEntry(path: "/dev/sdd1", type: "partition", device: BlockDeviceNumber(major: 8, minor: 49))])
        let decision = SafetyPolicy().decide(try card(), mounts: MountTable(), swaps: swaps)
        #expect(decision.reasons == [.swap(device: "/dev/sdd1")])
        // A swap file elsewhere does not matter.
        let other = SwapTable.parse("Filename Type Size Used Priority\n/swapfile file 1048572 0 -2\n",
                                    resolve: { _, _ in BlockDeviceNumber(major: 254, minor: 0) })
        #expect(SafetyPolicy().decide(try card(), mounts: MountTable(), swaps: other).isCandidate)
    }

    @Test("a holder (LUKS, LVM) refuses the disk, and its system mount too")
    func holders() throws {
        var disk = try card()
        disk.holders = [UdevHolder(sysname: "dm-0", deviceNumber: BlockDeviceNumber(major: 253, minor: 0), holds: "sdd1",
                                   mapperName: "luks-root")]
        let unmounted = SafetyPolicy().decide(disk, mounts: MountTable())
        #expect(unmounted.reasons == [.heldBy(device: "sdd1", holder: "dm-0 (luks-root)")])
        let mounted = SafetyPolicy().decide(disk, mounts: mountinfo([("253:0", "/dev/mapper/luks-root", "/", "ext4")]))
        #expect(Set(mounted.reasons.map(\.code)) == ["system_mount", "held"])
        #expect(mounted.reasons.contains(.systemMount(device: "dm-0 (luks-root)", mountPoint: "/")))
    }

    @Test("the eMMC whose system is on a dm-crypt holder")
    func emmcWithEncryptedSystem() throws {
        // CRYPTO_FDE: no MMC type in the dump, but the holder backs /.
        var disk = try #require(DiskDescription.fromRecords(try UdevSamples.records("emmc-system-fde.txt")).first)
        disk.size = 31_268_536_320
        disk.holders = [UdevHolder(sysname: "dm-0", deviceNumber: BlockDeviceNumber(major: 253, minor: 0), holds: "mmcblk0p4",
                                   mapperName: "ubuntu-data")]
        let decision = SafetyPolicy().decide(disk, mounts: mountinfo([("253:0", "/dev/mapper/ubuntu-data", "/writable", "ext4")]))
        #expect(Set(decision.reasons.map(\.code)) == ["system_mount", "held"])
    }

    @Test("the eMMC flagged as SD is refused by its system mount even without the MMC type")
    func flaggedEMMCWithoutType() throws {
        var disk = try #require(DiskDescription.fromRecords(try UdevSamples.records("emmc-system-flagged-as-sd.txt")).first)
        #expect(disk.properties["ID_DRIVE_FLASH_SD"] == "1")
        disk.size = 31_268_536_320
        #expect(SafetyPolicy().decide(disk, mounts: MountTable()).isCandidate == true,
                "without sysfs type or mounts nothing in this dump tells eMMC from SD")
        let decision = SafetyPolicy().decide(disk, mounts: mountinfo([("179:2", "/dev/mmcblk0p2", "/", "ext4")]))
        #expect(decision.reasons == [.systemMount(device: "mmcblk0p2", mountPoint: "/")])
    }

    @Test("size limits: too small for the image, larger than --max-size, no medium")
    func sizes() throws {
        var disk = try card()
        let small = SafetyPolicy(imageSize: 4 * GiB).decide(disk, mounts: MountTable())
        #expect(small.reasons == [.tooSmall(size: 3_965_190_144, needed: 4 * GiB)])
        #expect(small.reasons[0].description.contains("too small"))
        #expect(SafetyPolicy(imageSize: 3_965_190_144).decide(disk, mounts: MountTable()).isCandidate, "exactly the image size fits")
        #expect(SafetyPolicy(maxSize: 2 * GiB).decide(disk, mounts: MountTable()).reasons
            == [.tooLarge(size: 3_965_190_144, limit: 2 * GiB)])
        disk.size = 0
        let empty = SafetyPolicy(imageSize: 4 * GiB).decide(disk, mounts: MountTable())
        #expect(empty.reasons == [.noMedium(bus: .usb)])
        #expect(empty.reasons[0].description == "has no medium: no card in the reader")
    }

    @Test("read-only comes from sysfs only")
    func readOnly() throws {
        var disk = try card()
        disk.readOnly = true
        #expect(SafetyPolicy().decide(disk, mounts: MountTable()).reasons == [.readOnly(bus: .usb)])
    }

    @Test("a tag makes a disk a candidate; it does not override the rest")
    func tag() throws {
        var loop = try #require(DiskDescription.fromRecords(try UdevSamples.records("loop-snap.txt")).first)
        loop.size = 64 << 20
        #expect(SafetyPolicy().decide(loop, mounts: MountTable()).reasons == [.notCandidate(bus: .loop)])
        loop.properties["PIFLASH_CANDIDATE"] = "1"
        let tagged = SafetyPolicy().decide(loop, mounts: MountTable())
        #expect(tagged.isCandidate)
        #expect(tagged.candidateBecause == ["tagged"])
        loop.readOnly = true
        #expect(SafetyPolicy().decide(loop, mounts: MountTable()).reasons == [.readOnly(bus: .loop)])
    }

    @Test("a hypervisor's SCSI 'Virtual disk' is refused for not being removable, not as BMC media")
    func hypervisorDisk() {
        let disk = DiskDescription(devnode: "/dev/sda", sysname: "sda", devpath: "/devices/pci0000:00/0000:00:10.0/host2/target2:0:0/2:0:0:0/block/sda",
                                   model: "Virtual disk", vendor: "VMware", size: 16 * GiB, bus: .scsi)
        #expect(SafetyPolicy().decide(disk, mounts: MountTable()).reasons == [.notCandidate(bus: .scsi)])
    }

    @Test("all three empty LUNs of a multi-card reader have no medium")
    func multiLUN() throws {
        let disks = DiskDescription.fromRecords(try UdevSamples.records("usb-sd-reader-multilun-empty-slots.txt"))
        #expect(disks.count == 3)
        for disk in disks {
            #expect(SafetyPolicy().decide(disk, mounts: MountTable()).reasons == [.noMedium(bus: .usb)])
        }
    }

    @Test("media events: the bogus /sdb change is ignored, a change with a size is an arrival")
    func mediaEvents() throws {
        func event(_ record: UdevRecord, size: UInt64?) -> UdevEvent {
            let properties = record.propertyMap
            return UdevEvent(action: properties["ACTION"] ?? "", sysname: record.sysname ?? "", devpath: record.devpath ?? "",
                             syspath: "/sys" + (record.devpath ?? ""), devnode: properties["DEVNAME"],
                             devtype: properties["DEVTYPE"], deviceNumber: nil, seqnum: UInt64(properties["SEQNUM"] ?? "") ?? 0,
                             properties: properties, sizeSectors: size)
        }
        let spurious = try UdevSamples.records("change-event-spurious-sdb.txt")
        #expect(spurious.count == 2)
        for record in spurious { #expect(!isMediaArrival(event(record, size: 62_521_344))) }

        let change = try UdevSamples.records("usb-sd-reader-change-event.txt")
        let udev = try #require(change.last)
        #expect(!isMediaArrival(event(udev, size: 0)), "an empty reader's media-change flood is not a card")
        #expect(isMediaArrival(event(udev, size: 62_521_344)), "size 0 → N is a card")

        let add = try UdevSamples.records("usb-sd-reader-add-events-monitor.txt")
        #expect(isMediaArrival(event(add[0], size: 15_523_840)))
        #expect(!isMediaArrival(event(add[1], size: 15_515_648)), "partitions are not cards")
    }

    @Test("refusal errors exit 3 and list every reason")
    func refusalError() throws {
        var disk = try card()
        disk.readOnly = true
        disk.size = 0
        let error = refusal(disk, SafetyPolicy().decide(disk, mounts: MountTable()))
        #expect(error.status == .refused)
        #expect(error.message.contains("read-only") && error.message.contains("no card in the reader"))
        #expect(error.message.contains("/dev/sdd"))
    }
}

@Suite("Mount table, swaps and sizes")
struct MountTableTests {
    @Test("mountinfo: fields, optional fields, octal escapes")
    func mountinfoParsing() {
        let table = MountTable(mountinfo: """
            27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
            36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
            40 27 8:17 / /media/ubuntu/Ubuntu\\04024.04.3\\040LTS rw,nosuid shared:5 propagation_from:1 - iso9660 /dev/sdb1 ro
            garbage line
            """)
        #expect(table.entries.count == 3)
        #expect(table.entries[0] == MountEntry(mountID: 27, parentID: 1, device: BlockDeviceNumber(major: 254, minor: 0),
                                               mountPoint: "/", fsType: "ext4", source: "/dev/vda"))
        #expect(table.entries[1].mountPoint == "/mnt2" && table.entries[1].source == "/dev/root")
        #expect(table.entries[2].mountPoint == "/media/ubuntu/Ubuntu 24.04.3 LTS")
        #expect(table.entries[2].fsType == "iso9660")
        #expect(table.mounts(of: BlockDeviceNumber(major: 8, minor: 17)).count == 1)
        #expect(MountTable.unescape("a\\134b\\011c") == "a\\b\tc")
        #expect(MountTable.unescape("trailing\\04") == "trailing\\04")
    }

    @Test("this machine's mount table has /")
    func liveMountTable() throws {
        let table = try MountTable.read()
        #expect(table.entries.contains { $0.mountPoint == "/" })
    }

    @Test("device numbers round-trip through dev_t")
    func deviceNumbers() {
        for number in [BlockDeviceNumber(major: 8, minor: 0), BlockDeviceNumber(major: 259, minor: 3),
                       BlockDeviceNumber(major: 7, minor: 300), BlockDeviceNumber(major: 4095, minor: 1_048_575)] {
            #expect(BlockDeviceNumber(rawDevice: number.rawDevice) == number)
        }
        #expect(BlockDeviceNumber("179:2") == BlockDeviceNumber(major: 179, minor: 2))
        #expect(BlockDeviceNumber("179") == nil)
        #expect(BlockDeviceNumber("a:b") == nil)
    }

    @Test("sizes on the command line", arguments: [
        ("256G", UInt64(256) << 30), ("256GiB", UInt64(256) << 30), ("64GB", 64_000_000_000), ("512M", UInt64(512) << 20),
        ("1T", UInt64(1) << 40), ("1.5G", UInt64(3) << 29), ("4096", 4096), ("10 MB", 10_000_000), ("1k", 1024),
    ])
    func byteSizes(text: String, bytes: UInt64) {
        #expect(parseByteSize(text) == bytes)
    }

    @Test("not sizes", arguments: ["", "G", "12X", "-1G", "1..2G", "abc"])
    func notSizes(text: String) {
        #expect(parseByteSize(text) == nil)
    }
}
