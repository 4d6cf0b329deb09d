#if canImport(Glibc)
import Glibc
#endif
import PiflashPlatform

/// Proves the injection by reading it back from the medium (SPEC step 6).
public enum InjectionVerifier {
    /// Drops the kernel's caches of `path`, reopens the root filesystem fresh with direct I/O, and
    /// reads every file back: content digest (keyed under the file's ``BootstrapFile/digestKey`` when
    /// it is derived from secrets, else SHA-256), mode, uid and gid must equal what was intended. Then
    /// runs a read-only consistency check, `e2fsck -fn 'PATH?offset=N'`.
    ///
    /// Only reads: nothing on the medium changes.
    ///
    /// - Returns: the records of the files as read back from the medium (keyed digests for
    ///   secret-derived files, as ``BootstrapFile/record`` has them).
    /// - Throws: ``PiflashError``: exit 4 when a file is missing or differs (the message names the
    ///   file and what differs) or when e2fsck finds the filesystem not clean (with its findings);
    ///   exit 1 when the medium cannot be read or e2fsck cannot run.
    @discardableResult
    /// - Parameter descriptor: the flash job's handle of `path` (not in `O_DIRECT` mode), borrowed to
    ///   drop the caches and to reopen the filesystem on (a fresh libext2fs handle on a duplicate:
    ///   the caches were just dropped, so it reads the medium); else `path` is opened.
    public static func verify(
        _ files: [BootstrapFile], root: RootPartition, on path: String, descriptor: Int32? = nil
    ) throws -> [InjectedFile] {
        let paths = try Ext4Patcher.validate(files)
        if let descriptor {
            try DeviceFile.dropCaches(descriptor, path: path)
        } else {
            try Ext2Filesystem.dropCachedBlocks(of: path)
        }
        let records = try withFreshFilesystem(path: path, offset: root.offset, descriptor: descriptor) { fs in
            try zip(files, paths).map { file, entry in try readBack(file, entry, fs: fs, path: path) }
        }
        try FilesystemCheck.run(path: path, offset: root.offset).requireClean()
        return records
    }

    /// Opens read-only with `O_DIRECT`; a file system that refuses `O_DIRECT` for an image file
    /// (`EINVAL`, e.g. an old tmpfs) falls back to the page cache, which was just dropped.
    private static func withFreshFilesystem<T>(
        path: String, offset: UInt64, descriptor: Int32?, _ body: (Ext2Filesystem) throws -> T
    ) throws -> T {
        if let descriptor {
            return try Ext2Filesystem.withFilesystem(
                path: path, offset: offset, access: .readOnly, descriptor: descriptor, body)
        }
        do {
            return try Ext2Filesystem.withFilesystem(path: path, offset: offset, access: .readOnlyDirect, body)
        } catch let error as PiflashError where error.errno == EINVAL && !Ext2Filesystem.isBlockDevice(path) {
            return try Ext2Filesystem.withFilesystem(path: path, offset: offset, access: .readOnly, body)
        }
    }

    private static func readBack(
        _ file: BootstrapFile, _ entry: InjectionPath, fs: Ext2Filesystem, path: String
    ) throws -> InjectedFile {
        let walk = try PathWalk.walk(entry, in: fs, status: .verificationFailed)
        guard let info = walk.existingFile else {
            throw PiflashError.verification("\(entry.text) is missing from the root filesystem after injection", path: path)
        }
        var content = try fs.readFile(info.inode)
        // What was read back is as secret as what was written.
        defer { SecretPages.wipe(&content) }
        // The digest of what was read back, computed as the record's was: keyed under the host's
        // digest key for secret-derived files, so even a mismatch message reveals nothing.
        let found = InjectedFile(
            path: file.path, digest: file.digest(of: content), mode: info.permissions, uid: info.uid, gid: info.gid)
        let expected = file.record
        var differences: [String] = []
        if found.digest != expected.digest || content.count != file.contentCount {
            // The sizes of secret-derived content stay out of the message (it reaches the journal):
            // a length narrows a passphrase search.
            func size(_ count: Int) -> String { file.isSecretDerived ? "" : " (\(count) bytes)" }
            differences.append(
                "content \(found.digest.label) is \(found.digest.hex ?? "-")\(size(content.count)), expected "
                    + "\(expected.digest.hex ?? "-")\(size(file.contentCount))")
        }
        if found.mode != expected.mode { differences.append("mode is \(found.modeString), expected \(expected.modeString)") }
        if found.uid != expected.uid { differences.append("uid is \(found.uid), expected \(expected.uid)") }
        if found.gid != expected.gid { differences.append("gid is \(found.gid), expected \(expected.gid)") }
        guard differences.isEmpty else {
            throw PiflashError.verification(
                "\(entry.text) as read back differs from what was injected: " + differences.joined(separator: "; "),
                path: path)
        }
        return found
    }
}
