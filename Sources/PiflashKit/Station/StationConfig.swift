import Foundation
import Glibc
import TOMLKit

/// One reader slot of the station file (`[[slot]]`): which udev device it is, and which host its
/// cards get.
public struct SlotConfig: Sendable, Equatable {
    /// The slot's name (`A`), shown in the state lines, the events and the journal.
    public var name: String
    /// udev properties the reader's disk must all have (`PIFLASH_SLOT = "A"`, `ID_PATH = "…"`).
    /// Values are fnmatch(3) patterns (`usb-0:1*`); a plain value matches itself only.
    public var match: [String: String]
    /// A fixed host for every card of this slot; nil to take the next host of the queue.
    public var host: String?
    /// Overrides the station's `reflash` for this slot.
    public var reflash: Bool?

    public init(name: String, match: [String: String], host: String? = nil, reflash: Bool? = nil) {
        self.name = name
        self.match = match
        self.host = host
        self.reflash = reflash
    }

    /// Whether a disk with these udev properties is this slot's reader.
    public func matches(_ properties: [String: String]) -> Bool {
        match.allSatisfy { key, pattern in
            guard let value = properties[key] else { return false }
            return fnmatch(pattern, value, 0) == 0
        }
    }
}

/// The station file (piflash-station(8)): TOML, every key checked, relative paths resolved
/// against the file's folder.
///
/// ```toml
/// hosts = "/srv/pis/hosts"
/// journal = "/var/lib/piflash/journal.sqlite"
/// queue = ["pi-01", "pi-02"]
/// [[slot]]
/// name = "A"
/// match = { PIFLASH_SLOT = "A" }
/// host = "bastet"
/// ```
public struct StationConfig: Sendable, Equatable {
    /// The station file, absolute.
    public var path: String
    /// The hosts folder (`hosts`); nil to look it up as `piflash flash` does.
    public var hosts: String?
    /// The journal (`journal`): an SQLite file, or a `postgresql://USER@HOST[:PORT]/DB` URL shared
    /// by several stations; nil for the default of ``Journal/defaultPath(explicit:environment:isRoot:)``.
    public var journal: String?
    /// The station's name in the journal's `stations` table and in its claims (`name`); nil for the
    /// machine's name. Stations sharing a journal need different names.
    public var name: String?
    /// Seconds without a heartbeat after which a station's claims return to the queue
    /// (`heartbeat_timeout`, default 60); the station heart-beats four times per timeout.
    public var heartbeatTimeout: Double
    /// Hosts handed out in order to slots without a fixed host (`queue`).
    public var queue: [String]
    /// Where the station publishes its state (`state_file`); nil for ``StationConfig/defaultStateFile``.
    public var stateFile: String?
    /// Flash a card again although the journal shows it was just provisioned (`reflash`, default false).
    public var reflash: Bool
    /// Refuse disks larger than this (`max_size`, default 256 GiB).
    public var maxSize: UInt64
    /// An age identity file for the hosts' secrets (`age_identity`); else the usual sources.
    public var ageIdentity: String?
    /// Eject a card after it was verified (`eject`, default true).
    public var eject: Bool
    /// Write and verify every byte of the image, not only what its filesystems use (`full`,
    /// default false): for cards whose free space must not keep old content.
    public var full = false
    /// Run the host files' `[image] build` commands before flashing (`build`, default false: the
    /// station flashes the images as they are).
    public var build: Bool
    /// The slots, in file order (`[[slot]]`).
    public var slots: [SlotConfig]
    /// The read-only web page and JSON API (`[web]`); nil when the station serves none.
    public var web: WebConfig?

    public init(path: String, hosts: String? = nil, journal: String? = nil, queue: [String] = [], stateFile: String? = nil,
                reflash: Bool = false, maxSize: UInt64 = 256 << 30, ageIdentity: String? = nil, eject: Bool = true,
                build: Bool = false, name: String? = nil, heartbeatTimeout: Double = 60, slots: [SlotConfig],
                web: WebConfig? = nil) {
        self.path = path
        self.name = name
        self.heartbeatTimeout = heartbeatTimeout
        self.hosts = hosts
        self.journal = journal
        self.queue = queue
        self.stateFile = stateFile
        self.reflash = reflash
        self.maxSize = maxSize
        self.ageIdentity = ageIdentity
        self.eject = eject
        self.build = build
        self.slots = slots
        self.web = web
    }

    static let topKeys = ["hosts", "journal", "queue", "state_file", "reflash", "max_size", "age_identity", "eject", "full",
                          "build", "name", "heartbeat_timeout", "slot", "web"]
    static let slotKeys = ["name", "match", "host", "reflash"]
    static let webKeys = ["listen", "token_file"]

    /// The state file when the station file names none: `/run/piflash/station.json` for root,
    /// else `$XDG_RUNTIME_DIR/piflash/station.json`, else `station.json` beside the journal.
    public func defaultStateFile(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let stateFile { return stateFile }
        if geteuid() == 0 { return "/run/piflash/station.json" }
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") { return runtime + "/piflash/station.json" }
        let journalFile = journal.flatMap { Journal.isDatabaseURL($0) ? nil : $0 }
        return ((Journal.defaultPath(explicit: journalFile, environment: environment) as NSString).deletingLastPathComponent)
            + "/station.json"
    }

    /// The slot whose `match` these udev properties satisfy (the first one in file order), or nil.
    public func slot(for properties: [String: String]) -> SlotConfig? {
        slots.first { $0.matches(properties) }
    }

    /// Whether this slot flashes a card again although the journal shows it was just provisioned.
    public func reflash(_ slot: SlotConfig) -> Bool { slot.reflash ?? reflash }

    /// Reads and validates the station file.
    /// - Throws: ``PiflashError`` (exit 2) when it cannot be read, is not TOML, has an unknown key
    ///   or breaks a rule of piflash-station(8).
    public static func load(path: String) throws -> StationConfig {
        let absolute = absolutePath(path, relativeTo: FileManager.default.currentDirectoryPath)
        guard let data = FileManager.default.contents(atPath: absolute), let text = String(data: data, encoding: .utf8) else {
            throw PiflashError.usage("cannot read the station file \(absolute)", path: absolute,
                                     hint: "give the station file with --config FILE (see piflash-station(8))")
        }
        return try parse(text, path: absolute)
    }

    /// Parses station-file text as if it were the file at `path` (absolute).
    /// - Throws: ``PiflashError`` (exit 2) naming the file, the key and what is wrong.
    public static func parse(_ text: String, path: String) throws -> StationConfig {
        let folder = (path as NSString).deletingLastPathComponent
        func fail(_ message: String, hint: String? = nil) -> PiflashError {
            PiflashError.usage("\(path): \(message)", path: path, hint: hint)
        }
        func checkKeys(_ table: TOMLTable, known: [String], place: String) throws {
            for key in table.keys.sorted() where !known.contains(key) {
                var message = "unknown key `\(key)` \(place)"
                if let near = closestKey(to: key, among: known) { message += " (did you mean `\(near)`?)" }
                throw fail(message, hint: "the keys allowed \(place) are: " + known.joined(separator: ", "))
            }
        }
        func string(_ value: TOMLValueConvertible, _ key: String) throws -> String {
            guard let text = value.string else { throw fail("`\(key)` must be a string, not a \(value.type)") }
            guard !text.isEmpty else { throw fail("`\(key)` is empty") }
            return text
        }
        func bool(_ value: TOMLValueConvertible, _ key: String) throws -> Bool {
            guard let flag = value.bool else { throw fail("`\(key)` must be true or false, not a \(value.type)") }
            return flag
        }

        let document: TOMLTable
        do {
            document = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let begin = error.source.begin
            throw fail("\(begin.line):\(begin.column): malformed TOML: \(error.description)")
        }
        try checkKeys(document, known: topKeys, place: "at the top level")

        var config = StationConfig(path: path, slots: [])
        if let value = document["hosts"] { config.hosts = absolutePath(try string(value, "hosts"), relativeTo: folder) }
        if let value = document["journal"] {
            let journal = try string(value, "journal")
            if Journal.isDatabaseURL(journal) {
                do {
                    try Journal.checkDatabaseURL(journal)
                } catch let error as PiflashError {
                    throw fail("`journal`: \(error.message)", hint: error.hint)
                }
                config.journal = journal
            } else {
                config.journal = absolutePath(journal, relativeTo: folder)
            }
        }
        if let value = document["name"] {
            let name = try string(value, "name")
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw fail("the station name `\(name)` may only hold letters, digits, `-`, `_` and `.`")
            }
            config.name = name
        }
        if let value = document["heartbeat_timeout"] {
            guard let seconds = value.int.map(Double.init) ?? value.double, seconds >= 2, seconds <= 86_400 else {
                throw fail("`heartbeat_timeout` must be a number of seconds from 2 to 86400")
            }
            config.heartbeatTimeout = seconds
        }
        if let value = document["state_file"] {
            config.stateFile = absolutePath(try string(value, "state_file"), relativeTo: folder)
        }
        if let value = document["age_identity"] {
            config.ageIdentity = absolutePath(try string(value, "age_identity"), relativeTo: folder)
        }
        if let value = document["reflash"] { config.reflash = try bool(value, "reflash") }
        if let value = document["eject"] { config.eject = try bool(value, "eject") }
        if let value = document["full"] { config.full = try bool(value, "full") }
        if let value = document["build"] { config.build = try bool(value, "build") }
        if let value = document["max_size"] {
            if let number = value.int, number > 0 {
                config.maxSize = UInt64(number)
            } else if let text = value.string, let bytes = parseByteSize(text), bytes > 0 {
                config.maxSize = bytes
            } else {
                throw fail("`max_size` must be a size such as \"64G\" or a number of bytes")
            }
        }
        if let value = document["queue"] {
            guard let array = value.array else { throw fail("`queue` must be an array of host names, not a \(value.type)") }
            config.queue = try array.map { try string($0, "queue") }
            var seen: Set<String> = []
            for host in config.queue where !seen.insert(host).inserted {
                throw fail("host `\(host)` appears twice in `queue`")
            }
        }
        guard let slotsValue = document["slot"] else {
            throw fail("no [[slot]]: the station needs at least one reader slot",
                       hint: "add [[slot]] tables with name and match (see piflash-station(8))")
        }
        guard let slots = slotsValue.array else { throw fail("`slot` must be an array of tables ([[slot]])") }
        for (index, item) in slots.enumerated() {
            let place = "in [[slot]] #\(index + 1)"
            guard let table = item.table else { throw fail("`slot` must be an array of tables ([[slot]])") }
            try checkKeys(table, known: slotKeys, place: place)
            guard let nameValue = table["name"] else { throw fail("[[slot]] #\(index + 1) has no `name`") }
            let name = try string(nameValue, "name")
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw fail("slot name `\(name)` may only hold letters, digits, `-`, `_` and `.`")
            }
            if config.slots.contains(where: { $0.name == name }) { throw fail("two slots are named `\(name)`") }
            guard let matchValue = table["match"], let matchTable = matchValue.table else {
                throw fail("slot `\(name)` needs `match`, an inline table of udev properties",
                           hint: "e.g. match = { PIFLASH_SLOT = \"\(name)\" }")
            }
            var match: [String: String] = [:]
            for key in matchTable.keys {
                guard let pattern = matchTable[key]?.string else {
                    throw fail("`match.\(key)` of slot `\(name)` must be a string")
                }
                match[key] = pattern
            }
            if match.isEmpty {
                throw fail("slot `\(name)` has an empty `match`: it would take every disk",
                           hint: "match on a property your udev rules set, e.g. PIFLASH_SLOT")
            }
            var slot = SlotConfig(name: name, match: match)
            if let value = table["host"] { slot.host = try string(value, "host") }
            if let value = table["reflash"] { slot.reflash = try bool(value, "reflash") }
            if slot.host == nil && config.queue.isEmpty {
                throw fail("slot `\(name)` has no `host` and the station has no `queue`",
                           hint: "give the slot a fixed host, or list hosts in queue = [\"…\"]")
            }
            config.slots.append(slot)
        }
        if config.slots.isEmpty { throw fail("no [[slot]]: the station needs at least one reader slot") }
        if let value = document["web"] {
            guard let table = value.table else { throw fail("`web` must be a table ([web])") }
            try checkKeys(table, known: webKeys, place: "in [web]")
            guard let listenValue = table["listen"] else {
                throw fail("[web] has no `listen`", hint: "e.g. listen = \"127.0.0.1:8480\"")
            }
            let listen = try string(listenValue, "listen")
            guard let (host, port) = WebConfig.parseListen(listen) else {
                throw fail("`listen` must be ADDRESS:PORT (an IPv4 address, [IPv6] or localhost), not `\(listen)`",
                           hint: "e.g. listen = \"127.0.0.1:8480\"")
            }
            var web = WebConfig(host: host, port: port)
            if let value = table["token_file"] { web.tokenFile = absolutePath(try string(value, "token_file"), relativeTo: folder) }
            if !web.isLoopback && web.tokenFile == nil {
                throw fail("[web] listens on \(listen), which is not loopback: it needs `token_file`",
                           hint: "add token_file = \"/etc/piflash/web-token\" (a file holding a random token), or listen on 127.0.0.1")
            }
            config.web = web
        }
        return config
    }
}
