import Foundation

/// Runs a host's `[image] build` command.
public enum ImageBuild {
    /// Runs `command` in `directory` (the host file's folder, so `.#…` flake references and
    /// relative paths mean the same as in the host file). The command's stderr is inherited (the
    /// user sees the build); its stdout is captured, and its last non-empty line is the path of
    /// what it built, resolved against `directory`.
    ///
    /// - Parameters:
    ///   - command: the program (looked up in `PATH`) and its arguments.
    ///   - reporter: told which command runs.
    /// - Returns: the absolute path the build printed last.
    /// - Throws: ``PiflashError`` exit 1 when the command cannot start or exits non-zero (with its
    ///   status), exit 2 when it printed no path.
    public static func run(_ command: [String], in directory: String, reporter: any Reporter) throws -> String {
        precondition(!command.isEmpty, "an empty build command is refused by the host-file parser")
        let shown = command.joined(separator: " ")
        reporter.note("building the image: \(shown)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["--"] + command
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let output = Pipe()
        process.standardOutput = output
        do {
            try process.run()
        } catch {
            throw PiflashError.failure(
                "cannot start the image build `\(shown)`: \(error.localizedDescription)", path: directory)
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let status = process.terminationStatus
        if process.terminationReason == .uncaughtSignal {
            throw PiflashError.failure("the image build `\(shown)` was killed by signal \(status)", path: directory)
        }
        if status == 127 {
            throw PiflashError.failure(
                "the image build `\(shown)` failed: `\(command[0])` was not found (exit status 127)", path: directory,
                hint: "install it or fix [image] build in the host file")
        }
        if status != 0 {
            throw PiflashError.failure(
                "the image build `\(shown)` failed with exit status \(status)", path: directory,
                hint: "its messages are above; fix the build, or flash an existing image with --image PATH")
        }
        let lines = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        guard let last = lines.last else {
            throw PiflashError.usage(
                "the image build `\(shown)` succeeded but printed no path on stdout", path: directory,
                hint: "make the command print the image path last (nix build --print-out-paths does)")
        }
        return absolutePath(last, relativeTo: directory)
    }
}

extension HostFile {
    /// The host file's folder.
    public var folder: String { (filePath as NSString).deletingLastPathComponent }

    /// The image to flash for this host (a file, or a folder the image source resolves): the
    /// output of `[image] build` when given (run now, unless `runBuild` is false), else
    /// `[image] path`.
    ///
    /// - Throws: ``PiflashError`` exit 2 when the host file names no image, exit 1 when the
    ///   build fails.
    public func imagePath(runBuild: Bool = true, reporter: any Reporter = SilentReporter()) throws -> String {
        if runBuild, let build = image.build {
            return try ImageBuild.run(build, in: folder, reporter: reporter)
        }
        if let path = image.path { return path }
        throw PiflashError.usage(
            "\(filePath) names no image: add [image] path or build", path: filePath,
            hint: "or give the image with --image PATH")
    }
}
