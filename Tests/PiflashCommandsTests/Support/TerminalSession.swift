import Foundation
import Testing

/// `piflash` on a real pseudo-terminal, as a person runs it: python3's `pty.fork()` makes the
/// pty the program's stdin, stdout, stderr and controlling terminal (so `/dev/tty` opens, and
/// Ctrl-C typed on it sends SIGINT through the kernel's line discipline). The test reads what
/// appears on the screen and types on the keyboard.
final class TerminalSession: @unchecked Sendable {
    /// Relays the test's pipe to the pty master and the master to stdout; prints the child's exit
    /// status on stderr at the end. The window is 120×40.
    static let driver = """
        import os, pty, select, struct, sys, fcntl, termios
        pid, master = pty.fork()
        if pid == 0:
            os.execvp(sys.argv[1], sys.argv[1:])
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 120, 0, 0))
        keyboard = True
        while True:
            ready, _, _ = select.select([master] + ([0] if keyboard else []), [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b''
                if not data:
                    break
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    keyboard = False
        _, status = os.waitpid(pid, 0)
        sys.stderr.write('PTY-EXIT %d\\n' % os.waitstatus_to_exitcode(status))
        """

    private let process = Process()
    private let keyboard = Pipe()
    private let condition = NSCondition()
    private var output = Data()
    private var status: Int32?
    private var ended = false

    /// Starts `piflash arguments` on a new pseudo-terminal.
    /// - Parameter directory: the working directory (default: the test's).
    init(_ arguments: [String], directory: String? = nil, environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", Self.driver, Shell.piflash] + arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.environment = ProcessInfo.processInfo.environment.merging(["TERM": "xterm"].merging(environment) { $1 }) { $1 }
        let screen = Pipe()
        let trailer = Pipe()
        process.standardInput = keyboard
        process.standardOutput = screen
        process.standardError = trailer
        try process.run()
        Thread {
            let handle = screen.fileHandleForReading
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                self.condition.lock()
                self.output.append(chunk)
                self.condition.broadcast()
                self.condition.unlock()
            }
            let tail = String(decoding: trailer.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            self.process.waitUntilExit()
            let code = tail.components(separatedBy: "PTY-EXIT ").last.flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            self.condition.lock()
            self.status = code
            self.ended = true
            self.condition.broadcast()
            self.condition.unlock()
        }.start()
    }

    /// Everything written to the terminal so far, with `\r` removed.
    var screen: String {
        condition.lock()
        defer { condition.unlock() }
        return String(decoding: output, as: UTF8.self).replacingOccurrences(of: "\r", with: "")
    }

    /// Waits (bounded) until `text` is on the screen; false when the program ended or time ran out first.
    @discardableResult
    func waitFor(_ text: String, timeout: TimeInterval = 120) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if String(decoding: output, as: UTF8.self).contains(text) { return true }
            if ended || !condition.wait(until: deadline) { return false }
        }
    }

    /// Types on the keyboard (`"\u{03}"` is Ctrl-C).
    func type(_ text: String) {
        keyboard.fileHandleForWriting.write(Data(text.utf8))
    }

    /// Waits for the program to end and returns its exit status (nil: killed after `timeout`).
    func finish(timeout: TimeInterval = 300) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        while !ended {
            if !condition.wait(until: deadline) {
                condition.unlock()
                process.terminate()
                return nil
            }
        }
        let result = status
        condition.unlock()
        return result
    }

    deinit {
        if process.isRunning { process.terminate() }
    }
}

/// How often `text` occurs in `screen`.
func occurrences(of text: String, in screen: String) -> Int {
    screen.components(separatedBy: text).count - 1
}
