import Foundation
import TOMLKit

// Parsing and validating host files (`hosts/NAME.toml`, piflash-hosts(5)).
//
// Every key is checked against the keys this version knows: an unknown key is a usage error
// naming the key, the table and the file (a typo must never silently drop a file). Paths are
// resolved against the host file's folder.
//
// Choices documented here and in piflash-hosts(5):
// - `mode` is an octal string (`"0600"`, `"600"`), at most `07777`. When omitted it defaults to
//   `"0644"` for `public_key_of` files and `"0600"` for `secret`, `template` and `env` files
//   (which hold secrets). A TOML integer is refused: `mode = 600` would silently mean 0o1130.
// - `uid` and `gid` default to 0.
// - `[image]` may be absent (then `--image` must be given); `[secrets]` may be absent only when
//   no file needs a secret.
// - In a `template`, `${name}` is replaced by the secret `name` (a key path `a.b.c`) inserted
//   literally; `$${` writes a literal `${`.
// - `env = { NAME = "secret", … }` writes one `NAME="value"` line per variable, in name order,
//   quoted for systemd's EnvironmentFile= (EnvironmentFile.swift). Names are checked here;
//   values once the secrets are loaded (HostRendering.swift), before any card.

extension HostFile {
    /// The keys host files may use, by table, for validation and "did you mean" suggestions.
    static let knownKeys: [String: [String]] = [
        "": ["hostname", "image", "root", "secrets", "files", "check"],
        "[image]": ["path", "build", "sha256"],
        "[root]": ["label", "partition"],
        "[secrets]": ["sops", "age", "dir"],
        "[[files]]": ["path", "secret", "public_key_of", "template", "env", "mode", "uid", "gid"],
        "[check]": ["address", "ssh_port", "tcp", "http"],
        "[[check.tcp]]": ["port"],
        "[[check.http]]": ["url"],
    ]

    /// Reads and validates the host file at `path`.
    ///
    /// - Throws: ``PiflashError`` with exit status 2 when the file cannot be read, is not valid
    ///   TOML (with line and column), has an unknown key, or breaks a rule of piflash-hosts(5).
    public static func load(path: String) throws -> HostFile {
        let absolute = absolutePath(path, relativeTo: FileManager.default.currentDirectoryPath)
        guard let data = FileManager.default.contents(atPath: absolute) else {
            throw PiflashError.usage("cannot read the host file \(absolute)", path: absolute)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw PiflashError.usage("the host file \(absolute) is not UTF-8 text", path: absolute)
        }
        return try parse(text, path: absolute)
    }

    /// Parses and validates host-file text as if it were the file at `path` (an absolute path:
    /// relative paths inside are resolved against its folder, and its name is the default host
    /// name).
    ///
    /// - Throws: ``PiflashError`` with exit status 2 naming the file, table and key at fault.
    public static func parse(_ text: String, path: String) throws -> HostFile {
        var reader = HostFileReader(path: absolutePath(path, relativeTo: FileManager.default.currentDirectoryPath))
        return try reader.read(text)
    }
}

/// Walks a parsed TOML document, checking every key and type, and builds a ``HostFile``.
struct HostFileReader {
    let path: String
    let folder: String
    var warnings: [String] = []

    init(path: String) {
        self.path = path
        self.folder = (path as NSString).deletingLastPathComponent
    }

    func fail(_ message: String, hint: String? = nil) -> PiflashError {
        PiflashError.usage("\(path): \(message)", path: path, hint: hint)
    }

    mutating func read(_ text: String) throws -> HostFile {
        let document: TOMLTable
        do {
            document = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let begin = error.source.begin
            throw PiflashError.usage(
                "\(path):\(begin.line):\(begin.column): malformed TOML: \(error.description)", path: path,
                hint: "fix the host file at line \(begin.line), column \(begin.column)")
        }
        try checkKeys(document, table: "")

        let catalogName = HostFile.catalogName(ofPath: path)
        var name = catalogName
        if let value = document["hostname"] {
            name = try string(value, key: "hostname", table: "")
            try validateHostname(name)
        } else {
            try validateHostname(name, fromFileName: true)
        }

        let image = try readImage(document["image"])
        let root = try readRoot(document["root"])
        let secrets = try readSecrets(document["secrets"])
        let files = try readFiles(document["files"], secrets: secrets)
        let check = try readCheck(document["check"])

        var host = HostFile(
            name: name, filePath: path, image: image, root: root, secrets: secrets, files: files, check: check)
        host.catalogName = catalogName
        host.warnings = warnings
        return host
    }

    // MARK: Keys and types

    func checkKeys(_ table: TOMLTable, table name: String, entry: Int? = nil) throws {
        let known = HostFile.knownKeys[name] ?? []
        for key in table.keys where !known.contains(key) {
            let place = name.isEmpty ? "at the top level" : "in \(name)" + (entry.map { " entry #\($0)" } ?? "")
            var message = "unknown key `\(key)` \(place)"
            if let suggestion = closestKey(to: key, among: known) {
                message += " (did you mean `\(suggestion)`?)"
            }
            throw fail(message, hint: "the keys allowed \(place) are: " + known.joined(separator: ", "))
        }
    }

    func table(_ value: TOMLValueConvertible, name: String) throws -> TOMLTable {
        guard let table = value.table else {
            throw fail("`\(name)` must be a table (\(name.hasPrefix("[[") ? name : "[\(name)]")), not a \(value.type)")
        }
        return table
    }

    func string(_ value: TOMLValueConvertible, key: String, table: String) throws -> String {
        guard let string = value.string else {
            throw fail("`\(key)`\(where_(table)) must be a string, not a \(value.type)")
        }
        return string
    }

    func integer(_ value: TOMLValueConvertible, key: String, table: String, range: ClosedRange<Int>) throws -> Int {
        guard let int = value.int else {
            throw fail("`\(key)`\(where_(table)) must be an integer, not a \(value.type)")
        }
        guard range.contains(int) else {
            throw fail("`\(key)`\(where_(table)) is \(int), outside \(range.lowerBound)…\(range.upperBound)")
        }
        return int
    }

    func where_(_ table: String) -> String { table.isEmpty ? "" : " in \(table)" }

    func validateHostname(_ name: String, fromFileName: Bool = false) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        if name.isEmpty || name.count > 253 || !name.allSatisfy({ allowed.contains($0) }) || name.hasPrefix("-") {
            let what = fromFileName ? "the file name `\(name)` (used as the host name)" : "`hostname = \"\(name)\"`"
            throw fail(
                "\(what) is not a valid host name",
                hint: "use letters, digits, `-`, `_` and `.`" + (fromFileName ? ", or set hostname = \"…\"" : ""))
        }
    }

    func resolve(_ relative: String) -> String {
        absolutePath(relative, relativeTo: folder)
    }

    // MARK: Sections

    func readImage(_ value: TOMLValueConvertible?) throws -> HostFile.ImageSection {
        guard let value else { return HostFile.ImageSection(path: nil, build: nil, sha256: nil) }
        let image = try table(value, name: "image")
        try checkKeys(image, table: "[image]")
        var path: String?
        if let value = image["path"] {
            let text = try string(value, key: "path", table: "[image]")
            guard !text.isEmpty else { throw fail("`path` in [image] is empty") }
            path = resolve(text)
        }
        var build: [String]?
        if let value = image["build"] {
            guard let array = value.array else {
                throw fail(
                    "`build` in [image] must be an array of strings (the command and its arguments), not a \(value.type)",
                    hint: "e.g. build = [\"nix\", \"build\", \"--no-link\", \"--print-out-paths\", \".#…\"]")
            }
            build = try array.map { try string($0, key: "build", table: "[image]") }
            if build!.isEmpty || build![0].isEmpty { throw fail("`build` in [image] is an empty command") }
        }
        var sha256: String?
        if let value = image["sha256"] {
            let text = try string(value, key: "sha256", table: "[image]").lowercased()
            guard text.count == 64, text.allSatisfy({ $0.isHexDigit }) else {
                throw fail("`sha256` in [image] must be 64 hex digits (the SHA-256 of the uncompressed image)")
            }
            sha256 = text
        }
        return HostFile.ImageSection(path: path, build: build, sha256: sha256)
    }

    func readRoot(_ value: TOMLValueConvertible?) throws -> RootSelector {
        guard let value else { return .label("NIXOS_SD") }
        let root = try table(value, name: "root")
        try checkKeys(root, table: "[root]")
        switch (root["label"], root["partition"]) {
        case (.some, .some):
            throw fail("[root] has both `label` and `partition`: give one")
        case (let label?, nil):
            let text = try string(label, key: "label", table: "[root]")
            guard !text.isEmpty else { throw fail("`label` in [root] is empty") }
            return .label(text)
        case (nil, let partition?):
            return .number(try integer(partition, key: "partition", table: "[root]", range: 1...128))
        case (nil, nil):
            return .label("NIXOS_SD")
        }
    }

    func readSecrets(_ value: TOMLValueConvertible?) throws -> HostFile.SecretsSection? {
        guard let value else { return nil }
        let secrets = try table(value, name: "secrets")
        try checkKeys(secrets, table: "[secrets]")
        let given = ["sops", "age", "dir"].filter { secrets[$0] != nil }
        guard given.count == 1, let kind = given.first else {
            if given.isEmpty { throw fail("[secrets] needs one of `sops`, `age` or `dir`") }
            throw fail(
                "[secrets] has \(given.map { "`\($0)`" }.joined(separator: " and ")): give exactly one source")
        }
        let text = try string(secrets[kind]!, key: kind, table: "[secrets]")
        guard !text.isEmpty else { throw fail("`\(kind)` in [secrets] is empty") }
        let resolved = resolve(text)
        switch kind {
        case "sops": return .sops(resolved)
        case "age": return .age(resolved)
        default: return .dir(resolved)
        }
    }

    mutating func readFiles(
        _ value: TOMLValueConvertible?, secrets: HostFile.SecretsSection?
    ) throws -> [HostFile.FileEntry] {
        guard let value else { return [] }
        guard let array = value.array else {
            throw fail("`files` must be an array of tables ([[files]]), not a \(value.type)")
        }
        var entries: [HostFile.FileEntry] = []
        var seen: [String: Int] = [:]
        for (index, element) in array.enumerated() {
            let number = index + 1
            let place = "[[files]] entry #\(number)"
            guard let file = element.table else { throw fail("\(place) must be a table, not a \(element.type)") }
            try checkKeys(file, table: "[[files]]", entry: number)
            guard let pathValue = file["path"] else { throw fail("\(place) has no `path`") }
            let path = try string(pathValue, key: "path", table: place)
            try validateInjectedPath(path, place: place)
            if let earlier = seen[path] {
                throw fail("\(place) writes \(path) again (entry #\(earlier) already does)")
            }
            seen[path] = number

            let source = try readFileSource(file, place: place, path: path)
            if secrets == nil && !source.secretNames.isEmpty {
                throw fail(
                    "\(place) (\(path)) needs the secret `\(source.secretNames[0])` but the host file has no [secrets] section")
            }

            var mode: UInt16
            if let value = file["mode"] {
                guard let text = value.string else {
                    throw fail(
                        "`mode` in \(place) must be an octal string like \"0600\", not a \(value.type)",
                        hint: "quote it: mode = \"0600\"")
                }
                guard let parsed = parseMode(text) else {
                    throw fail("`mode = \"\(text)\"` in \(place) is not an octal mode between 0000 and 7777")
                }
                mode = parsed
            } else {
                if case .publicKeyOf = source { mode = 0o644 } else { mode = 0o600 }
            }
            let uid = try file["uid"].map { UInt32(try integer($0, key: "uid", table: place, range: 0...4_294_967_294)) } ?? 0
            let gid = try file["gid"].map { UInt32(try integer($0, key: "gid", table: place, range: 0...4_294_967_294)) } ?? 0
            if mode & 0o077 != 0, source.holdsSecret {
                warnings.append(
                    "\(self.path): \(path) holds a secret but mode \(InjectedFile.modeString(mode)) lets group or others read it")
            }
            entries.append(HostFile.FileEntry(path: path, source: source, mode: mode, uid: uid, gid: gid))
        }
        return entries
    }

    /// What a `[[files]]` entry writes: exactly one of `secret`, `public_key_of`, `template`, `env`.
    func readFileSource(_ file: TOMLTable, place: String, path: String) throws -> HostFile.FileEntry.Source {
        let sources = ["secret", "public_key_of", "template", "env"].filter { file[$0] != nil }
        guard sources.count == 1, let kind = sources.first else {
            if sources.isEmpty {
                throw fail("\(place) (\(path)) needs one of `secret`, `public_key_of`, `template` or `env`")
            }
            throw fail(
                "\(place) (\(path)) has \(sources.map { "`\($0)`" }.joined(separator: " and ")): give exactly one")
        }
        if kind == "env" { return try readEnvironment(file["env"]!, place: place, path: path) }
        let text = try string(file[kind]!, key: kind, table: place)
        switch kind {
        case "secret":
            guard !text.isEmpty else { throw fail("`secret` in \(place) is empty") }
            return .secret(text)
        case "public_key_of":
            guard !text.isEmpty else { throw fail("`public_key_of` in \(place) is empty") }
            return .publicKeyOf(text)
        default:
            do {
                _ = try Template(text)
            } catch let error as TemplateSyntaxError {
                throw fail("the template in \(place) (\(path)) \(error.message)", hint: "write `$${` for a literal `${`")
            }
            return .template(text)
        }
    }

    /// `env = { NAME = "secret", … }`: a non-empty table of variable names to secret names.
    func readEnvironment(_ value: TOMLValueConvertible, place: String, path: String) throws -> HostFile.FileEntry.Source {
        let example = "env = { WIFI_SSID = \"wifi_ssid\", WIFI_PSK = \"wifi_psk\" }"
        guard let table = value.table else {
            throw fail("`env` in \(place) (\(path)) must be a table of variable = secret name, not a \(value.type)", hint: "e.g. " + example)
        }
        guard !table.keys.isEmpty else {
            throw fail("`env` in \(place) (\(path)) is empty: name at least one variable", hint: "e.g. " + example)
        }
        var variables: [HostFile.FileEntry.EnvironmentVariable] = []
        for name in table.keys.sorted() {
            if let problem = EnvironmentFile.nameProblem(name) {
                throw fail("`env` in \(place) (\(path)): \(problem.description) [rule \(problem.code)]", hint: "e.g. " + example)
            }
            guard let secretName = table[name]?.string else {
                throw fail("`\(name)` in the `env` of \(place) (\(path)) must be a string (a secret name), not a \(table[name]!.type)")
            }
            guard !secretName.isEmpty else { throw fail("`\(name)` in the `env` of \(place) (\(path)) names no secret") }
            variables.append(HostFile.FileEntry.EnvironmentVariable(name: name, secret: secretName))
        }
        return .environment(variables)
    }

    /// Absolute, canonical (no `.`, `..` or empty components), not under /nix/store; a warning
    /// for /etc. Symlinked parents are checked on the card itself.
    mutating func validateInjectedPath(_ path: String, place: String) throws {
        guard path.hasPrefix("/") else {
            throw fail("`path = \"\(path)\"` in \(place) is relative: files are placed by absolute path in the image",
                hint: "e.g. path = \"/var/lib/bootstrap/ssh_host_ed25519_key\"")
        }
        let components = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if components.contains("..") {
            throw fail("`path = \"\(path)\"` in \(place) contains `..`: give the real path")
        }
        if path == "/" || path.hasSuffix("/") {
            throw fail("`path = \"\(path)\"` in \(place) names a directory, not a file")
        }
        if components.contains(".") || components.contains("") {
            throw fail("`path = \"\(path)\"` in \(place) is not canonical (`.` or `//`): write it plainly")
        }
        if path.utf8.contains(0) { throw fail("`path` in \(place) contains a NUL byte") }
        if path == "/nix/store" || path.hasPrefix("/nix/store/") || path == "/nix" {
            throw fail(
                "`path = \"\(path)\"` in \(place) is under /nix/store, which is immutable and checked by Nix",
                hint: "put bootstrap files under /var/lib")
        }
        if path.hasPrefix("/etc/") {
            warnings.append(
                "\(self.path): \(path) is under /etc, which NixOS regenerates on activation; "
                    + "the file may vanish at first boot — put bootstrap state under /var/lib")
        }
    }

    func readCheck(_ value: TOMLValueConvertible?) throws -> HostFile.CheckSection? {
        guard let value else { return nil }
        let check = try table(value, name: "check")
        try checkKeys(check, table: "[check]")
        var section = HostFile.CheckSection()
        if let value = check["address"] {
            section.address = try string(value, key: "address", table: "[check]")
            if section.address!.isEmpty { throw fail("`address` in [check] is empty") }
        }
        if let value = check["ssh_port"] {
            section.sshPort = try integer(value, key: "ssh_port", table: "[check]", range: 1...65535)
        }
        if let value = check["tcp"] {
            guard let array = value.array else {
                throw fail("`tcp` in [check] must be an array of tables ([[check.tcp]] with `port`), not a \(value.type)")
            }
            for (index, element) in array.enumerated() {
                let place = "[[check.tcp]] entry #\(index + 1)"
                guard let entry = element.table else { throw fail("\(place) must be a table with `port`") }
                try checkKeys(entry, table: "[[check.tcp]]", entry: index + 1)
                guard let port = entry["port"] else { throw fail("\(place) has no `port`") }
                section.tcp.append(try integer(port, key: "port", table: place, range: 1...65535))
            }
        }
        if let value = check["http"] {
            guard let array = value.array else {
                throw fail("`http` in [check] must be an array of tables ([[check.http]] with `url`), not a \(value.type)")
            }
            for (index, element) in array.enumerated() {
                let place = "[[check.http]] entry #\(index + 1)"
                guard let entry = element.table else { throw fail("\(place) must be a table with `url`") }
                try checkKeys(entry, table: "[[check.http]]", entry: index + 1)
                guard let url = entry["url"] else { throw fail("\(place) has no `url`") }
                let text = try string(url, key: "url", table: place)
                guard text.hasPrefix("http://") || text.hasPrefix("https://") else {
                    throw fail("`url = \"\(text)\"` in \(place) must start with http:// or https://")
                }
                section.http.append(text)
            }
        }
        return section
    }
}

extension HostFile.FileEntry.Source {
    /// The secrets this source reads (key paths), in order of appearance.
    public var secretNames: [String] {
        switch self {
        case .secret(let name), .publicKeyOf(let name): return [name]
        case .template(let text): return (try? Template(text))?.secretNames ?? []
        case .environment(let variables):
            var names: [String] = []
            for variable in variables where !names.contains(variable.secret) { names.append(variable.secret) }
            return names
        }
    }

    /// Whether the rendered content is secret (everything but a derived public key).
    public var holdsSecret: Bool {
        switch self {
        case .publicKeyOf: return false
        case .secret, .environment: return true
        case .template(let text): return !((try? Template(text))?.secretNames.isEmpty ?? true)
        }
    }
}

extension HostFile {
    /// The host file's name without `.toml`: what `piflash HOST`, the station queue and the
    /// journal call the host.
    static func catalogName(ofPath path: String) -> String {
        let file = (path as NSString).lastPathComponent
        return file.hasSuffix(".toml") ? String(file.dropLast(5)) : file
    }
}

/// An octal mode string (`"0600"`, `"600"`, `"0o600"`) up to `07777`, or nil.
func parseMode(_ text: String) -> UInt16? {
    var digits = Substring(text)
    if digits.hasPrefix("0o") { digits = digits.dropFirst(2) }
    guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ ("0"..."7").contains($0) }),
        let value = UInt16(digits, radix: 8), value <= 0o7777
    else { return nil }
    return value
}

/// `path` made absolute against `base` (unless already absolute) and standardized
/// (`.`/`..` removed lexically, `~` expanded).
func absolutePath(_ path: String, relativeTo base: String) -> String {
    var path = path
    if path == "~" || path.hasPrefix("~/") { path = NSHomeDirectory() + path.dropFirst() }
    let joined = path.hasPrefix("/") ? path : (base.hasSuffix("/") ? base : base + "/") + path
    var parts: [Substring] = []
    for component in joined.split(separator: "/") {
        if component == "." { continue }
        if component == ".." {
            if !parts.isEmpty { parts.removeLast() }
            continue
        }
        parts.append(component)
    }
    return "/" + parts.joined(separator: "/")
}

/// The nearest of `candidates` to `key` by edit distance, when close enough to be a typo.
func closestKey(to key: String, among candidates: [String]) -> String? {
    let scored = candidates.map { ($0, editDistance(key.lowercased(), $0)) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    let limit = max(1, min(3, key.count / 3))
    return best.1 <= limit ? best.0 : nil
}

/// Levenshtein distance between two strings.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = Array(repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
