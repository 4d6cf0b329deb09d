import Foundation
import PiflashKit
import PiflashPlatform
import Testing

/// The ext4 patcher and the injection verifier on real images and loop devices, checked
/// independently with e2fsck, debugfs, sha256sum and a read-only kernel mount.
@Suite(
    "Ext4Patcher", .serialized,
    .enabled(if: InjectFixtures.isRoot, "needs root: loop devices and a kernel mount check the injected files")
)
struct Ext4PatcherTests {
    /// An image made by the fixture script, with its root located by the code under test and its
    /// root partition's position read by sfdisk.
    struct Fixture {
        var directory: String
        var image: String
        var root: RootPartition

        init(gpt: Bool = false, extraMiB: Int? = nil, largeBlocks: Bool = false) throws {
            directory = try InjectFixtures.temporaryDirectory()
            image = try InjectFixtures.makeImage(in: directory, gpt: gpt, extraMiB: extraMiB, largeBlocks: largeBlocks)
            root = try RootPartition.locate(on: image, selector: .label("NIXOS_SD"))
            let independent = try InjectFixtures.sfdiskPartition(image, number: 2)
            #expect(root.offset == independent.offset && root.size == independent.size)
        }

        func remove() { InjectFixtures.remove(directory) }

        func expectClean(_ path: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let check = try InjectFixtures.e2fsck(path ?? image, offset: root.offset)
            #expect(check.status == 0, "e2fsck -fn: \(check.stdout)\(check.stderr)", sourceLocation: sourceLocation)
        }

        func registrationDigest(_ path: String? = nil) throws -> String {
            let dump = directory + "/registration.\(UUID().uuidString)"
            _ = try InjectFixtures.debugfs(path ?? image, offset: root.offset, "dump /nix-path-registration \(dump)", write: false)
            defer { InjectFixtures.remove(dump) }
            return try InjectFixtures.sha256(ofFile: dump)
        }
    }

    @Test("injects the SPEC's three files into an image file (MBR)")
    func injectIntoImageFile() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let files = try InjectFixtures.specFiles()
        let registration = try fixture.registrationDigest()

        let injected = try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        #expect(injected == files.map(\.record))
        let verified = try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        #expect(verified == files.map(\.record))

        try fixture.expectClean()
        try InjectFixtures.expectKernelSees(files, on: fixture.image, offset: fixture.root.offset, size: fixture.root.size)
        #expect(try fixture.registrationDigest() == registration)
    }

    @Test("injects into a root with 4 KiB blocks and a journal, as real sdImages have")
    func injectIntoLargeBlockRoot() throws {
        let fixture = try Fixture(largeBlocks: true)
        defer { fixture.remove() }
        #expect(try blockSizeOf(fixture) == 4096)
        var files = try InjectFixtures.specFiles()
        files.append(BootstrapFile(path: "/var/lib/bootstrap/blob", content: (0..<100_000).map { UInt8($0 % 251) }, mode: 0o400))
        let registration = try fixture.registrationDigest()
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        try fixture.expectClean()
        try InjectFixtures.expectKernelSees(files, on: fixture.image, offset: fixture.root.offset, size: fixture.root.size)
        #expect(try fixture.registrationDigest() == registration)
    }

    @Test("injects into a loop device over a copy of a GPT image")
    func injectIntoLoopDevice() throws {
        let fixture = try Fixture(gpt: true)
        defer { fixture.remove() }
        let files = try InjectFixtures.specFiles()
        let registration = try fixture.registrationDigest()
        try InjectFixtures.withLoopDevice(over: fixture.image) { device in
            let root = try RootPartition.locate(on: device, selector: .label("NIXOS_SD"))
            #expect(root == fixture.root)
            try Ext4Patcher.inject(files, into: root, on: device, reporter: SilentReporter())
            let verified = try InjectionVerifier.verify(files, root: root, on: device)
            #expect(verified == files.map(\.record))
            try fixture.expectClean(device)
            try InjectFixtures.expectKernelSees(files, on: device, offset: root.offset, size: root.size)
            #expect(try fixture.registrationDigest(device) == registration)
        }
        // What reached the backing file through the device, read without it.
        try fixture.expectClean()
        try InjectFixtures.expectKernelSees(files, on: fixture.image, offset: fixture.root.offset, size: fixture.root.size)
    }

    @Test("replacing existing files frees their old blocks; a second injection is idempotent")
    func replaceAndRepeat() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        var files = try InjectFixtures.specFiles()
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        let freeAfterFirst = try freeBlocks(fixture)

        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        try fixture.expectClean()
        #expect(try freeBlocks(fixture) == freeAfterFirst)
        try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)

        // Grow one file across many blocks, then shrink it: old blocks must come back.
        files[2].content = Array(repeating: 0x41, count: 300_000)
        files[2].mode = 0o640
        files[2].uid = 70_000  // needs the high 16 bits
        files[2].gid = 123
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        try fixture.expectClean()
        #expect(try freeBlocks(fixture) < freeAfterFirst - 250)
        try InjectFixtures.expectKernelSees(files, on: fixture.image, offset: fixture.root.offset, size: fixture.root.size)

        files[2].content = Array("WIFI_SSID=short\n".utf8)
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        try fixture.expectClean()
        #expect(try freeBlocks(fixture) == freeAfterFirst)
        try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        try InjectFixtures.expectKernelSees(files, on: fixture.image, offset: fixture.root.offset, size: fixture.root.size)
    }

    @Test("a root filesystem too full is refused before anything changes")
    func rootTooFull() throws {
        let fixture = try Fixture(extraMiB: 0)
        defer { fixture.remove() }
        var files = try InjectFixtures.specFiles()
        files.append(BootstrapFile(path: "/var/lib/bootstrap/large", content: Array(repeating: 7, count: 64 << 20), mode: 0o600))
        let before = try InjectFixtures.sha256(ofFile: fixture.image)
        let error = try #require(throws: PiflashError.self) {
            try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        }
        #expect(error.status == .failure)
        #expect(error.message.hasPrefix("root filesystem full: needs "), "\(error.message)")
        #expect(error.message.contains("free"))
        try fixture.expectClean()
        #expect(try InjectFixtures.sha256(ofFile: fixture.image) == before)
    }

    @Test("an existing parent that is a symlink inside the image is refused")
    func symlinkedParent() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        _ = try InjectFixtures.debugfs(fixture.image, offset: fixture.root.offset, "mkdir /var")
        _ = try InjectFixtures.debugfs(fixture.image, offset: fixture.root.offset, "symlink /var/lib /tmp")
        try fixture.expectClean()
        let files = try InjectFixtures.specFiles()
        let before = try InjectFixtures.sha256(ofFile: fixture.image)
        let error = try #require(throws: PiflashError.self) {
            try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        }
        #expect(error.status == .usage)
        #expect(error.message.contains("/var/lib is a symlink"), "\(error.message)")
        try fixture.expectClean()
        #expect(try InjectFixtures.sha256(ofFile: fixture.image) == before)

        // Neither a directory nor a file as a parent is replaced or written through.
        let cases = [
            ("/boot/extlinux", "exists inside the image as a directory"),
            ("/boot/extlinux/extlinux.conf/key", "/boot/extlinux/extlinux.conf is a regular file"),
            ("/etc/static", "exists inside the image as a symlink"),
        ]
        for (path, reason) in cases {
            let refused = try #require(throws: PiflashError.self, "\(path)") {
                try Ext4Patcher.inject(
                    [BootstrapFile(path: path, content: [1], mode: 0o600)], into: fixture.root, on: fixture.image,
                    reporter: SilentReporter())
            }
            #expect(refused.status == .usage)
            #expect(refused.message.contains(reason), "\(refused.message)")
        }
        #expect(try InjectFixtures.sha256(ofFile: fixture.image) == before)
    }

    @Test("a root whose journal needs recovery is refused")
    func journalNeedsRecovery() throws {
        let fixture = try Fixture(largeBlocks: true)
        defer { fixture.remove() }
        _ = try InjectFixtures.debugfs(fixture.image, offset: fixture.root.offset, "feature needs_recovery")
        let before = try InjectFixtures.sha256(ofFile: fixture.image)
        let error = try #require(throws: PiflashError.self) {
            try Ext4Patcher.inject(try InjectFixtures.specFiles(), into: fixture.root, on: fixture.image, reporter: SilentReporter())
        }
        #expect(error.status == .usage)
        #expect(error.message.contains("journal needs recovery"), "\(error.message)")
        #expect(try InjectFixtures.sha256(ofFile: fixture.image) == before)
    }

    @Test("paths the host-file rules refuse are refused before the image is opened")
    func refusedPaths() throws {
        let root = RootPartition(
            number: 2, offset: 0, size: 0, label: nil, fstype: "ext4", uuid: nil, tableType: "dos")
        for path in ["var/lib/x", "/var/../etc/x", "/nix/store/abc-x/y", "/nix-path-registration", "/var//x", "/var/lib/"] {
            let error = try #require(throws: PiflashError.self, "\(path)") {
                try Ext4Patcher.inject(
                    [BootstrapFile(path: path, content: [1], mode: 0o600)], into: root, on: "/nonexistent",
                    reporter: SilentReporter())
            }
            #expect(error.status == .usage, "\(path): \(error.message)")
        }
        let twice = [BootstrapFile(path: "/a/b", content: [], mode: 0o600), BootstrapFile(path: "/a/b", content: [], mode: 0o600)]
        #expect(throws: PiflashError.self) {
            try Ext4Patcher.inject(twice, into: root, on: "/nonexistent", reporter: SilentReporter())
        }
    }

    @Test("verification catches a file changed after injection (exit 4)")
    func tamperedFile() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        var files = try InjectFixtures.specFiles()
        // The env file is secret-derived: its digest is keyed, and so is the mismatch message.
        let key = DigestKey(raw: Array(repeating: 7, count: 32))
        files[2].digestKey = key
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        let readBack = try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        #expect(readBack[2].digest == .hmacSHA256(key.macHex(files[2].content)))
        #expect(readBack[1].digest == .sha256(sha256Hex(files[1].content)))

        // Replace the content behind the patcher's back with debugfs.
        let evil = fixture.directory + "/evil"
        try Data("WIFI_SSID=evil\nWIFI_PSK=evil\n".utf8).write(to: URL(fileURLWithPath: evil))
        let target = "/var/lib/networkmanager/system-connections.env"
        _ = try InjectFixtures.debugfs(fixture.image, offset: fixture.root.offset, "rm \(target)")
        _ = try InjectFixtures.debugfs(fixture.image, offset: fixture.root.offset, "write \(evil) \(target)")
        _ = try InjectFixtures.debugfs(fixture.image, offset: fixture.root.offset, "sif \(target) mode 0100600")
        try fixture.expectClean()
        let content = try #require(throws: PiflashError.self) {
            try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        }
        #expect(content.status == .verificationFailed)
        #expect(content.message.contains(target) && content.message.contains("content hmac-sha256 is"), "\(content.message)")
        #expect(content.message.contains("expected \(key.macHex(files[2].content))"))
        #expect(!content.message.contains(sha256Hex(files[2].content)), "no plain digest of the secret content")
        #expect(!content.message.contains("bytes"), "no size of the secret content: \(content.message)")

        // Only the mode changed.
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        _ = try InjectFixtures.debugfs(
            fixture.image, offset: fixture.root.offset, "sif /var/lib/bootstrap/ssh_host_ed25519_key mode 0100644")
        let mode = try #require(throws: PiflashError.self) {
            try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        }
        #expect(mode.status == .verificationFailed)
        #expect(mode.message.contains("mode is 0644, expected 0600"), "\(mode.message)")
    }

    @Test("verification fails when e2fsck finds the filesystem inconsistent (exit 4)")
    func inconsistentFilesystem() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let files = try InjectFixtures.specFiles()
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        // Mark the key's first data block free in the bitmap: the files still read back intact.
        let blocks = try InjectFixtures.debugfs(
            fixture.image, offset: fixture.root.offset, "blocks /var/lib/bootstrap/ssh_host_ed25519_key", write: false)
        let first = try #require(blocks.split(whereSeparator: \.isWhitespace).first)
        _ = try InjectFixtures.debugfs(fixture.image, offset: fixture.root.offset, "freeb \(first)")
        let error = try #require(throws: PiflashError.self) {
            try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        }
        #expect(error.status == .verificationFailed)
        #expect(error.message.contains("not clean"), "\(error.message)")
    }

    @Test("a nearly full root: a replaced file's blocks count as free, and a full directory grows")
    func nearlyFullRoot() throws {
        let fixture = try Fixture(extraMiB: 0)
        defer { fixture.remove() }
        let blockSize = try blockSizeOf(fixture)
        let free = try freeBlocks(fixture)
        // Many entries with long names in one new directory, an empty file among them, and a large
        // file that leaves little room.
        var files = (0..<120).map { index in
            BootstrapFile(
                path: "/var/lib/many/" + String(repeating: "n", count: 48) + String(index),
                content: index == 0 ? [] : Array("file \(index)\n".utf8), mode: 0o644)
        }
        let largeSize = (free - 260) * blockSize
        files.append(BootstrapFile(path: "/var/lib/bootstrap/large", content: Array(repeating: 1, count: largeSize), mode: 0o600))
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        try fixture.expectClean()
        #expect(try freeBlocks(fixture) < 200)
        try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        let view = try InjectFixtures.kernelView(
            of: fixture.image, offset: fixture.root.offset, size: fixture.root.size, paths: files.map(\.path))
        #expect(view.count == files.count)
        #expect(files.allSatisfy { view[$0.path]?.content == $0.content })

        // Only the blocks the old content gives back make room for the new content.
        files[files.count - 1].content = Array(repeating: 2, count: largeSize)
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        try fixture.expectClean()
        try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
    }

    @Test("replacing one name of a hard-linked file leaves the other name's content alone")
    func hardLinkedFile() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let old = fixture.directory + "/old"
        try Data("old content\n".utf8).write(to: URL(fileURLWithPath: old))
        for command in [
            "mkdir /var", "mkdir /var/lib", "mkdir /var/lib/x", "write \(old) /var/lib/x/a", "ln /var/lib/x/a /var/lib/x/b",
            "sif /var/lib/x/a links_count 2",
        ] {
            _ = try InjectFixtures.debugfs(fixture.image, offset: fixture.root.offset, command)
        }
        try fixture.expectClean()
        let files = [BootstrapFile(path: "/var/lib/x/a", content: Array("new content\n".utf8), mode: 0o600)]
        try Ext4Patcher.inject(files, into: fixture.root, on: fixture.image, reporter: SilentReporter())
        try fixture.expectClean()
        try InjectionVerifier.verify(files, root: fixture.root, on: fixture.image)
        let view = try InjectFixtures.kernelView(
            of: fixture.image, offset: fixture.root.offset, size: fixture.root.size, paths: ["/var/lib/x/a", "/var/lib/x/b"])
        #expect(view["/var/lib/x/a"]?.content == Array("new content\n".utf8))
        #expect(view["/var/lib/x/b"]?.content == Array("old content\n".utf8))
    }

    private func blockSizeOf(_ fixture: Fixture) throws -> Int {
        try superblockField("Block size", fixture)
    }

    private func freeBlocks(_ fixture: Fixture) throws -> Int {
        try superblockField("Free blocks", fixture)
    }

    private func superblockField(_ name: String, _ fixture: Fixture) throws -> Int {
        let output = try InjectFixtures.must(["dumpe2fs", "-h", "\(fixture.image)?offset=\(fixture.root.offset)"])
        let line = try #require(output.split(separator: "\n").first { $0.hasPrefix(name + ":") })
        return try #require(Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)))
    }
}
