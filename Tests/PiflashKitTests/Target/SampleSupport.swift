#if canImport(Glibc)
import Glibc
#endif
import PiflashKit
import PiflashPlatform

/// Where the shared udev samples live: `../shared/udev-samples` next to the package root.
enum UdevSamples {
    static let directory: String = {
        var path = #filePath
        for _ in 0..<4 {  // …/Tests/PiflashKitTests/Target/File.swift → package root
            if let slash = path.lastIndex(of: "/") { path = String(path[..<slash]) }
        }
        return path + "/../shared/udev-samples"
    }()

    static var available: Bool { access(directory + "/README.md", R_OK) == 0 }

    static let skipMessage = "the shared udev samples are absent (expected at ../shared/udev-samples next to the package root)"

    /// Every `*.txt` sample file name.
    static func fileNames() -> [String] {
        Sysfs.directoryEntries(directory).filter { $0.hasSuffix(".txt") }.sorted()
    }

    static func text(_ name: String) throws -> String {
        guard let text = Sysfs.read(directory + "/" + name) else {
            throw PiflashError.failure("cannot read sample \(name)", path: directory + "/" + name)
        }
        return text
    }

    static func records(_ name: String) throws -> [UdevRecord] {
        UdevRecord.parse(try text(name))
    }
}

/// A mount table in /proc/self/mountinfo format, for the machine a sample came from.
/// Each mount: device number, source, mount point, filesystem type.
func mountinfo(_ mounts: [(String, String, String, String)]) -> MountTable {
    var lines: [String] = []
    for (index, (device, source, mountPoint, fsType)) in mounts.enumerated() {
        let escaped = mountPoint.replacingSpaces()
        lines.append("\(30 + index) 1 \(device) / \(escaped) rw,relatime shared:1 - \(fsType) \(source) rw")
    }
    return MountTable(mountinfo: lines.joined(separator: "\n") + "\n")
}

extension String {
    fileprivate func replacingSpaces() -> String {
        var out = ""
        for character in self { out += character == " " ? "\\040" : String(character) }
        return out
    }
}

let GB: UInt64 = 1_000_000_000
let GiB: UInt64 = 1 << 30
