/// The `KEY=value` file systemd reads with `EnvironmentFile=` (systemd.exec(5)), written so that
/// systemd yields exactly the secret's bytes: the one place that decides which names and values
/// such a file can carry and how a value is quoted.
///
/// The quoting follows systemd's own reader (`parse_env_file_internal` in src/basic/env-file.c,
/// used by `load_env_file` for `EnvironmentFile=`):
/// - an unquoted value loses leading and trailing whitespace, and a backslash escapes the next
///   character; a value starting with `'` or `"` is quoted — so unquoted values cannot carry
///   every passphrase;
/// - inside double quotes every byte is taken literally except `\`: a backslash followed by one of
///   `"` `\` `` ` `` `$` (systemd's `SHELL_NEED_ESCAPE`) yields that character, a backslash before
///   anything else is kept, a backslash before a newline is a line continuation;
/// - `EnvironmentFile=` does not expand `$VAR` or `${VAR}` (only environment.d does);
/// - a value (or key) that is not valid UTF-8 is ignored with an error in the journal.
///
/// So every value is written as `KEY="…"` with a backslash before `"`, `\`, `` ` `` and `$`
/// (escaping `$` also keeps the value literal for readers that do expand), one line per variable.
public enum EnvironmentFile {
    /// Why a name or value cannot be written, with a stable code (for messages and tests).
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        /// `env_name`, `env_nul`, `env_line_break`, `env_utf8`.
        public var code: String
        public var description: String
    }

    /// A variable name systemd accepts (`env_name_is_valid`) and shells can use: a letter or `_`,
    /// then letters, digits and `_`. Nil when valid.
    public static func nameProblem(_ name: String) -> Problem? {
        let bytes = Array(name.utf8)
        let isLetter: (UInt8) -> Bool = { (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) || $0 == 0x5f }
        let isDigit: (UInt8) -> Bool = { (0x30...0x39).contains($0) }
        guard let first = bytes.first, isLetter(first), bytes.allSatisfy({ isLetter($0) || isDigit($0) }) else {
            return Problem(
                code: "env_name",
                description: "`\(name)` is not a valid environment variable name (a letter or `_`, then letters, digits and `_`)")
        }
        return nil
    }

    /// Whether `value` can be carried exactly. Nil when it can.
    ///
    /// Refused: a NUL byte (environment strings end at NUL), a line break (LF or CR: systemd would
    /// carry it inside quotes, but every consumer of these variables — NetworkManager's keyfile,
    /// wpa_supplicant's secrets file — is line-based and would cut the value there), and bytes that
    /// are not UTF-8 (systemd ignores such a variable).
    public static func valueProblem(_ value: [UInt8]) -> Problem? {
        if let index = value.firstIndex(of: 0) {
            return Problem(code: "env_nul", description: "it holds a NUL byte (byte \(index + 1)), which no environment variable can carry")
        }
        if let index = value.firstIndex(where: { $0 == 0x0a || $0 == 0x0d }) {
            return Problem(
                code: "env_line_break",
                description: "it holds a line break (byte \(index + 1)), which the line-based readers of the variable would cut")
        }
        if String(validating: value, as: UTF8.self) == nil {
            return Problem(code: "env_utf8", description: "it is not valid UTF-8 text, and systemd ignores such a variable")
        }
        return nil
    }

    /// `NAME="value"\n` with `"`, `\`, `` ` `` and `$` escaped. The caller has checked
    /// ``nameProblem(_:)`` and ``valueProblem(_:)``.
    public static func line(name: String, value: [UInt8]) -> [UInt8] {
        var line = Array(name.utf8)
        line.reserveCapacity(line.count + value.count + 8)
        line.append(contentsOf: Array("=\"".utf8))
        for byte in value {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "`"), UInt8(ascii: "$"):
                line.append(UInt8(ascii: "\\"))
            default:
                break
            }
            line.append(byte)
        }
        line.append(contentsOf: Array("\"\n".utf8))
        return line
    }
}
