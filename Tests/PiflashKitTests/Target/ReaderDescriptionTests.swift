import PiflashKit
import Testing

/// The words a new user reads while waiting for a card and in `devices --all`: which reader a card
/// appeared in, and which disks are virtual devices with nothing behind them.
@Suite("Readers and empty virtual disks")
struct ReaderDescriptionTests {
    @Test("a USB reader is named by its model, node and port")
    func usbReader() {
        let disk = DiskDescription(devnode: "/dev/sdb", sysname: "sdb", model: "SD/MMC", vendor: "Generic-",
                                   size: 3_965_190_144, bus: .usb, byPath: "pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0")
        #expect(disk.readerDescription == "Generic- SD/MMC (/dev/sdb, port pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0)")
    }

    @Test("a reader without a model or a port is its node")
    func bareNode() {
        let disk = DiskDescription(devnode: "/dev/mmcblk0", sysname: "mmcblk0", size: 1 << 30, bus: .mmc)
        #expect(disk.readerDescription == "/dev/mmcblk0")
        var withPort = disk
        withPort.byPath = "platform-fe340000.mmc"
        #expect(withPort.readerDescription == "/dev/mmcblk0 (port platform-fe340000.mmc)")
    }

    @Test("a loop device is named with its file")
    func loop() {
        let disk = DiskDescription(devnode: "/dev/loop3", sysname: "loop3", size: 1 << 26, bus: .loop,
                                   loopBackingFile: "/tmp/card.img")
        #expect(disk.readerDescription == "/dev/loop3 (loop device over /tmp/card.img)")
    }

    @Test("detached loop, empty zram and nbd devices are unused; an empty card reader is not", arguments: [
        (DiskBus.loop, UInt64(0), true), (.zram, 0, true), (.nbd, 0, true),
        (.loop, 1 << 26, false), (.zram, 1 << 30, false), (.usb, 0, false), (.mmc, 0, false), (.scsi, 0, false),
    ])
    func unusedVirtualDisks(bus: DiskBus, size: UInt64, unused: Bool) {
        let disk = DiskDescription(devnode: "/dev/x", sysname: "x", size: size, bus: bus)
        #expect(disk.isUnusedVirtualDisk == unused)
    }
}
