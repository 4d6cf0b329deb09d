import PiflashPlatform

/// An absolute path inside the image where a bootstrap file goes, checked against every rule of
/// piflash-hosts(5) and split into components. The one path type of the host-file parser, the
/// ext4 patcher and the injected-file verifier: a path that exists as a value passed every rule.
public struct InjectionPath: Sendable, Hashable, CustomStringConvertible {
    /// The path as written: `/var/lib/bootstrap/ssh_host_ed25519_key`.
    public let text: String
    /// The directory names from the root down, then the file name.
    public let components: [String]

    public var description: String { text }
    /// The file name.
    public var name: String { components[components.count - 1] }
    var parentComponents: [String] { Array(components.dropLast()) }
    /// `/var/lib/bootstrap` for `/var/lib/bootstrap/ssh_host_ed25519_key`.
    public var parentText: String { InjectionPath.join(parentComponents) }

    static func join(_ components: some Collection<String>) -> String {
        "/" + components.joined(separator: "/")
    }

    /// A rule of piflash-hosts(5) a path breaks, with the reason in words.
    public struct Violation: Error, Sendable, Equatable, CustomStringConvertible {
        /// The path at fault.
        public var path: String
        /// Why it is refused, e.g. `a component is longer than 255 bytes`.
        public var reason: String
        public var description: String { "\(path): \(reason)" }
    }

    /// Checks a path against the rules: absolute; names a file (no trailing `/`); no empty, `.` or
    /// `..` components; no NUL; no component over 255 bytes (ext4's limit); not `/nix` nor under
    /// `/nix/store` (immutable, checked by Nix); never `/nix-path-registration` (NixOS' first boot
    /// loads and deletes it).
    ///
    /// - Throws: ``Violation`` naming the rule.
    public init(_ text: String) throws(Violation) {
        func refuse(_ why: String) -> Violation { Violation(path: text, reason: why) }
        guard text.hasPrefix("/") else {
            throw refuse("the path is relative: files are placed by absolute path in the image")
        }
        guard !text.utf8.contains(0) else { throw refuse("the path contains a NUL byte") }
        if text == "/" || text.hasSuffix("/") { throw refuse("the path names a directory, not a file") }
        let components = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        guard !components.contains("..") else { throw refuse("the path contains `..`: give the real path") }
        guard !components.contains(where: { $0.isEmpty || $0 == "." }) else {
            throw refuse("the path is not canonical (`.` or `//`): write it plainly")
        }
        if let long = components.first(where: { $0.utf8.count > 255 }) {
            throw refuse("the component `\(long.prefix(24))…` is \(long.utf8.count) bytes, longer than ext4's 255")
        }
        if components == ["nix"] || (components.count >= 2 && components[0] == "nix" && components[1] == "store") {
            throw refuse("/nix/store is immutable and checked by Nix; put bootstrap files under /var/lib")
        }
        if components == ["nix-path-registration"] {
            throw refuse("/nix-path-registration belongs to NixOS' first boot (it loads and deletes it); never touch it")
        }
        self.text = text
        self.components = components
    }

    /// Whether the path is under `/etc`, which NixOS regenerates on activation (a warning, not an error).
    public var isUnderEtc: Bool { components.count >= 2 && components[0] == "etc" }

    /// Checks a set of paths together: none listed twice, and none the parent directory of another
    /// (`/var/lib/a` and `/var/lib/a/b` cannot both be files).
    ///
    /// - Returns: nil, or the two paths at fault and why.
    public static func conflict(among paths: [InjectionPath]) -> (first: InjectionPath, second: InjectionPath, reason: String)? {
        var seen: [String: InjectionPath] = [:]
        for path in paths {
            if let earlier = seen[path.text] { return (earlier, path, "\(path.text) is listed twice") }
            seen[path.text] = path
        }
        for path in paths {
            for prefix in 1..<max(path.components.count, 1) {
                let parent = InjectionPath.join(path.components[..<prefix])
                if let file = seen[parent] {
                    return (file, path, "\(parent) cannot be both a file and the directory of \(path.text)")
                }
            }
        }
        return nil
    }

    /// ``init(_:)`` as a usage error (exit 2) for the patcher and the verifier.
    static func checked(_ text: String) throws -> InjectionPath {
        do {
            return try InjectionPath(text)
        } catch {
            throw PiflashError.usage("cannot inject \(text): \(error.reason)", hint: "fix the path under [[files]] in the host file")
        }
    }
}

/// What a walk down an injection path found in the filesystem.
struct PathWalk {
    /// The inodes of the leading parent directories that exist (index `i` holds
    /// `components[0...i]`), all real directories.
    var existingParents: [Ext2InodeNumber]
    /// The file's inode and stat when the whole path exists.
    var existingFile: Ext2Stat?

    /// Whether every parent directory exists.
    func parentsComplete(of path: InjectionPath) -> Bool { existingParents.count == path.parentComponents.count }

    /// Walks `path` from the root, one `ext2fs_lookup` per component, following nothing.
    ///
    /// - Throws: ``PiflashError`` exit `status` when an existing parent is a symlink (writing through
    ///   it could land anywhere, even outside `/var/lib`) or not a directory, or when the file itself
    ///   exists but is not a regular file.
    static func walk(_ path: InjectionPath, in fs: Ext2Filesystem, status: ExitStatus = .usage) throws -> PathWalk {
        var walk = PathWalk(existingParents: [], existingFile: nil)
        var directory = Ext2Filesystem.rootInode
        for (index, name) in path.parentComponents.enumerated() {
            guard let inode = try fs.lookup(name, in: directory) else { return walk }
            let info = try fs.stat(inode)
            let here = InjectionPath.join(path.components[0...index])
            if info.isSymlink {
                throw PiflashError(
                    status, "cannot inject \(path.text): its parent \(here) is a symlink inside the image", path: fs.path,
                    hint: "piflash never writes through a symlink; put the file under a real directory")
            }
            guard info.isDirectory else {
                throw PiflashError(
                    status, "cannot inject \(path.text): its parent \(here) is a \(info.kind) inside the image, not a directory",
                    path: fs.path)
            }
            walk.existingParents.append(inode)
            directory = inode
        }
        if let inode = try fs.lookup(path.name, in: directory) {
            let info = try fs.stat(inode)
            guard info.isRegularFile else {
                throw PiflashError(
                    status, "cannot inject \(path.text): it exists inside the image as a \(info.kind)", path: fs.path,
                    hint: "piflash only replaces regular files")
            }
            walk.existingFile = info
        }
        return walk
    }
}
