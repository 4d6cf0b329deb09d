import Foundation
import Testing

/// A scratch folder removed at the end.
final class ScratchDirectory {
    let path: String

    init(_ name: String = "piflash-test") throws {
        path = try Shell.sh("mktemp -d /tmp/\(name).XXXXXX").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit {
        _ = try? Shell.run(["rm", "-rf", path])
    }
}

/// A loop device over a backing file, detached at the end (only the ones a test created).
final class LoopDevice {
    let path: String
    let backing: String

    /// - Parameters:
    ///   - backing: the file to attach (created sparse with `size` bytes when given).
    ///   - readOnly: `losetup -r`.
    init(backing: String, size: UInt64? = nil, readOnly: Bool = false, offset: UInt64? = nil, sizeLimit: UInt64? = nil) throws {
        if let size { try Shell.sh("truncate -s \(size) '\(backing)'") }
        var options = readOnly ? "-r " : ""
        if let offset { options += "-o \(offset) " }
        if let sizeLimit { options += "--sizelimit \(sizeLimit) " }
        path = try Shell.sh("losetup -f --show \(options)'\(backing)'").trimmingCharacters(in: .whitespacesAndNewlines)
        self.backing = backing
    }

    /// major:minor of the device.
    var majorMinor: String {
        (try? Shell.sh("lsblk -dno MAJ:MIN \(path)").trimmingCharacters(in: .whitespacesAndNewlines)) ?? ""
    }

    deinit {
        // The kernel finishes a detach only once udevd has closed the device: settle, so the
        // next test's `losetup -f` does not get a device that is still going away.
        _ = try? Shell.run(["losetup", "-d", path])
        _ = try? Shell.run(["udevadm", "settle", "--timeout=10"])
    }
}

/// NixOS-sdImage-shaped images made by scripts/mk-nixos-like-image with real tools, cached per run.
enum ImageFixture {
    private static let cache = Locked<[String: String]>([:])

    /// A fresh image of the given kind: `.img` plus `.img.zst`, `.img.xz` and `.img.gz` of it.
    static func make(in directory: ScratchDirectory, name: String = "nixos", gpt: Bool = false) throws -> String {
        let image = directory.file("\(name).img")
        try Shell.sh("'\(Shell.packageRoot)/scripts/mk-nixos-like-image' '\(image)' \(gpt ? "--gpt" : "") >/dev/null")
        return image
    }

    static func compress(_ image: String, _ kind: String) throws -> String {
        switch kind {
        case "zst": try Shell.sh("zstd -q -f '\(image)' -o '\(image).zst'")
        case "xz": try Shell.sh("xz -T2 -k -f '\(image)'")
        case "gz": try Shell.sh("gzip -k -f '\(image)'")
        default: return image
        }
        return image + "." + kind
    }

    static func sha256(_ path: String) throws -> String {
        String(try Shell.sh("sha256sum '\(path)'").prefix(64))
    }
}

/// A cgroup v1 blkio group that throttles a device, to simulate a slow card; removed at the end.
final class ThrottleGroup {
    let name: String
    let directory: String

    init?(device: LoopDevice, writeBytesPerSecond: UInt64, readBytesPerSecond: UInt64? = nil) {
        name = "piflash-test-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        directory = "/sys/fs/cgroup/blkio/" + name
        guard FileManager.default.fileExists(atPath: "/sys/fs/cgroup/blkio"),
              (try? Shell.sh("mkdir -p \(directory)")) != nil else { return nil }
        let mm = device.majorMinor
        _ = try? Shell.sh("echo '\(mm) \(writeBytesPerSecond)' > \(directory)/blkio.throttle.write_bps_device")
        if let readBytesPerSecond {
            _ = try? Shell.sh("echo '\(mm) \(readBytesPerSecond)' > \(directory)/blkio.throttle.read_bps_device")
        }
    }

    /// A command line that joins the group and then runs `arguments`.
    func wrap(_ arguments: [String]) -> [String] {
        ["bash", "-c", "echo $$ > \(directory)/cgroup.procs && exec \"$@\"", "piflash-throttled"] + arguments
    }

    deinit {
        _ = try? Shell.run(["rmdir", directory])
    }
}
