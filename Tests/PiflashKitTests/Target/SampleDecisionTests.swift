import PiflashKit
import PiflashPlatform
import Testing

/// What the test knows about a sample's machine beyond the udev dump: udev records never carry
/// the size, sysfs `removable` or `ro`, nor the mount table, so each expectation states them
/// (from the sample's lsblk companion when there is one, else a typical value for the device,
/// said so in the note).
struct SampleCase: CustomTestStringConvertible, Sendable {
    var file: String
    /// Which record of the file is the disk (after partitions were attached to their disks).
    var pick: Pick = .first
    var size: UInt64 = 0
    var removable = false
    var readOnly = false
    /// The sysfs `type` of the MMC card, as the live code reads it from the mmc ancestor.
    var mmcType: String? = nil
    var tagged = false
    var assumedName: String? = nil
    var mounts: [(String, String, String, String)] = []
    var imageSize: UInt64? = nil
    /// nil: a candidate. Otherwise the exact set of refusal codes.
    var refused: Set<String>?
    var note: String

    enum Pick: Sendable { case first, udevEvent, index(Int) }

    var testDescription: String { file + (note.isEmpty ? "" : " — " + note) }
}

/// Every sample file has an explicit expected decision here; `everySampleHasAnExpectation`
/// fails when a new sample appears without one.
let sampleCases: [SampleCase] = [
    // USB SD card readers.
    SampleCase(file: "usb-sd-reader-card.txt", size: 3_965_190_144, removable: true, refused: nil,
               note: "Alcor reader with a 4 GB card (size from its FAT partition)"),
    SampleCase(file: "usb-sd-reader-card-2.txt", size: 3_980_394_496, removable: true, refused: nil,
               note: "Realtek reader, SD on LUN 0:2, 4 GB card"),
    SampleCase(file: "usb-sd-reader-genesys-card-modern.txt", size: 31_914_983_424, removable: true, refused: nil,
               note: "Genesys reader, typical 32 GB card"),
    SampleCase(file: "usb-sd-reader-card-f3-partial.txt", size: 15_931_539_456, removable: true, refused: nil,
               note: "Realtek USB3 reader, typical 16 GB card"),
    SampleCase(file: "usb-sd-reader-empty.txt", removable: true, refused: ["no_medium"], note: "reader without a card: size 0"),
    SampleCase(file: "usb-sd-reader-empty-2.txt", removable: true, refused: ["no_medium"], note: "reader behind a hub, no card"),
    SampleCase(file: "usb-sd-reader-multilun-empty-slots.txt", pick: .index(0), removable: true, refused: ["no_medium"],
               note: "empty CF LUN"),
    SampleCase(file: "usb-sd-reader-rts5139-builtin-laptop-empty.txt", refused: ["no_medium"],
               note: "built-in reader on internal USB (rts5139), no card: a candidate by its bus, refused for no medium"),
    SampleCase(file: "usb-sd-reader-add-events-monitor.txt", pick: .udevEvent, size: 7_948_206_080, refused: nil,
               note: "UDEV add event of a reader plugged in with a card"),
    SampleCase(file: "usb-sd-reader-change-event.txt", pick: .udevEvent, refused: ["no_medium"],
               note: "flood of media-change events from an empty reader: size stays 0"),
    SampleCase(file: "change-event-spurious-sdb.txt", pick: .udevEvent, refused: ["not_removable", "no_medium"],
               note: "bogus DEVPATH=/sdb: no USB/MMC evidence, no size"),

    // Built-in SD slots and SBC system cards.
    SampleCase(file: "mmcblk0-builtin-rtsx-pci-sd-export.txt", size: 63_864_569_856, mmcType: "SD", refused: nil,
               note: "laptop PCIe reader (mmcblk) with a 64 GB card, --export format"),
    SampleCase(file: "mmcblk0-builtin-rtsx-pci-sd-grep-id.txt", size: 3_965_190_144, mmcType: "SD", assumedName: "mmcblk0",
               refused: nil, note: "grep ID_ excerpt of /dev/mmcblk0: SanDisk SU04G"),
    SampleCase(file: "mmcblk0-builtin-sd-no-idname-grep-id.txt", size: 7_948_206_080, mmcType: "SD", assumedName: "mmcblk0",
               refused: nil, note: "card without ID_NAME"),
    SampleCase(file: "sd-card-readonly-builtin-rtsx-pci.txt", size: 7_990_149_120, readOnly: true, mmcType: "SD",
               refused: ["read_only"], note: "lsblk ro=1 rm=0 (notes-sd-card-readonly.lsblk.json)"),
    SampleCase(file: "mmcblk1-builtin-sd-pci-no-idpath.txt", size: 7_948_206_080, mmcType: "SD", refused: nil,
               note: "SD card in a PCI SDHCI slot, no ID_PATH; nothing on it mounted (the system is on the eMMC)"),
    SampleCase(file: "mmcblk-usb-rtsx-usb-sdmmc-partition.txt", size: 131_072 * 512, refused: ["not_whole_disk"],
               note: "a partition record: name the disk"),
    SampleCase(file: "mmcblk0-rpi4-system-sd.txt", size: 31_914_983_424, mmcType: "SD",
               mounts: [("179:1", "/dev/mmcblk0p1", "/run/mnt/ubuntu-seed", "vfat"),
                        ("179:2", "/dev/mmcblk0p2", "/run/mnt/ubuntu-boot", "vfat"),
                        ("179:3", "/dev/mmcblk0p3", "/writable", "ext4")],
               refused: ["system_mount"], note: "the Pi 4's own card running Ubuntu Core"),
    SampleCase(file: "mmcblk0-rpi3-system-sd.txt", size: 31_914_983_424, mmcType: "SD",
               mounts: [("179:2", "/dev/mmcblk0p2", "/", "ext4"), ("179:1", "/dev/mmcblk0p1", "/boot/firmware", "vfat")],
               refused: ["system_mount"], note: "the Pi 3's own card: / on mmcblk0p2 (partitions not in the dump)"),
    SampleCase(file: "mmcblk0-nxp-s32g-system-sd.txt", size: 15_931_539_456, mmcType: "SD",
               mounts: [("179:2", "/dev/mmcblk0p2", "/", "ext4"), ("179:1", "/dev/mmcblk0p1", "/boot/firmware", "vfat")],
               refused: ["system_mount"], note: "NXP board's system card (system-boot/writable)"),
    SampleCase(file: "mmcblk0-pandaboard-sd.txt", size: 7_948_206_080, mmcType: "SD",
               mounts: [("179:2", "/dev/mmcblk0p2", "/", "ext4")],
               refused: ["system_mount"], note: "PandaBoard boots from it: / on mmcblk0p2 (PANDABOARD.lsblk.json)"),
    SampleCase(file: "pci-card-reader-as-scsi-empty.txt", refused: ["not_removable", "no_medium"],
               note: "built-in reader as SCSI sdb, empty; removable is not in the dump"),
    SampleCase(file: "pci-card-reader-as-scsi-flagged-sd.txt", refused: ["not_removable", "no_medium"],
               note: "ID_DRIVE_FLASH_SD=1 alone makes nothing a candidate"),

    // eMMC.
    SampleCase(file: "emmc-system-with-boot-partitions.txt", size: 31_268_536_320, refused: ["builtin_emmc"],
               note: "boot0/boot1/rpmb areas prove eMMC, without MMC_TYPE"),
    SampleCase(file: "emmc-system-flagged-as-sd.txt", size: 31_268_536_320, mmcType: "MMC", refused: ["builtin_emmc"],
               note: "trap: ID_DRIVE_FLASH_SD=1 on eMMC; sysfs type says MMC"),
    SampleCase(file: "emmc-system-fde.txt", size: 31_268_536_320, mmcType: "MMC", refused: ["builtin_emmc"],
               note: "eMMC holding the encrypted system"),

    // NVMe.
    SampleCase(file: "nvme-system.txt", size: 512_110_190_592,
               mounts: [("259:3", "/dev/nvme0n1p3", "/", "ext4"), ("259:1", "/dev/nvme0n1p1", "/boot/efi", "vfat")],
               refused: ["system_mount", "not_removable", "too_large"],
               note: "laptop system disk, / on nvme0n1p3 (companion lsblk)"),
    SampleCase(file: "nvme-laptop-sn740.txt", size: 256_060_514_304, refused: ["not_removable"],
               note: "256 GB internal NVMe: under --max-size, refused for not being removable"),
    SampleCase(file: "nvme-system-old-minimal.txt", size: 256_060_514_304, refused: ["not_removable"],
               note: "no ID_* keys: the bus comes from the device path"),
    SampleCase(file: "nvme-server-data-disk.txt", size: 1_920_383_410_176, refused: ["not_removable", "too_large"],
               note: "1.92 TB server NVMe"),

    // SATA.
    SampleCase(file: "sata-system.txt", size: 512_110_190_592,
               mounts: [("8:2", "/dev/sda2", "/", "ext4"), ("8:1", "/dev/sda1", "/boot/efi", "vfat")],
               refused: ["system_mount", "not_removable", "too_large"], note: "Samsung 860 PRO system disk"),
    SampleCase(file: "sata-system-hdd-old.txt", size: 500_107_862_016, refused: ["not_removable", "too_large"],
               note: "laptop HDD"),

    // virtio.
    SampleCase(file: "virtio-vda-modern.txt", size: 21_474_836_480,
               mounts: [("252:1", "/dev/vda1", "/", "ext4")], refused: ["system_mount", "not_removable"],
               note: "VM system disk"),
    SampleCase(file: "virtio-vda.txt", size: 10_737_418_240, refused: ["not_removable"], note: "old udev, no ID_PATH"),
    SampleCase(file: "virtio-vdb-with-serial.txt", size: 107_374_182_400, refused: ["not_removable"],
               note: "cloud data disk"),

    // USB flash sticks.
    SampleCase(file: "usb-flash-stick.txt", size: 64_160_400_896, removable: true,
               mounts: [("8:1", "/dev/sda1", "/media/ubuntu/Ubuntu 24.04.3 LTS amd64", "iso9660")], refused: nil,
               note: "ISO stick auto-mounted under /media: a candidate, to be unmounted"),
    SampleCase(file: "usb-flash-stick-ext4-second.txt", size: 31_042_043_904, removable: true,
               mounts: [("8:17", "/dev/sdb1", "/media/ubuntu/USB", "ext4")], refused: nil,
               note: "sdb1 auto-mounted at /media/ubuntu/USB (companion lsblk)"),
    SampleCase(file: "usb-flash-stick-iso-2017.txt", size: 8_039_432_192, removable: true, refused: nil,
               note: "lsblk rm=1 ro=0 (notes-usb-flash-stick.lsblk.json)"),
    SampleCase(file: "usb-flash-stick-kioxia-on-rpi.txt", size: 31_042_043_904, removable: true, refused: nil,
               note: "stick on a Pi, typical 32 GB"),
    SampleCase(file: "usb-flash-stick-on-rpi4.txt", size: 30_752_636_928, removable: true, refused: nil,
               note: "SanDisk Ultra on a Pi 4, typical 32 GB"),
    SampleCase(file: "usb-flash-stick-unbranded-general.txt", size: 8_004_304_896, removable: true, refused: nil,
               note: "no-name stick with a blank model"),

    // USB disks that are not cards: the size decides.
    SampleCase(file: "usb-hdd-uas-idbus-ata-toshiba.txt", size: 2_000_398_934_016, refused: ["too_large"],
               note: "2 TB HDD that says ID_BUS=ata: USB from the device path, refused by --max-size"),
    SampleCase(file: "usb-hdd-uas-idbus-ata-wd-passport.txt", size: 4_000_787_030_016, refused: ["too_large"],
               note: "4 TB WD My Passport (WD40NDZW)"),
    SampleCase(file: "usb-nvme-enclosure-asm2464.txt", size: 2_000_398_934_016, refused: ["too_large"],
               note: "2 TB NVMe in a USB enclosure"),
    SampleCase(file: "usb-sata-adapter-sabrent.txt", size: 500_107_862_016, refused: ["too_large"],
               note: "500 GB SSD on a USB-SATA adapter"),
    SampleCase(file: "usb-sata-enclosure-acasis-rpi4-uas.txt", size: 2_000_398_934_016, refused: ["too_large"],
               note: "2 TB disk (label SDA2Tpictures)"),
    SampleCase(file: "usb-multibay-jmicron-rpi4.txt", size: 4_000_787_030_016, refused: ["too_large"],
               note: "multi-bay enclosure disk"),

    // Loop devices.
    SampleCase(file: "loop-snap.txt", size: 4096, refused: ["not_removable"], note: "untagged loop: never a candidate"),
    SampleCase(file: "loop-old.txt", size: 4096, mounts: [("7:0", "/dev/loop0", "/snap/bare/5", "squashfs")],
               refused: ["not_removable", "system_mount"], note: "snap loop mounted under /snap"),

    // BMC virtual media.
    SampleCase(file: "ami-bmc-virtual-sd-usb.txt", size: 8 * GiB, refused: ["virtual_medium"],
               note: "AMI 'Virtual SD0' on USB: not a card (size not in the dump)"),
    SampleCase(file: "idrac-virtual-floppy-usb.txt", size: 1_474_560, refused: ["virtual_medium"],
               note: "iDRAC virtual floppy"),
]

/// Builds the disk of a case from its sample file and the machine's facts.
func disk(for sample: SampleCase) throws -> (DiskDescription, MountTable) {
    let records = try UdevSamples.records(sample.file)
    let mounts = mountinfo(sample.mounts)
    let chosen: [UdevRecord]
    switch sample.pick {
    case .udevEvent: chosen = records.filter { if case .event(source: "UDEV", _) = $0.kind { true } else { false } }
    default: chosen = records
    }
    let disks = DiskDescription.fromRecords(chosen, mounts: mounts, assumedName: sample.assumedName)
    var disk: DiskDescription
    switch sample.pick {
    case .index(let index): disk = disks[index]
    default: disk = try #require(disks.first)
    }
    disk.size = sample.size
    disk.removable = sample.removable
    disk.readOnly = sample.readOnly
    if let type = sample.mmcType { disk.mmcType = type }
    if sample.tagged { disk.properties["PIFLASH_CANDIDATE"] = "1" }
    return (disk, mounts)
}

@Suite("Safety policy on recorded udev samples", .enabled(if: UdevSamples.available, Comment(rawValue: UdevSamples.skipMessage)))
struct SampleDecisionTests {
    @Test("every sample file has an expected decision")
    func everySampleHasAnExpectation() {
        let covered = Set(sampleCases.map(\.file))
        let files = UdevSamples.fileNames()
        #expect(files.count >= 50)
        for file in files {
            #expect(covered.contains(file), "no expected decision for \(file)")
        }
    }

    @Test("decision per sample", arguments: sampleCases)
    func decision(_ sample: SampleCase) throws {
        let (disk, mounts) = try disk(for: sample)
        let decision = SafetyPolicy(imageSize: sample.imageSize).decide(disk, mounts: mounts)
        if let refused = sample.refused {
            #expect(!decision.isCandidate, "\(sample.file) should be refused: \(refused)")
            #expect(Set(decision.reasons.map(\.code)) == refused, "\(sample.file): \(decision.summary)")
            for reason in decision.reasons { #expect(!reason.description.isEmpty) }
        } else {
            #expect(decision.isCandidate, "\(sample.file) should be a candidate: \(decision.summary)")
            #expect(!decision.candidateBecause.isEmpty)
        }
    }
}
