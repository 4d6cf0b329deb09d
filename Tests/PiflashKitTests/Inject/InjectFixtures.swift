#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PiflashKit
import Testing

/// Real tools, real images, real loop devices for the root-partition and ext4-patcher tests.
enum InjectFixtures {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path
    }()

    static var isRoot: Bool { geteuid() == 0 }

    static let toolPath = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin"

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a program found in PATH (plus /usr/sbin, /sbin) and waits for it.
    @discardableResult
    static func run(_ arguments: [String], input: [UInt8]? = nil, environment extra: [String: String] = [:]) throws
        -> Output
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = toolPath
        environment["LC_ALL"] = "C"
        environment.merge(extra) { _, new in new }
        process.environment = environment
        // stderr goes to an unlinked temporary file, so neither stream can fill a pipe and block the child.
        var template = Array((NSTemporaryDirectory() + "/piflash-stderr-XXXXXX").utf8CString)
        let errFD = mkstemp(&template)
        guard errFD >= 0 else { throw FixtureError("mkstemp failed: \(errno)") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        let errHandle = FileHandle(fileDescriptor: errFD, closeOnDealloc: true)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = errHandle
        let inPipe = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
        try process.run()
        if let input {
            inPipe.fileHandleForWriting.write(Data(input))
            try inPipe.fileHandleForWriting.close()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try errHandle.seek(toOffset: 0)
        let errData = errHandle.readDataToEndOfFile()
        return Output(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Runs a program and fails the test (by throwing) when it exits non-zero.
    @discardableResult
    static func must(_ arguments: [String], input: [UInt8]? = nil, environment: [String: String] = [:]) throws -> String {
        let output = try run(arguments, input: input, environment: environment)
        guard output.status == 0 else {
            throw FixtureError("\(arguments.joined(separator: " ")) exited \(output.status): \(output.stderr)\(output.stdout)")
        }
        return output.stdout
    }

    struct FixtureError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// A fresh temporary folder, removed by the caller with ``remove(_:)``.
    static func temporaryDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/piflash-inject-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw FixtureError("mkdtemp failed: \(errno)") }
        return String(cString: made)
    }

    static func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    /// A NixOS-sdImage-shaped disk image made by scripts/mk-nixos-like-image.
    ///
    /// - Parameter largeBlocks: make the root with 4 KiB blocks, as real (≥ 512 MiB) sdImages have,
    ///   through an `MKE2FS_CONFIG` without the `small` type's 1 KiB blocks; by default the small
    ///   fixture gets mke2fs' 1 KiB blocks.
    static func makeImage(
        in directory: String, name: String = "disk.img", gpt: Bool = false, extraMiB: Int? = nil, largeBlocks: Bool = false
    ) throws -> String {
        let path = directory + "/" + name
        var arguments = ["bash", packageRoot + "/scripts/mk-nixos-like-image", path]
        if gpt { arguments.append("--gpt") }
        if let extraMiB { arguments += ["--extra-mib", String(extraMiB)] }
        var environment: [String: String] = [:]
        if largeBlocks {
            let config = directory + "/mke2fs-4k.conf"
            let text = """
                [defaults]
                \tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
                \tblocksize = 4096
                \tinode_size = 256
                \tinode_ratio = 16384
                [fs_types]
                \text4 = {
                \t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
                \t}

                """
            try Data(text.utf8).write(to: URL(fileURLWithPath: config))
            environment["MKE2FS_CONFIG"] = config
        }
        try must(arguments, environment: environment)
        return path
    }

    /// Partition start and size in bytes, read independently with `sfdisk -J`.
    static func sfdiskPartition(_ path: String, number: Int) throws -> (offset: UInt64, size: UInt64) {
        let json = try must(["sfdisk", "-J", path])
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let table = object?["partitiontable"] as? [String: Any]
        let partitions = table?["partitions"] as? [[String: Any]] ?? []
        guard number >= 1, number <= partitions.count,
            let start = partitions[number - 1]["start"] as? Int, let size = partitions[number - 1]["size"] as? Int
        else { throw FixtureError("sfdisk shows no partition \(number) on \(path)") }
        return (UInt64(start) * 512, UInt64(size) * 512)
    }

    /// `e2fsck -fn 'PATH?offset=N'`, run here independently of the code under test.
    static func e2fsck(_ path: String, offset: UInt64) throws -> Output {
        try run(["e2fsck", "-fn", "\(path)?offset=\(offset)"])
    }

    /// `debugfs -w -R COMMAND 'PATH?offset=N'`.
    static func debugfs(_ path: String, offset: UInt64, _ command: String, write: Bool = true) throws -> String {
        try must(["debugfs"] + (write ? ["-w"] : []) + ["-R", command, "\(path)?offset=\(offset)"])
    }

    static func sha256(ofFile path: String) throws -> String {
        String(try must(["sha256sum", path]).prefix(64))
    }

    /// Attaches a loop device over a whole file, runs `body`, detaches it (also on failure).
    static func withLoopDevice<T>(over file: String, _ body: (String) throws -> T) throws -> T {
        let device = try must(["losetup", "-f", "--show", file]).trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? run(["losetup", "-d", device]) }
        return try body(device)
    }

    /// What the kernel sees of one file in a read-only mount.
    struct KernelFile {
        var content: [UInt8]
        var mode: UInt16
        var uid: UInt32
        var gid: UInt32
        var isDirectory: Bool
    }

    /// Mounts the ext4 at `offset` of `path` read-only through a read-only offset loop device
    /// (`losetup -r -o OFFSET --sizelimit SIZE`, `mount -o ro`), reads `paths`, unmounts and detaches.
    static func kernelView(of path: String, offset: UInt64, size: UInt64, paths: [String]) throws -> [String: KernelFile] {
        let device = try must(["losetup", "-r", "-f", "--show", "-o", String(offset), "--sizelimit", String(size), path])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? run(["losetup", "-d", device]) }
        let mountPoint = try temporaryDirectory()
        defer { remove(mountPoint) }
        try must(["mount", "-t", "ext4", "-o", "ro", device, mountPoint])
        defer { _ = try? run(["umount", mountPoint]) }
        var found: [String: KernelFile] = [:]
        for inner in paths {
            let full = mountPoint + inner
            var info = stat()
            guard lstat(full, &info) == 0 else { continue }
            let isDirectory = info.st_mode & S_IFMT == S_IFDIR
            let content = isDirectory ? [] : [UInt8](FileManager.default.contents(atPath: full) ?? Data())
            found[inner] = KernelFile(
                content: content, mode: UInt16(info.st_mode & 0o7777), uid: info.st_uid, gid: info.st_gid,
                isDirectory: isDirectory)
        }
        return found
    }

    /// The three files of the SPEC: an ed25519 host key (0600), its public key (0644) and the
    /// NetworkManager environment file (0600) whose PSK has `$` and spaces.
    static func specFiles() throws -> [BootstrapFile] {
        let directory = try temporaryDirectory()
        defer { remove(directory) }
        let key = directory + "/ssh_host_ed25519_key"
        try must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@bastet", "-f", key])
        let privateKey = [UInt8](try Data(contentsOf: URL(fileURLWithPath: key)))
        let publicKey = [UInt8](try Data(contentsOf: URL(fileURLWithPath: key + ".pub")))
        let env = "WIFI_SSID=Bastet Home\nWIFI_PSK=p@ss $HOME word with  spaces $$ and \\$x\n"
        return [
            BootstrapFile(path: "/var/lib/bootstrap/ssh_host_ed25519_key", content: privateKey, mode: 0o600),
            BootstrapFile(path: "/var/lib/bootstrap/ssh_host_ed25519_key.pub", content: publicKey, mode: 0o644),
            BootstrapFile(path: "/var/lib/networkmanager/system-connections.env", content: Array(env.utf8), mode: 0o600),
        ]
    }

    /// Checks every file independently through a kernel mount, and the directories the patcher made.
    static func expectKernelSees(
        _ files: [BootstrapFile], on path: String, offset: UInt64, size: UInt64, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let view = try kernelView(
            of: path, offset: offset, size: size,
            paths: files.map(\.path) + ["/var/lib/bootstrap", "/var/lib/networkmanager", "/var/lib", "/var"])
        for file in files {
            guard let seen = view[file.path] else {
                Issue.record("the kernel does not see \(file.path)", sourceLocation: sourceLocation)
                continue
            }
            #expect(!seen.isDirectory, sourceLocation: sourceLocation)
            #expect(seen.content == file.content, "content of \(file.path)", sourceLocation: sourceLocation)
            #expect(seen.mode == file.mode, "mode of \(file.path)", sourceLocation: sourceLocation)
            #expect(seen.uid == file.uid && seen.gid == file.gid, "owner of \(file.path)", sourceLocation: sourceLocation)
        }
        #expect(view["/var/lib/bootstrap"]?.mode == 0o700, sourceLocation: sourceLocation)
        #expect(view["/var/lib/bootstrap"]?.isDirectory == true, sourceLocation: sourceLocation)
        #expect(view["/var/lib/bootstrap"]?.uid == 0, sourceLocation: sourceLocation)
        #expect(view["/var/lib/networkmanager"]?.mode == 0o755, sourceLocation: sourceLocation)
        #expect(view["/var/lib"]?.mode == 0o755, sourceLocation: sourceLocation)
    }
}
