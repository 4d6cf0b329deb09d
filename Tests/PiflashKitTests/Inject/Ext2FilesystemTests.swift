#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PiflashKit
import PiflashPlatform
import Testing

/// The libext2fs wrapper on image files (no root needed), checked with debugfs and e2fsck.
@Suite("Ext2Filesystem")
struct Ext2FilesystemTests {
    static let rootOffset: UInt64 = 38 * 1_048_576

    @Test("reads what mk-nixos-like-image put in the root, following no final symlink")
    func readsFixture() throws {
        let directory = try InjectFixtures.temporaryDirectory()
        defer { InjectFixtures.remove(directory) }
        let image = try InjectFixtures.makeImage(in: directory)
        let dump = directory + "/registration"
        _ = try InjectFixtures.debugfs(image, offset: Self.rootOffset, "dump /nix-path-registration \(dump)", write: false)
        let expected = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dump)))

        try Ext2Filesystem.withFilesystem(path: image, offset: Self.rootOffset, access: .readOnlyDirect) { fs in
            #expect(fs.label == "NIXOS_SD")
            #expect(fs.blockSize == 1024)
            #expect(!fs.needsJournalRecovery)
            let registration = try #require(try fs.inode(atPath: "/nix-path-registration"))
            let info = try fs.stat(registration)
            #expect(info.isRegularFile)
            #expect(info.uid == 0 && info.gid == 0)
            #expect(info.size == UInt64(expected.count))
            #expect(try fs.readFile(registration) == expected)

            let link = try #require(try fs.inode(atPath: "/etc/static"))
            #expect(try fs.stat(link).isSymlink)
            #expect(try fs.lookup("static", in: try #require(try fs.inode(atPath: "/etc"))) == link)
            #expect(try fs.inode(atPath: "/var/lib/nothing") == nil)
            #expect(try fs.lookup("nothing", in: Ext2Filesystem.rootInode) == nil)
        }
    }

    @Test("opening where there is no ext4 is a usage error naming the offset")
    func wrongOffset() throws {
        let directory = try InjectFixtures.temporaryDirectory()
        defer { InjectFixtures.remove(directory) }
        let image = try InjectFixtures.makeImage(in: directory)
        let error = try #require(throws: PiflashError.self) {
            try Ext2Filesystem.open(path: image, offset: 8 * 1_048_576, access: .readOnly)
        }
        #expect(error.status == .usage)
        #expect(error.message.contains("8388608") && error.message.lowercased().contains("magic"), "\(error.message)")
    }

    @Test("writes a directory and a file with owner, mode and times that debugfs and e2fsck accept")
    func writesFile() throws {
        let directory = try InjectFixtures.temporaryDirectory()
        defer { InjectFixtures.remove(directory) }
        let image = try InjectFixtures.makeImage(in: directory)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let content = Array("hello\n".utf8)
        try Ext2Filesystem.withFilesystem(path: image, offset: Self.rootOffset, access: .readWrite) { fs in
            let made = try fs.makeDirectory(
                "srv", in: Ext2Filesystem.rootInode, permissions: 0o750, uid: 1000, gid: 100, time: now)
            try content.withUnsafeBytes { content in
                try fs.writeFile(
                    "greeting", in: made, replacing: nil, content: content, permissions: 0o4640, uid: 65_537,
                    gid: 200_000, time: now)
            }
        }
        let check = try InjectFixtures.e2fsck(image, offset: Self.rootOffset)
        #expect(check.status == 0, "\(check.stdout)")
        let stat = try InjectFixtures.debugfs(image, offset: Self.rootOffset, "stat /srv/greeting", write: false)
        #expect(stat.contains("Mode:  04640"), "\(stat)")
        #expect(stat.contains("User: 65537") && stat.contains("Group: 200000"), "\(stat)")
        #expect(stat.contains("Size: 6"), "\(stat)")
        let dirStat = try InjectFixtures.debugfs(image, offset: Self.rootOffset, "stat /srv", write: false)
        #expect(dirStat.contains("Mode:  0750") && dirStat.contains("User:  1000") && dirStat.contains("Group:   100"), "\(dirStat)")

        try Ext2Filesystem.withFilesystem(path: image, offset: Self.rootOffset, access: .readOnly) { fs in
            let inode = try #require(try fs.inode(atPath: "/srv/greeting"))
            let info = try fs.stat(inode)
            #expect(info.permissions == 0o4640)
            #expect(info.uid == 65_537 && info.gid == 200_000)
            #expect(info.mtime == Int64(now.tv_sec) && info.atime == info.mtime && info.ctime == info.mtime)
            #expect(try fs.readFile(inode) == content)
        }
    }
}
