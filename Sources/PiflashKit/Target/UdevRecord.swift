/// One device record as `udevadm` prints it, in any of its text formats. Used to build
/// ``DiskDescription``s from recorded dumps (tests, bug reports) exactly as from live udev.
public struct UdevRecord: Sendable, Equatable {
    /// Where the record came from.
    public enum Kind: Sendable, Equatable {
        /// `udevadm info` / `--export-db` (`P:`, `N:`, `S:`, `E:` lines).
        case database
        /// `udevadm info --query=property` (`KEY=value`) or `--export` (`KEY='value'`).
        case properties
        /// A `udevadm monitor -p` event: `KERNEL[…]` (the raw uevent) or `UDEV [...]` (after the rules).
        case event(source: String, action: String)
    }

    public var kind: Kind
    /// `P:` (the devpath), when given.
    public var path: String?
    /// `N:` (the node name below /dev), when given.
    public var name: String?
    /// `S:` lines (symlinks below /dev), when given.
    public var symlinks: [String]
    /// The properties in file order, values as udev stores them (`_ENC` values keep their `\x20`
    /// escapes; see ``UdevRecord/decodeEscapes(_:)``), quotes of `--export` removed.
    public var properties: [(key: String, value: String)]

    public init(kind: Kind, path: String? = nil, name: String? = nil, symlinks: [String] = [],
                properties: [(key: String, value: String)] = []) {
        self.kind = kind
        self.path = path
        self.name = name
        self.symlinks = symlinks
        self.properties = properties
    }

    public static func == (lhs: UdevRecord, rhs: UdevRecord) -> Bool {
        lhs.kind == rhs.kind && lhs.path == rhs.path && lhs.name == rhs.name && lhs.symlinks == rhs.symlinks
            && lhs.properties.map(\.key) == rhs.properties.map(\.key)
            && lhs.properties.map(\.value) == rhs.properties.map(\.value)
    }

    /// The last value of a property.
    public subscript(key: String) -> String? {
        properties.last { $0.key == key }?.value
    }

    /// Properties as a dictionary (a repeated key keeps its last value).
    public var propertyMap: [String: String] {
        Dictionary(properties.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
    }

    /// `DEVPATH`, else the `P:` line.
    public var devpath: String? { self["DEVPATH"] ?? path }

    /// The kernel name: last component of `DEVNAME`, else of the devpath, else `N:`.
    public var sysname: String? {
        if let devname = self["DEVNAME"] { return String(devname.split(separator: "/").last ?? "") }
        if let devpath { return String(devpath.split(separator: "/").last ?? "") }
        return name
    }

    /// Parses every record in a text: comment lines (`#`) and `udevadm monitor`'s banner are
    /// skipped; records are separated by blank lines, a new monitor header, or a second `P:`.
    public static func parse(_ text: String) -> [UdevRecord] {
        var records: [UdevRecord] = []
        var current: UdevRecord?

        func finish() {
            if let record = current, record.path != nil || record.name != nil || !record.properties.isEmpty
                || !record.symlinks.isEmpty
            {
                records.append(record)
            }
            current = nil
        }

        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = Substring(rawLine)
            if line.last == "\r" { line.removeLast() }
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) {
                finish()
                continue
            }
            if line.hasPrefix("#") { continue }
            if let header = monitorHeader(line) {
                finish()
                current = UdevRecord(kind: .event(source: header.source, action: header.action), path: header.devpath)
                continue
            }
            if line.count >= 3, let tag = line.first, tag.isUppercase, line.dropFirst().hasPrefix(": ") {
                let value = String(line.dropFirst(3))
                if current == nil || (tag == "P" && current?.path != nil) {
                    finish()
                    current = UdevRecord(kind: .database)
                }
                switch tag {
                case "P": current?.path = value
                case "N": current?.name = value
                case "S": current?.symlinks.append(value)
                case "E":
                    if let (key, propertyValue) = keyValue(Substring(value)) {
                        current?.properties.append((key, propertyValue))
                    }
                default: break  // M: U: T: D: Q: J: L: R: I: V: W: G: (name, subsystem, devtype, …)
                }
                continue
            }
            guard let (key, value) = keyValue(line) else { continue }  // the monitor banner, stray text
            if current == nil { current = UdevRecord(kind: .properties) }
            current?.properties.append((key, value))
        }
        finish()
        return records
    }

    /// `KERNEL[438.130580] change   /sdb (block)` or `UDEV  [165554.953982] change /devices/… (block)`.
    static func monitorHeader(_ line: Substring) -> (source: String, action: String, devpath: String)? {
        let source: String
        if line.hasPrefix("KERNEL[") { source = "KERNEL" } else if line.hasPrefix("UDEV") { source = "UDEV" } else {
            return nil
        }
        let afterSource = line.dropFirst(source.count).drop(while: { $0 == " " })
        guard afterSource.first == "[", let close = afterSource.firstIndex(of: "]") else { return nil }
        let words = afterSource[afterSource.index(after: close)...].split(separator: " ")
        guard words.count >= 2 else { return nil }
        return (source, String(words[0]), String(words[1]))
    }

    /// `KEY=value`, `KEY='value'` or `KEY="value"`. Keys are udev property names (letters,
    /// digits, `_`, `.`, `-`).
    static func keyValue(_ line: Substring) -> (String, String)? {
        guard let equals = line.firstIndex(of: "=") else { return nil }
        let key = line[..<equals]
        guard !key.isEmpty,
              key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" })
        else { return nil }
        var value = line[line.index(after: equals)...]
        if value.count >= 2, let first = value.first, first == "'" || first == "\"", value.last == first {
            value = value.dropFirst().dropLast()
        }
        return (String(key), String(value))
    }

    /// Decodes udev's `\xNN` escapes (as in `ID_MODEL_ENC=SD\x2fMMC\x20\x20`) into the bytes
    /// they stand for. Other backslashes are kept.
    public static func decodeEscapes(_ text: String) -> String {
        guard text.contains("\\x") else { return text }
        let source = Array(text.utf8)
        var bytes: [UInt8] = []
        var index = 0
        func hexValue(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while index < source.count {
            if source[index] == UInt8(ascii: "\\"), index + 3 < source.count, source[index + 1] == UInt8(ascii: "x"),
               let high = hexValue(source[index + 2]), let low = hexValue(source[index + 3])
            {
                bytes.append(high << 4 | low)
                index += 4
            } else {
                bytes.append(source[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
