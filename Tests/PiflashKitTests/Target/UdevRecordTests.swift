import PiflashKit
import PiflashPlatform
import Testing

@Suite("udevadm output parser and disk descriptions", .enabled(if: UdevSamples.available, Comment(rawValue: UdevSamples.skipMessage)))
struct UdevRecordTests {
    @Test("every sample parses into at least one record with properties")
    func everySampleParses() throws {
        for file in UdevSamples.fileNames() {
            let records = try UdevSamples.records(file)
            #expect(!records.isEmpty, "\(file) gave no record")
            for record in records {
                #expect(!record.properties.isEmpty, "\(file): a record without properties")
                // No comment, banner or header line may leak in as a property.
                for (key, _) in record.properties {
                    #expect(!key.hasPrefix("#") && !key.contains(" ") && !key.isEmpty, "\(file): bad key \(key)")
                }
            }
        }
    }

    @Test("udevadm info database records: P/N/S/E lines, several records separated by blank lines")
    func databaseRecords() throws {
        let records = try UdevSamples.records("usb-sd-reader-multilun-empty-slots.txt")
        #expect(records.count == 3)
        #expect(records.map(\.kind) == [.database, .database, .database])
        #expect(records[1].name == "sdf")
        #expect(records[1].path == "/devices/pci0000:00/0000:00:1a.0/usb1/1-1/1-1.2/1-1.2:1.0/host7/target7:0:0/7:0:0:2/block/sdf")
        #expect(records[1].symlinks == [
            "disk/by-id/usb-Generic-_SM_xD_Picture_058F63626420-0:2",
            "disk/by-path/pci-0000:00:1a.0-usb-0:1.2:1.0-scsi-0:0:0:2",
        ])
        #expect(records[1]["ID_INSTANCE"] == "0:2")
        let disks = DiskDescription.fromRecords(records)
        #expect(disks.map(\.devnode) == ["/dev/sde", "/dev/sdf", "/dev/sdg"])
        #expect(disks.map(\.model) == ["Compact Flash", "SM/xD Picture", "MS/MS-Pro"])
    }

    @Test("modern records with M: U: T: D: Q: J: L: lines")
    func modernRecordLines() throws {
        let records = try UdevSamples.records("usb-hdd-uas-idbus-ata-toshiba.txt")
        #expect(records.count == 1)
        #expect(records[0].name == "sda")
        #expect(records[0].symlinks.count == 6)
        #expect(records[0]["ID_SERIAL_SHORT"] == "60GHP28HT")
        #expect(records[0]["M"] == nil && records[0]["J"] == nil)
    }

    @Test("--export format: quotes removed")
    func exportFormat() throws {
        let records = try UdevSamples.records("mmcblk0-builtin-rtsx-pci-sd-export.txt")
        #expect(records.count == 1)
        #expect(records[0].kind == .properties)
        #expect(records[0]["DEVNAME"] == "/dev/mmcblk0")
        #expect(records[0]["MMC_TYPE"] == "SD")
        #expect(records[0]["ID_PATH"] == "pci-0000:02:00.0-platform-rtsx_pci_sdmmc.0")
        let disk = try #require(DiskDescription.fromRecords(records).first)
        #expect(disk.mmcType == "SD")
        #expect(disk.bus == .mmc)
        #expect(disk.model == "SN64G")
        #expect(disk.serial == "0x535809eb")
    }

    @Test("--query=property format")
    func propertyFormat() throws {
        let records = try UdevSamples.records("usb-flash-stick-iso-2017.txt")
        #expect(records.count == 1)
        #expect(records[0].kind == .properties)
        let disk = try #require(DiskDescription.fromRecords(records).first)
        #expect(disk.devnode == "/dev/sda")
        #expect(disk.vendor == "USB 2.0")
        #expect(disk.model == "USB Flash Driver")
        #expect(disk.serial == "AA03000000011985")
        #expect(disk.byPathLink == "/dev/disk/by-path/pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0")
    }

    @Test("udevadm monitor -p: banner skipped, KERNEL and UDEV events with actions")
    func monitorEvents() throws {
        let records = try UdevSamples.records("usb-sd-reader-add-events-monitor.txt")
        #expect(records.map(\.kind) == [
            .event(source: "KERNEL", action: "add"), .event(source: "KERNEL", action: "add"),
            .event(source: "UDEV", action: "add"),
        ])
        #expect(records[1]["DEVTYPE"] == "partition")
        #expect(records[2][".ID_FS_TYPE_NEW"] == "")
        #expect(records[2]["ID_MODEL_ENC"] == "Card\\x20\\x20Reader\\x20\\x20\\x20\\x20")

        let change = try UdevSamples.records("usb-sd-reader-change-event.txt")
        #expect(change.map(\.kind) == [
            .event(source: "KERNEL", action: "change"), .event(source: "KERNEL", action: "change"),
            .event(source: "UDEV", action: "change"),
        ])
        #expect(change.allSatisfy { $0["DISK_MEDIA_CHANGE"] == "1" })
        #expect(change.map { $0["DISKSEQ"] } == ["6016", "6017", "6016"])
        #expect(change[2]["ID_VENDOR"] == "Generic-")
    }

    @Test("grep ID_ excerpts: E: lines without P:")
    func grepExcerpt() throws {
        let records = try UdevSamples.records("mmcblk0-builtin-sd-no-idname-grep-id.txt")
        #expect(records.count == 1)
        #expect(records[0].path == nil)
        #expect(records[0].properties.count == 7)
        let disk = try #require(DiskDescription.fromRecords(records, assumedName: "mmcblk0").first)
        #expect(disk.devnode == "/dev/mmcblk0")
        #expect(disk.model == nil)
        #expect(disk.bus == .mmc)
    }

    @Test("\\x escapes are decoded in names and labels, kept raw in properties")
    func escapes() throws {
        #expect(UdevRecord.decodeEscapes("SD\\x2fMMC\\x20\\x20") == "SD/MMC  ")
        #expect(UdevRecord.decodeEscapes("no escapes") == "no escapes")
        #expect(UdevRecord.decodeEscapes("bad \\xZZ kept") == "bad \\xZZ kept")
        #expect(UdevRecord.decodeEscapes("XORRISO-1.5.4\\x202021\\x2c\\x20x") == "XORRISO-1.5.4 2021, x")

        let disk = try #require(DiskDescription.fromRecords(try UdevSamples.records("usb-flash-stick.txt")).first)
        #expect(disk.properties["ID_FS_LABEL_ENC"] == "Ubuntu\\x2024.04.3\\x20LTS\\x20amd64")
        #expect(disk.model == "Type-C")
        #expect(disk.vendor == "Samsung")

        let stick = try #require(DiskDescription.fromRecords(try UdevSamples.records("usb-flash-stick-ext4-second.txt")).first)
        #expect(stick.vendor == nil, "a vendor of only spaces is no vendor")
        #expect(stick.model == "USB DISK 3.0")

        let unbranded = try #require(
            DiskDescription.fromRecords(try UdevSamples.records("usb-flash-stick-unbranded-general.txt")).first)
        #expect(unbranded.model == nil)
        #expect(unbranded.vendor == "General")
        #expect(unbranded.serial == "General_-0:0")
    }

    @Test("partitions are attached to their disk with filesystem and label")
    func partitions() throws {
        let disks = DiskDescription.fromRecords(try UdevSamples.records("mmcblk0-rpi4-system-sd.txt"))
        #expect(disks.count == 1)
        let disk = disks[0]
        #expect(disk.partitions.map(\.sysname) == ["mmcblk0p1", "mmcblk0p2", "mmcblk0p3"])
        #expect(disk.partitions.map(\.fsType) == ["vfat", "vfat", "ext4"])
        #expect(disk.partitions.map(\.label) == ["ubuntu-seed", "ubuntu-boot", "ubuntu-data"])
        #expect(disk.partitions.map(\.number) == [1, 2, 3])
        #expect(disk.partitions[2].size == 56_666_112 * 512)
        #expect(disk.partitions[0].deviceNumber == BlockDeviceNumber(major: 179, minor: 1))
        #expect(disk.byPath == "platform-fe340000.emmc2")

        let card = DiskDescription.fromRecords(try UdevSamples.records("usb-sd-reader-card.txt"))
        #expect(card.count == 1)
        #expect(card[0].partitions.map(\.fsType) == ["vfat"])
        #expect(card[0].partitions[0].label == nil)
    }

    @Test("eMMC boot and RPMB areas are folded into their disk as evidence")
    func emmcAreas() throws {
        let disks = DiskDescription.fromRecords(try UdevSamples.records("emmc-system-with-boot-partitions.txt"))
        #expect(disks.count == 1)
        #expect(disks[0].emmcAreas == ["mmcblk0boot0", "mmcblk0boot1", "mmcblk0rpmb"])
        // A boot area on its own is refused too.
        let boot = DiskDescription.fromRecords([try UdevSamples.records("emmc-system-with-boot-partitions.txt")[1]])
        var area = try #require(boot.first)
        area.size = 4 << 20
        let decision = SafetyPolicy().decide(area, mounts: MountTable())
        #expect(decision.reasons.map(\.code).contains("builtin_emmc"))
    }

    @Test("bus from the device path, not only ID_BUS", arguments: [
        ("usb-hdd-uas-idbus-ata-wd-passport.txt", DiskBus.usb),
        ("usb-hdd-uas-idbus-ata-toshiba.txt", .usb),
        ("mmcblk-usb-rtsx-usb-sdmmc-partition.txt", .usb),
        ("usb-sd-reader-rts5139-builtin-laptop-empty.txt", .usb),
        ("mmcblk0-rpi4-system-sd.txt", .mmc),
        ("mmcblk1-builtin-sd-pci-no-idpath.txt", .mmc),
        ("emmc-system-fde.txt", .mmc),
        ("nvme-system-old-minimal.txt", .nvme),
        ("nvme-server-data-disk.txt", .nvme),
        ("sata-system.txt", .ata),
        ("sata-system-hdd-old.txt", .ata),
        ("pci-card-reader-as-scsi-empty.txt", .scsi),
        ("virtio-vda.txt", .virtio),
        ("virtio-vdb-with-serial.txt", .virtio),
        ("loop-snap.txt", .loop),
        ("usb-flash-stick-kioxia-on-rpi.txt", .usb),
    ])
    func bus(file: String, expected: DiskBus) throws {
        let disk = try #require(DiskDescription.fromRecords(try UdevSamples.records(file)).first)
        #expect(disk.bus == expected, "\(file)")
    }

    @Test("identity fields")
    func identity() throws {
        let nvme = try #require(DiskDescription.fromRecords(try UdevSamples.records("nvme-laptop-sn740.txt")).first)
        #expect(nvme.model == "WD PC SN740 SDDQNQD-256G-1006")
        #expect(nvme.serial == "225051442012")
        #expect(nvme.byPath == "pci-0000:03:00.0-nvme-1")
        #expect(nvme.byPathLink == "/dev/disk/by-path/pci-0000:03:00.0-nvme-1")
        #expect(nvme.deviceNumber == BlockDeviceNumber(major: 259, minor: 0))

        let vdb = try #require(DiskDescription.fromRecords(try UdevSamples.records("virtio-vdb-with-serial.txt")).first)
        #expect(vdb.serial == "08491434ee711d3420e9")

        let ami = try #require(DiskDescription.fromRecords(try UdevSamples.records("ami-bmc-virtual-sd-usb.txt")).first)
        #expect(ami.byPathLink == "/dev/disk/by-path/pci-0000:00:14.0-usb-0:11.5:1.0-scsi-0:0:0:0")
        #expect(ami.model == "Virtual SD0")

        let loop = try #require(DiskDescription.fromRecords(try UdevSamples.records("loop-snap.txt")).first)
        #expect(loop.loopBackingFile == "/var/lib/snapd/snaps/bare_5.snap")
    }
}
