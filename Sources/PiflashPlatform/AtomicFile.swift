// Files that appear whole or not at all: written to a temporary file beside the target
// (O_EXCL, the final mode from the start), fsync'ed, then linked into place (refusing an
// existing file) or renamed over the old one. A crash leaves at most a `.NAME.tmp-PID` file, never a
// half-written target.
import Glibc

/// Whole-file writes for small files (host files, SOPS files, `.sops.yaml`).
public enum AtomicFile {
    /// Creates `path` with `content` and `mode`; fails if it exists (no race: `link(2)`).
    /// - Throws: ``PiflashError`` (exit 2) naming the call and errno: `EEXIST`, `EACCES`,
    ///   `EROFS`, `ENOSPC`…; nothing is left behind.
    public static func createNew(_ path: String, content: [UInt8], mode: mode_t) throws {
        let temporary = try writeTemporary(for: path, content: content, mode: mode)
        defer { unlink(temporary) }
        guard link(temporary, path) == 0 else {
            let code = errno
            throw fileError(
                "link", errno: code, path: path, status: .usage,
                what: code == EEXIST ? "\(path) already exists" : "cannot create \(path)")
        }
        fsyncFolder(of: path)
    }

    /// Replaces `path` with `content`, keeping its mode (and, for root, its owner).
    /// - Throws: ``PiflashError`` (exit 2); the old file is then untouched.
    public static func replace(_ path: String, content: [UInt8]) throws {
        var info = stat()
        let exists = stat(path, &info) == 0
        let mode = exists ? info.st_mode & 0o7777 : 0o644
        let temporary = try writeTemporary(for: path, content: content, mode: mode)
        // `sudo piflash …` must not hand a user's file to root.
        if exists && geteuid() == 0 { _ = chown(temporary, info.st_uid, info.st_gid) }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw fileError("rename", errno: code, path: path, status: .usage, what: "cannot replace \(path)")
        }
        fsyncFolder(of: path)
    }

    /// Removes a file this process created (rolling back); errors are ignored.
    public static func remove(_ path: String) {
        unlink(path)
    }

    /// Whether a folder exists and this process may create files in it (`access(W_OK)`, which
    /// also reports a read-only filesystem to root); nil when it may, else the reason.
    public static func writeProblem(folder: String) -> String? {
        if access(folder, W_OK | X_OK) == 0 { return nil }
        return String(cString: strerror(errno))
    }

    /// Creates a folder (mode 0755) if missing; returns whether it was created.
    public static func makeFolder(_ path: String) throws -> Bool {
        if mkdir(path, 0o755) == 0 { return true }
        if errno == EEXIST { return false }
        throw fileError("mkdir", errno: errno, path: path, status: .usage, what: "cannot create the folder \(path)")
    }

    /// Removes an empty folder (rolling back ``makeFolder(_:)``); errors are ignored.
    public static func removeFolder(_ path: String) {
        rmdir(path)
    }

    private static func writeTemporary(for path: String, content: [UInt8], mode: mode_t) throws -> String {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let temporary = (folder.isEmpty ? "" : folder) + "/." + name + ".tmp-\(getpid())"
        var descriptor: Int32
        repeat { descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode) } while descriptor < 0 && errno == EINTR
        guard descriptor >= 0 else {
            throw fileError("open", errno: errno, path: temporary, status: .usage, what: "cannot create a file in \(folder)")
        }
        do {
            // The mode is exact, whatever the umask.
            guard fchmod(descriptor, mode) == 0 else { throw fileError("fchmod", errno: errno, path: temporary, status: .usage) }
            var offset = 0
            while offset < content.count {
                let written = content[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
                if written < 0 {
                    if errno == EINTR { continue }
                    throw fileError("write", errno: errno, path: temporary, status: .usage)
                }
                offset += written
            }
            guard fsync(descriptor) == 0 else { throw fileError("fsync", errno: errno, path: temporary, status: .usage) }
            guard close(descriptor) == 0 else {
                descriptor = -1
                throw fileError("close", errno: errno, path: temporary, status: .usage)
            }
            descriptor = -1
        } catch {
            if descriptor >= 0 { close(descriptor) }
            unlink(temporary)
            throw error
        }
        return temporary
    }

    /// A file error without the card-oriented hints ``PiflashError/system(_:errno:path:offset:status:what:)`` adds.
    private static func fileError(_ call: String, errno code: Int32, path: String, status: ExitStatus, what: String? = nil) -> PiflashError {
        var error = PiflashError.system(call, errno: code, path: path, status: status, what: what)
        switch code {
        case EROFS: error.hint = "the folder is on a read-only filesystem"
        case EACCES, EPERM: error.hint = "you may not write in this folder"
        case EEXIST: error.hint = nil
        default: if code != ENOSPC { error.hint = nil }
        }
        return error
    }

    private static func fsyncFolder(of path: String) {
        let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let descriptor = open(folder.isEmpty ? "/" : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if descriptor >= 0 {
            fsync(descriptor)
            close(descriptor)
        }
    }
}
