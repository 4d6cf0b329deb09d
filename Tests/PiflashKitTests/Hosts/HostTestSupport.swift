import Foundation
import PiflashKit
import Testing

/// The package root (this file is Tests/PiflashKitTests/Hosts/HostTestSupport.swift).
let hostsPackageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<4 { url.deleteLastPathComponent() }
    return url.path
}()

/// Whether PiflashSecrets has its real bodies (the skeleton `fatalError`s until the secrets work
/// is merged). Tests that decrypt or derive public keys are enabled only then, so they run as
/// soon as the lead merges the secrets branch, without crashing the test process before.
let hostsSecretsImplemented: Bool = {
    let folder = hostsPackageRoot + "/Sources/PiflashSecrets"
    let files = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
    for file in files where file.hasSuffix(".swift") {
        if let text = try? String(contentsOfFile: folder + "/" + file, encoding: .utf8),
            text.contains("fatalError(\"SKELETON\")")
        {
            return false
        }
    }
    return !files.isEmpty
}()

/// A fresh temporary folder, removed when the value is released.
final class HostsTempFolder {
    let path: String

    init() throws {
        let candidate = NSTemporaryDirectory() + "piflash-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: candidate, withIntermediateDirectories: true)
        path = candidate
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Writes a file (creating folders) and returns its absolute path.
    @discardableResult
    func write(_ relative: String, _ text: String) throws -> String {
        try write(relative, Array(text.utf8))
    }

    @discardableResult
    func write(_ relative: String, _ bytes: [UInt8]) throws -> String {
        let full = path + "/" + relative
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: full, contents: Data(bytes)) else {
            throw PiflashError.failure("cannot create the fixture \(full)")
        }
        return full
    }
}

/// Runs a program and returns its exit status and stdout.
@discardableResult
func hostsRunTool(_ arguments: [String], input: [UInt8]? = nil) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    let inputPipe = Pipe()
    if input != nil { process.standardInput = inputPipe }
    try process.run()
    if let input {
        inputPipe.fileHandleForWriting.write(Data(input))
        try inputPipe.fileHandleForWriting.close()
    }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Whether a program is on PATH.
func hostsToolExists(_ name: String) -> Bool {
    (try? hostsRunTool(["sh", "-c", "command -v \(name) >/dev/null"]))?.status == 0
}

/// The error `body` throws, which must be a usage error (exit 2); records an issue otherwise.
func hostsUsageError(
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> PiflashError? {
    do {
        try body()
        Issue.record("expected a usage error, nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as PiflashError {
        #expect(error.status == .usage, "exit status of: \(error)", sourceLocation: sourceLocation)
        #expect(error.status.rawValue == 2, sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected a PiflashError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
