import Foundation
import Testing

/// A running `piflash` whose `--json` lines are read as they arrive, so a test can act on an
/// event (pull the card mid-write, send SIGINT) instead of sleeping.
final class PiflashProcess: @unchecked Sendable {
    private let process = Process()
    private let condition = NSCondition()
    private var lines: [String] = []
    private var stderrText = ""
    private var ended = false

    /// Starts `piflash` with `arguments` (optionally wrapped, e.g. into a throttling cgroup).
    init(_ arguments: [String], wrap: (([String]) -> [String])? = nil) throws {
        let command = (wrap ?? { $0 })([Shell.piflash] + arguments)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        Thread {
            var buffer = Data()
            let handle = out.fileHandleForReading
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                buffer.append(chunk)
                while let newline = buffer.firstIndex(of: 0x0A) {
                    let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                    buffer.removeSubrange(buffer.startIndex...newline)
                    self.condition.lock()
                    self.lines.append(line)
                    self.condition.broadcast()
                    self.condition.unlock()
                }
            }
            let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            self.process.waitUntilExit()
            self.condition.lock()
            self.stderrText = errText
            self.ended = true
            self.condition.broadcast()
            self.condition.unlock()
        }.start()
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits (bounded) until a line satisfies `predicate`; returns it, or nil if the process ended first.
    func waitForLine(timeout: TimeInterval = 120, _ predicate: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        var seen = 0
        while true {
            while seen < lines.count {
                if predicate(lines[seen]) { return lines[seen] }
                seen += 1
            }
            if ended || !condition.wait(until: deadline) { return nil }
        }
    }

    /// Waits for the end; returns the exit status, every stdout line and stderr.
    func finish(timeout: TimeInterval = 600) -> (status: Int32, lines: [String], stderr: String) {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        while !ended {
            if !condition.wait(until: deadline) {
                condition.unlock()
                process.terminate()
                return (-1, lines, "timed out")
            }
        }
        let result = (process.terminationStatus, lines, stderrText)
        condition.unlock()
        return result
    }

    /// The final `result` object.
    static func result(_ lines: [String]) -> [String: Any]? {
        for line in lines.reversed() {
            if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
               object["event"] as? String == "result" {
                return object
            }
        }
        return nil
    }
}

/// Runs `piflash` to the end and returns status, the parsed result and stderr.
func runPiflash(_ arguments: [String]) throws -> (status: Int32, result: [String: Any]?, stderr: String, lines: [String]) {
    let process = try PiflashProcess(arguments)
    let (status, lines, stderr) = process.finish()
    return (status, PiflashProcess.result(lines), stderr, lines)
}

/// The first `count` bytes of a device or file.
func readBytes(_ path: String, count: Int, at offset: UInt64 = 0) throws -> [UInt8] {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: offset)
    return Array(try handle.read(upToCount: count) ?? Data())
}

/// Whether the first MiB of a device or file is all zeros (so it holds no partition table).
func headIsZeroed(_ path: String) throws -> Bool {
    try readBytes(path, count: 1 << 20).allSatisfy { $0 == 0 }
}
