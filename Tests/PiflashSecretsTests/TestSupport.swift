import Foundation
import Testing

/// Paths and tools the secrets tests share.
enum TestSupport {
    /// The package root (three levels above this file).
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `../shared/vectors` next to the package, or nil when absent (the tests then skip).
    static var vectorsRoot: URL? {
        let url = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/vectors")
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }

    static func vector(_ relative: String) -> URL? {
        vectorsRoot?.appendingPathComponent(relative)
    }

    /// Runs a tool; returns its exit status and stdout.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], stdin: Data? = nil) throws -> (status: Int32, stdout: Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        let input = Pipe()
        if stdin != nil { process.standardInput = input }
        try process.run()
        // Feed stdin from another thread while this one drains stdout, so neither pipe fills up.
        let writer = input.fileHandleForWriting
        let feeder = stdin.map { bytes in
            Thread {
                writer.write(bytes)
                try? writer.close()
            }
        }
        feeder?.start()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, data)
    }

    /// The first executable named `name` on PATH.
    static func which(_ name: String) -> String? {
        for folder in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(folder)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// A fresh temporary folder, removed by the caller.
    static func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("piflash-secrets-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// zlib-decompresses with python3 (the test target does not link zlib).
    static func inflate(_ data: Data) throws -> Data {
        guard let python = which("python3") else { throw SkipError(reason: "python3 is not installed") }
        let result = try run(
            python, ["-c", "import sys,zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read()))"], stdin: data)
        guard result.status == 0 else { throw SkipError(reason: "python3 zlib failed") }
        return result.stdout
    }

    struct SkipError: Error { var reason: String }
}
