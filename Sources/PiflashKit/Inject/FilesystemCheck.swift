#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A read-only `e2fsck -fn` of an ext2/3/4 filesystem at a byte offset inside a device or image file
/// (`e2fsck -fn 'PATH?offset=N'`): forced full check, answering "no" to every repair.
public struct FilesystemCheck: Sendable {
    /// e2fsck's exit status: 0 clean; 4 errors left uncorrected (with -n: any problem); 8 operational
    /// error (it could not check).
    public var exitStatus: Int32
    /// What it printed (stdout and stderr).
    public var output: String
    /// The device or image file checked.
    public var path: String
    public var offset: UInt64

    /// Whether e2fsck found nothing to repair.
    public var isClean: Bool { exitStatus == 0 }

    /// Runs `e2fsck -fn 'PATH?offset=N'` and waits for it.
    ///
    /// - Throws: ``PiflashError`` exit 1 when e2fsck is not installed or cannot be started.
    public static func run(path: String, offset: UInt64) throws -> FilesystemCheck {
        guard let e2fsck = locateE2fsck() else {
            throw PiflashError.failure(
                "e2fsck not found (looked in PATH, /usr/sbin and /sbin)", hint: "install e2fsprogs")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: e2fsck)
        process.arguments = ["-fn", "\(path)?offset=\(offset)"]
        var environment = ProcessInfo.processInfo.environment
        environment["LC_ALL"] = "C"
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw PiflashError.failure("cannot run \(e2fsck): \(error)", path: path)
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return FilesystemCheck(
            exitStatus: process.terminationStatus, output: String(decoding: data, as: UTF8.self), path: path,
            offset: offset)
    }

    /// The lines that say something: e2fsck's findings without its banner and pass headings.
    public var findings: [String] {
        output.split(separator: "\n").map(String.init).filter { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            return !trimmed.isEmpty && !line.hasPrefix("Pass ") && !line.hasPrefix("e2fsck ") && trimmed != "Fix? no"
                && trimmed != "Ignore error? no"
        }
    }

    /// Throws unless the check was clean: exit 4 when e2fsck found problems, exit 1 when it could not
    /// check at all.
    public func requireClean() throws {
        guard !isClean else { return }
        let summary = findings.suffix(12).joined(separator: " | ")
        if exitStatus & 8 != 0 || exitStatus & 16 != 0 {
            throw PiflashError.failure(
                "e2fsck could not check the root filesystem at byte \(offset) (exit \(exitStatus)): \(summary)", path: path,
                offset: offset)
        }
        throw PiflashError.verification(
            "the root filesystem at byte \(offset) is not clean after injection (e2fsck -fn exit \(exitStatus)): \(summary)",
            path: path, offset: offset)
    }

    private static func locateE2fsck() -> String? {
        let searchPath = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for directory in searchPath + ["/usr/sbin", "/sbin"] where !directory.isEmpty {
            let candidate = directory + "/e2fsck"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}
