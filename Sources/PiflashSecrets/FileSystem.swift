// The few file-system reads this module needs, on Glibc: whole small files into memory and
// the regular files of a folder. Nothing here ever writes.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PiflashCore

/// Reading secrets files into memory.
enum FileSystem {
    /// The whole content of a regular file.
    /// - Parameter what: what the file is, for the error message.
    /// - Throws: ``PiflashError`` (exit 2) naming the file, the call and errno.
    static func readFile(_ path: String, what: String) throws -> [UInt8] {
        var descriptor: Int32
        repeat { descriptor = open(path, O_RDONLY | O_CLOEXEC) } while descriptor < 0 && errno == EINTR
        guard descriptor >= 0 else {
            throw PiflashError.system("open", errno: errno, path: path, status: .usage, what: "cannot open the \(what)")
        }
        defer { close(descriptor) }
        var info = stat()
        if fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            throw PiflashError.usage("the \(what) is a folder, not a file", path: path)
        }
        var content: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw PiflashError.system("read", errno: errno, path: path, status: .usage, what: "cannot read the \(what)")
            }
            if count == 0 { break }
            content += buffer[0..<count]
        }
        return content
    }

    /// Whether `path` is a regular file this process can read.
    static func isReadableFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && access(path, R_OK) == 0
    }

    /// The names of the regular files directly in a folder (symlinks to regular files
    /// included; hidden files and subfolders skipped), sorted.
    /// - Throws: ``PiflashError`` (exit 2) when the folder cannot be read.
    static func regularFiles(in folder: String) throws -> [String] {
        guard let directory = opendir(folder) else {
            throw PiflashError.system("opendir", errno: errno, path: folder, status: .usage, what: "cannot open the secrets folder")
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            var info = stat()
            if stat(folder + "/" + name, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG { names.append(name) }
        }
        return names.sorted()
    }
}

/// The environment of this process, as a dictionary.
enum ProcessEnvironment {
    static var current: [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}
