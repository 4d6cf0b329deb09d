import Foundation

/// The folder of host files (`NAME.toml`) and how it was found.
///
/// Looked up in `--hosts DIR`, else `$PIFLASH_HOSTS`, else `./hosts`, else `/etc/piflash/hosts`.
public struct HostCatalog: Sendable {
    /// The folder, absolute.
    public let directory: String
    /// Where the folder came from: `--hosts`, `$PIFLASH_HOSTS`, `./hosts` or `/etc/piflash/hosts`.
    public let origin: String

    /// Finds the hosts folder.
    ///
    /// - Parameters:
    ///   - directory: `--hosts DIR`, when given.
    ///   - environment: the process environment (`PIFLASH_HOSTS`).
    ///   - currentDirectory: where `./hosts` is looked for.
    /// - Throws: ``PiflashError`` (exit 2) when the chosen folder does not exist, or when none
    ///   was given and neither `./hosts` nor `/etc/piflash/hosts` exists.
    public init(
        directory: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
        currentDirectory: String = FileManager.default.currentDirectoryPath
    ) throws {
        func isDirectory(_ path: String) -> Bool {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
        }
        let chosen: (String, String)?
        if let directory, !directory.isEmpty {
            chosen = (absolutePath(directory, relativeTo: currentDirectory), "--hosts")
        } else if let variable = environment["PIFLASH_HOSTS"], !variable.isEmpty {
            chosen = (absolutePath(variable, relativeTo: currentDirectory), "$PIFLASH_HOSTS")
        } else {
            chosen = nil
        }
        if let (path, origin) = chosen {
            guard isDirectory(path) else {
                throw PiflashError.usage(
                    "the hosts folder \(path) (from \(origin)) does not exist or is not a folder", path: path)
            }
            self.directory = path
            self.origin = origin
            return
        }
        let local = absolutePath("hosts", relativeTo: currentDirectory)
        if isDirectory(local) {
            self.directory = local
            self.origin = "./hosts"
        } else if isDirectory("/etc/piflash/hosts") {
            self.directory = "/etc/piflash/hosts"
            self.origin = "/etc/piflash/hosts"
        } else {
            throw PiflashError.usage(
                "no hosts folder: neither ./hosts nor /etc/piflash/hosts exists",
                hint: "give --hosts DIR or set PIFLASH_HOSTS to the folder holding your NAME.toml files")
        }
    }

    /// A catalog of a known folder, without looking anything up.
    public init(resolvedDirectory: String) {
        directory = resolvedDirectory
        origin = "--hosts"
    }

    /// The host names (file names without `.toml`), sorted; hidden files are skipped.
    ///
    /// - Throws: ``PiflashError`` (exit 2) when the folder cannot be listed.
    public func names() throws -> [String] {
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw PiflashError.usage("cannot list the hosts folder \(directory)", path: directory)
        }
        return entries.filter { $0.hasSuffix(".toml") && !$0.hasPrefix(".") && $0.count > 5 }
            .map { String($0.dropLast(5)) }
            .sorted()
    }

    /// The host file of a host name, whether or not it exists.
    public func path(of name: String) -> String {
        directory + "/" + name + ".toml"
    }

    /// Loads and validates one host. `name` is a host name (`bastet`), or a path to a host file
    /// when it contains `/` or ends in `.toml`.
    ///
    /// - Throws: ``PiflashError`` (exit 2) for an unknown host (listing the known ones) or an
    ///   invalid host file.
    public func load(_ name: String) throws -> HostFile {
        if name.contains("/") || name.hasSuffix(".toml") {
            return try HostFile.load(path: name)
        }
        let file = path(of: name)
        guard FileManager.default.fileExists(atPath: file) else {
            let known = (try? names()) ?? []
            var hint = known.isEmpty
                ? "the folder has no host files; create \(name).toml there"
                : "known hosts: " + known.joined(separator: ", ")
            if let near = closestKey(to: name, among: known) { hint = "did you mean `\(near)`? " + hint }
            throw PiflashError.usage(
                "unknown host `\(name)`: there is no \(name).toml in \(directory) (from \(origin))", path: directory,
                hint: hint)
        }
        return try HostFile.load(path: file)
    }
}
