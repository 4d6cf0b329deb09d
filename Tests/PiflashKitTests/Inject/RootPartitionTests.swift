import Foundation
import PiflashKit
import PiflashPlatform
import Testing

/// Locating the root partition on images made by scripts/mk-nixos-like-image (no root needed:
/// libblkid reads image files directly). Checked against `sfdisk -J`.
@Suite("RootPartition")
struct RootPartitionTests {
    @Test("finds NIXOS_SD by label on an MBR image, at the offset sfdisk reports")
    func labelOnMBR() throws {
        let directory = try InjectFixtures.temporaryDirectory()
        defer { InjectFixtures.remove(directory) }
        let image = try InjectFixtures.makeImage(in: directory)
        let root = try RootPartition.locate(on: image, selector: .label("NIXOS_SD"))
        let expected = try InjectFixtures.sfdiskPartition(image, number: 2)
        #expect(root.number == 2)
        #expect(root.offset == expected.offset)
        #expect(root.offset == 38 * 1_048_576)
        #expect(root.size == expected.size)
        #expect(root.fstype == "ext4")
        #expect(root.label == "NIXOS_SD")
        #expect(root.uuid == "44444444-4444-4444-8888-888888888888")
        #expect(root.tableType == "dos")

        let table = try PartitionTable.read(from: image)
        #expect(table.id == "2178694e" || table.id == "0x2178694e")
        #expect(table.partitions.map(\.number) == [1, 2])
        #expect(table.partitions[0].type == 0x0b)
        #expect(table.partitions[1].type == 0x83)
        #expect(table.partitions[0].filesystem?.type == "vfat")
        #expect(table.partitions[0].filesystem?.label == "FIRMWARE")
    }

    @Test("finds the root by number and by label on a GPT image")
    func gpt() throws {
        let directory = try InjectFixtures.temporaryDirectory()
        defer { InjectFixtures.remove(directory) }
        let image = try InjectFixtures.makeImage(in: directory, gpt: true)
        let byNumber = try RootPartition.locate(on: image, selector: .number(2))
        let byLabel = try RootPartition.locate(on: image, selector: .label("NIXOS_SD"))
        let expected = try InjectFixtures.sfdiskPartition(image, number: 2)
        #expect(byNumber == byLabel)
        #expect(byNumber.tableType == "gpt")
        #expect(byNumber.offset == expected.offset)
        #expect(byNumber.size == expected.size)
        let table = try PartitionTable.read(from: image)
        #expect(table.partitions[1].name == "NIXOS_SD")
        #expect(table.partitions[1].typeString?.lowercased() == "0fc63daf-8483-4772-8e79-3d69d8477de4")
    }

    @Test("a label no partition has is a usage error listing what exists")
    func noSuchLabel() throws {
        let directory = try InjectFixtures.temporaryDirectory()
        defer { InjectFixtures.remove(directory) }
        let image = try InjectFixtures.makeImage(in: directory)
        let before = try InjectFixtures.sha256(ofFile: image)
        let error = try #require(throws: PiflashError.self) {
            try RootPartition.locate(on: image, selector: .label("NOPE"))
        }
        #expect(try InjectFixtures.sha256(ofFile: image) == before)
        #expect(try InjectFixtures.e2fsck(image, offset: 38 * 1_048_576).status == 0)
        #expect(error.status == .usage)
        #expect(error.message.contains("NOPE"))
        #expect(error.message.contains("FIRMWARE") && error.message.contains("NIXOS_SD"))

        let byNumber = try #require(throws: PiflashError.self) {
            try RootPartition.locate(on: image, selector: .number(5))
        }
        #expect(byNumber.status == .usage)
        #expect(byNumber.message.contains("no partition 5"))
    }

    @Test("a root that is not ext4 is refused, saying what it is")
    func notExt4() throws {
        let directory = try InjectFixtures.temporaryDirectory()
        defer { InjectFixtures.remove(directory) }
        let image = try InjectFixtures.makeImage(in: directory)
        for selector in [RootSelector.label("FIRMWARE"), .number(1)] {
            let error = try #require(throws: PiflashError.self) {
                try RootPartition.locate(on: image, selector: selector)
            }
            #expect(error.status == .usage)
            #expect(error.message.contains("vfat"), "\(error.message)")
            #expect(error.message.contains("not ext4"))
        }
        #expect(try InjectFixtures.e2fsck(image, offset: 38 * 1_048_576).status == 0)
    }

    @Test("a disk without a partition table is an error")
    func noPartitionTable() throws {
        let directory = try InjectFixtures.temporaryDirectory()
        defer { InjectFixtures.remove(directory) }
        let bare = directory + "/bare.img"
        try InjectFixtures.must(["truncate", "-s", "16M", bare])
        try InjectFixtures.must(["mkfs.ext4", "-q", "-F", "-L", "NIXOS_SD", bare])
        let error = try #require(throws: PiflashError.self) {
            try RootPartition.locate(on: bare, selector: .label("NIXOS_SD"))
        }
        #expect(error.status == .usage)
        #expect(error.message.contains("no partition table"))

        let missing = try #require(throws: PiflashError.self) {
            try RootPartition.locate(on: directory + "/absent.img", selector: .number(2))
        }
        #expect(missing.status == .usage)
    }
}
