#if canImport(Glibc)
import Glibc
#endif
import PiflashPlatform

/// Writes the bootstrap files into the card's ext4 root partition in place, with libext2fs, at the
/// partition's offset (SPEC step 5).
public enum Ext4Patcher {
    /// The permissions of directories the patcher creates: 0700 for these, 0755 for any other.
    public static let privateDirectories: Set<String> = ["/var/lib/bootstrap"]

    /// Injects `files` into the root filesystem of `root` on the device or image file `path`.
    ///
    /// Everything is checked before anything changes: the paths (absolute, no `..`, not under
    /// `/nix/store`, never `/nix-path-registration`), every existing parent inside the image (a
    /// symlink or non-directory parent is refused), every existing target (only regular files are
    /// replaced), and free space and inodes (counting what replaced files give back). Then missing
    /// parent directories are created (0755, or 0700 for `/var/lib/bootstrap`, root:root), each file
    /// is written or replaced (old blocks freed), and given its mode, uid, gid and atime = mtime =
    /// ctime = now. Closing flushes and fsyncs; a flush error is thrown.
    ///
    /// Nothing else in the filesystem is touched. Paths under `/etc` are written (the host file warns about them).
    ///
    /// With a `writeLog`, every block libext2fs writes is recorded there (offsets relative to the
    /// filesystem), so the flash can record the map of what it changed on the card.
    ///
    /// - Returns: the records (path, content digest — keyed for secret-derived files —, mode, uid,
    ///   gid) of the files as intended; the proof that they are on the medium is ``InjectionVerifier/verify(_:root:on:)``.
    /// - Parameter descriptor: the flash job's handle of `path` (not in `O_DIRECT` mode), borrowed
    ///   instead of opening `path` again.
    /// - Throws: ``PiflashError``: exit 2 for a path the rules refuse, a symlinked or non-directory
    ///   parent, a target that is not a regular file, a journal needing recovery, or a duplicate
    ///   path; exit 1 when the root filesystem is too full (nothing is changed then) or on I/O errors.
    @discardableResult
    public static func inject(
        _ files: [BootstrapFile], into root: RootPartition, on path: String, writeLog: Ext2WriteLog? = nil,
        descriptor: Int32? = nil, reporter: Reporter
    ) throws -> [InjectedFile] {
        // Paths under /etc were already warned about when the host file was read, before any card.
        let paths = try validate(files)
        let total = files.reduce(UInt64(0)) { $0 + UInt64($1.contentCount) }
        let started = monotonicSeconds()
        reporter.begin("inject", total: total)
        try Ext2Filesystem.withFilesystem(
            path: path, offset: root.offset, access: .readWrite, writeLog: writeLog, descriptor: descriptor
        ) { fs in
            if fs.needsJournalRecovery {
                throw PiflashError.usage(
                    "the root filesystem's journal needs recovery: it was not cleanly unmounted", path: path,
                    hint: "rebuild the image, or run e2fsck on it first")
            }
            let plan = try InjectionPlan(files: files, paths: paths, fs: fs)
            try plan.checkSpace(fs: fs, path: path)
            try apply(plan, fs: fs, reporter: reporter, total: total)
        }
        reporter.end("inject", bytes: total, seconds: monotonicSeconds() - started)
        let records = files.map(\.record)
        for record in records { reporter.event("injected", record.jsonFields) }
        return records
    }

    /// Checks every path (``InjectionPath``, the rules the host file was loaded with) and refuses
    /// duplicates and a file that would be another's parent directory.
    static func validate(_ files: [BootstrapFile]) throws -> [InjectionPath] {
        let paths = try files.map { try InjectionPath.checked($0.path) }
        if let conflict = InjectionPath.conflict(among: paths) {
            throw PiflashError.usage(conflict.reason, hint: "fix the paths under [[files]] in the host file")
        }
        return paths
    }

    private static func apply(_ plan: InjectionPlan, fs: Ext2Filesystem, reporter: Reporter, total: UInt64) throws {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        // Replaced files give their blocks back first, so the space counted for them is there when
        // new blocks are taken.
        for step in plan.files {
            if let existing = step.existing, existing.linksCount <= 1 { try fs.truncate(existing.inode) }
        }
        var directories = plan.existingDirectories
        for directory in plan.directoriesToCreate {
            guard let parent = directories[InjectionPath.join(directory.dropLast())] else {
                preconditionFailure("directory \(directory) planned before its parent")
            }
            let text = InjectionPath.join(directory)
            let inode = try fs.makeDirectory(
                directory[directory.count - 1], in: parent,
                permissions: privateDirectories.contains(text) ? 0o700 : 0o755, uid: 0, gid: 0, time: now)
            directories[text] = inode
            reporter.note("created directory \(text)")
        }
        var done: UInt64 = 0
        for step in plan.files {
            guard let parent = directories[step.path.parentText] else {
                preconditionFailure("file \(step.path.text) planned before its directory")
            }
            try step.file.withContent { content in
                try fs.writeFile(
                    step.path.name, in: parent, replacing: step.existing?.inode, content: content,
                    permissions: step.file.mode, uid: step.file.uid, gid: step.file.gid, time: now)
            }
            done += UInt64(step.file.contentCount)
            reporter.progress("inject", done: done, total: total)
        }
    }
}

/// What the patcher will do, worked out before anything changes.
struct InjectionPlan {
    struct FileStep {
        var file: BootstrapFile
        var path: InjectionPath
        /// The regular file this replaces, if any.
        var existing: Ext2Stat?
    }

    /// Existing directories on the way, by path (`/` included).
    var existingDirectories: [String: Ext2InodeNumber] = ["/": Ext2Filesystem.rootInode]
    /// Directories to create, parents first, as components.
    var directoriesToCreate: [[String]] = []
    /// Bytes of new directory entries, by the directory (existing or new) that receives them.
    var newEntryBytes: [String: UInt64] = [:]
    var files: [FileStep] = []

    init(files: [BootstrapFile], paths: [InjectionPath], fs: Ext2Filesystem) throws {
        var planned = Set<String>()
        for (file, path) in zip(files, paths) {
            let walk = try PathWalk.walk(path, in: fs)
            for (index, inode) in walk.existingParents.enumerated() {
                existingDirectories[InjectionPath.join(path.components[0...index])] = inode
            }
            let missingFrom = walk.existingParents.count
            if missingFrom < path.parentComponents.count {
                for end in (missingFrom + 1)...path.parentComponents.count {
                    let directory = Array(path.components[..<end])
                    if planned.insert(InjectionPath.join(directory)).inserted {
                        directoriesToCreate.append(directory)
                        addEntry(directory[end - 1], to: InjectionPath.join(directory.dropLast()))
                    }
                }
            }
            if walk.existingFile == nil || walk.existingFile!.linksCount > 1 {
                addEntry(path.name, to: path.parentText)
            }
            self.files.append(FileStep(file: file, path: path, existing: walk.existingFile))
        }
    }

    /// A directory entry takes 8 bytes and the name, rounded up to 4 bytes.
    private mutating func addEntry(_ name: String, to directory: String) {
        newEntryBytes[directory, default: 0] += 8 + (UInt64(name.utf8.count) + 3) / 4 * 4
    }

    /// Refuses, before any change, when the files would not fit.
    ///
    /// Counted generously: each file's data blocks, plus an extent block when it has more than four; each new
    /// directory's first block; for each directory getting entries, the blocks those entries fill
    /// (less the 12-byte checksum tail per block), one more as the last block may be full, and one
    /// for its extent tree. Replaced single-link files give their blocks back.
    func checkSpace(fs: Ext2Filesystem, path: String) throws {
        let blockSize = UInt64(fs.blockSize)
        var needed: UInt64 = 0
        var returned: UInt64 = 0
        var inodes: UInt64 = UInt64(directoriesToCreate.count)
        for step in files {
            let dataBlocks = (UInt64(step.file.contentCount) + blockSize - 1) / blockSize
            // Up to four extents live in the inode; more need an extent block.
            needed += dataBlocks + (dataBlocks > 4 ? 1 : 0)
            if let existing = step.existing, existing.linksCount <= 1 {
                returned += existing.sectors * 512 / blockSize
            } else {
                inodes += 1
            }
        }
        needed += UInt64(directoriesToCreate.count)
        for bytes in newEntryBytes.values {
            needed += (bytes + blockSize - 13) / (blockSize - 12) + 2
        }
        let net = needed > returned ? needed - returned : 0
        if net > fs.freeBlocks {
            throw PiflashError.failure(
                "root filesystem full: needs \(net * blockSize) bytes, has \(fs.freeBlocks * blockSize) free",
                path: path,
                hint: "build the image with more free space in its root filesystem, or inject smaller files; nothing was changed")
        }
        if inodes > fs.freeInodes {
            throw PiflashError.failure(
                "root filesystem full: needs \(inodes) inodes, has \(fs.freeInodes) free", path: path,
                hint: "build the image with more inodes in its root filesystem; nothing was changed")
        }
    }
}
