import ArgumentParser
import Glibc
import PiflashKit

/// `--json`: machine-readable output, one JSON object per line on stdout.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print one JSON object per line on stdout: progress events, then a final result object.")
    var json = false

    /// The reporter for this output mode.
    func reporter() -> Reporter {
        json ? JSONLinesReporter() : TerminalReporter()
    }
}

/// Where an image goes: a card or an image file, and how carefully.
struct TargetOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The card to write (e.g. /dev/sdb); it must pass the safety policy.", valueName: "DEV"))
    var device: String?

    @Option(name: .long, help: ArgumentHelp("Write into an image file instead of a card (a file, or a folder for <name>.img).", valueName: "PATH"))
    var output: String?

    @Flag(name: .long, help: "Do not ask for confirmation before overwriting the card.")
    var yes = false

    @Flag(name: .customLong("no-eject"), help: "Leave the card in the reader when done (it is flushed either way).")
    var noEject = false

    @Flag(name: .long, help: "Write and read back every byte of the image, not only the blocks its filesystems use (the default): for a card whose free space must not keep old content.")
    var full = false

    @Option(name: .long, help: ArgumentHelp("Refuse cards larger than this (e.g. 256G, 64GiB).", valueName: "SIZE"))
    var maxSize: String = "256G"

    @Option(name: .long, help: ArgumentHelp(
        "Without --device, wait up to this long for a card to be inserted. Default: on a terminal, until one is inserted (Ctrl-C stops); otherwise (a script, --json) 0, fail at once.",
        valueName: "SECONDS"))
    var wait: Double?

    func validate() throws {
        if device != nil && output != nil {
            throw ValidationError("give either --device or --output, not both")
        }
        _ = try maxSizeBytes()
        if let wait, !(wait >= 0) { throw ValidationError("--wait takes a number of seconds ≥ 0") }
    }

    /// How long to wait for a card when none is there: `--wait` when given; else, for a person
    /// at a terminal (stdin and stderr a TTY, no `--json`), until a card comes or Ctrl-C
    /// (`.infinity`); else 0, so a script gets its answer at once.
    func waitSeconds(json: Bool) -> Double {
        if let wait { return wait }
        return !json && isatty(STDIN_FILENO) == 1 && isatty(STDERR_FILENO) == 1 ? .infinity : 0
    }

    /// `--max-size` in bytes.
    func maxSizeBytes() throws -> UInt64 {
        guard let bytes = parseByteSize(maxSize) else {
            throw ValidationError("--max-size '\(maxSize)' is not a size like 256G, 64GiB or 32000000000")
        }
        return bytes
    }
}

/// Prints a job's result the way the output mode wants it and turns it into the exit status.
func finish(_ result: FlashResult, json: Bool) throws {
    if json {
        writeAll(result.json.serialized() + "\n", to: 1)
    } else {
        writeAll(result.summary + "\n", to: 1)
        if let line = result.knownHostsLine, result.ok {
            writeAll("\nknown_hosts line (pin it before first boot):\n\(line)\n", to: 1)
        }
    }
    if !result.ok { throw ExitCode(result.exitCode) }
}

/// Reports an error that stopped a command before (or instead of) a job: as a `result` object
/// with `--json`, else on stderr; then exits with its status.
func failEarly(_ error: PiflashError, json: Bool, host: String? = nil, image: String? = nil, device: String? = nil, output: String? = nil) throws -> Never {
    if json {
        var result = FlashResult()
        result.host = host
        result.image = image
        result.device = device
        result.output = output
        result.fail(error)
        writeAll(result.json.serialized() + "\n", to: 1)
        throw ExitCode(error.status.rawValue)
    }
    throw error
}
