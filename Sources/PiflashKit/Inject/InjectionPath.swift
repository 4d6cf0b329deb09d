import PiflashPlatform

/// An absolute path inside the image, checked against the host-file rules and split into
/// components.
struct InjectionPath: Sendable, Hashable {
    let text: String
    /// The directory names from the root down, then the file name.
    let components: [String]

    var name: String { components[components.count - 1] }
    var parentComponents: [String] { Array(components.dropLast()) }
    /// `/var/lib/bootstrap` for `/var/lib/bootstrap/ssh_host_ed25519_key`.
    var parentText: String { InjectionPath.join(parentComponents) }

    static func join(_ components: some Collection<String>) -> String {
        "/" + components.joined(separator: "/")
    }

    /// Checks a path for the rules of piflash-hosts(5): absolute, no empty, `.` or `..` components,
    /// nothing under `/nix/store`, never `/nix-path-registration`.
    ///
    /// - Throws: ``PiflashError`` exit 2 naming the rule.
    init(_ text: String) throws {
        func refuse(_ why: String) -> PiflashError {
            PiflashError.usage("cannot inject \(text): \(why)", hint: "fix the path under [[files]] in the host file")
        }
        guard text.hasPrefix("/") else { throw refuse("the path must be absolute") }
        guard !text.utf8.contains(0) else { throw refuse("the path contains a NUL byte") }
        let components = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        guard !components.isEmpty, !components.contains(where: \.isEmpty) else {
            throw refuse("the path has an empty component (a trailing or doubled /)")
        }
        guard !components.contains(where: { $0 == "." || $0 == ".." }) else {
            throw refuse("the path contains . or ..")
        }
        guard !components.contains(where: { $0.utf8.count > 255 }) else {
            throw refuse("a component is longer than 255 bytes")
        }
        if components.count >= 2 && components[0] == "nix" && components[1] == "store" {
            throw refuse("/nix/store is immutable and verified by Nix")
        }
        if components == ["nix-path-registration"] {
            throw refuse("/nix-path-registration belongs to NixOS' first boot")
        }
        self.text = text
        self.components = components
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
