import Foundation
import Testing

/// Runs real tools for fixtures and independent checks.
enum Shell {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a program and waits for it. `input` is fed to stdin.
    @discardableResult
    static func run(_ arguments: [String], input: String? = nil, environment: [String: String]? = nil) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try? stdin.fileHandleForWriting.close()
        // Read both pipes concurrently so neither fills up.
        let errData = Locked(Data())
        let errReader = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
        errReader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errData.done { usleep(1000) }
        return Output(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData.value, as: UTF8.self))
    }

    /// Runs a shell command line; throws when it fails.
    @discardableResult
    static func sh(_ command: String) throws -> String {
        let result = try run(["bash", "-c", "set -euo pipefail; " + command])
        guard result.status == 0 else {
            throw FixtureError("`\(command)` failed with \(result.status): \(result.stderr)")
        }
        return result.stdout
    }

    static var isRoot: Bool { getuid() == 0 }

    /// The repository root (Package.swift's folder).
    static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// The `piflash` executable built beside the test bundle.
    static var piflash: String {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = bundle.deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("piflash").path
            if FileManager.default.isExecutableFile(atPath: candidate) && !candidate.hasSuffix(".xctest") { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return packageRoot + "/.build/debug/piflash"
    }

    /// `../shared` beside the repository, where the spec's test data lives.
    static var shared: String { packageRoot + "/../shared" }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    private(set) var done = false
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func set(_ value: Value) {
        lock.withLock {
            stored = value
            done = true
        }
    }
}
