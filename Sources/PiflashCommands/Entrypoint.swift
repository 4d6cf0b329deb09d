import ArgumentParser
import Glibc
import PiflashKit

extension Piflash {
    /// Parses and runs a command with piflash's exit statuses: usage errors exit 2 (not
    /// ArgumentParser's 64), a ``PiflashError`` exits with its status after one clear line on stderr.
    /// With no arguments at all it prints the short usage and the known hosts (``Overview``), exit 0.
    public static func runMain(_ arguments: [String]? = nil) async -> Never {
        if (arguments ?? Array(CommandLine.arguments.dropFirst())).isEmpty {
            writeAll(Overview.text(), to: STDOUT_FILENO)
            Glibc.exit(0)
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Glibc.exit(0)
        } catch let error as PiflashError {
            // Ctrl-C at a terminal echoes `^C` without a newline, and a signal may stop a question
            // mid-line: start the message on a line of its own.
            let fresh = Interrupts.signal != nil && isatty(STDERR_FILENO) == 1 ? "\n" : ""
            writeAll(fresh + "piflash: \(error.description)\n", to: STDERR_FILENO)
            Glibc.exit(error.status.rawValue)
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                writeAll(message + "\n", to: STDOUT_FILENO)
                Glibc.exit(0)
            }
            writeAll(message + "\n", to: STDERR_FILENO)
            Glibc.exit(ExitStatus.usage.rawValue)
        }
    }
}
