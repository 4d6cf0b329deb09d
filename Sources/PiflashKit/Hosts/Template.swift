/// A `template` of a host file: text with `${name}` references to secrets.
///
/// Each `${name}` (a key path: letters, digits, `_`, `-`, `.`) is replaced by the secret's bytes
/// literally — no quoting, no escaping, no trimming: `$`, spaces, quotes and backslashes in a
/// value arrive unchanged. `$${` writes a literal `${`. Any other `$` is literal.
struct Template: Sendable, Equatable {
    enum Part: Sendable, Equatable {
        case literal([UInt8])
        case secret(String)
    }

    let parts: [Part]

    /// Parses a template.
    /// - Throws: ``TemplateSyntaxError`` for an unterminated `${` or an invalid name.
    init(_ text: String) throws {
        let bytes = Array(text.utf8)
        var parts: [Part] = []
        var literal: [UInt8] = []
        var index = 0
        let dollar = UInt8(ascii: "$"), open = UInt8(ascii: "{"), close = UInt8(ascii: "}")
        while index < bytes.count {
            let byte = bytes[index]
            if byte == dollar, index + 2 < bytes.count, bytes[index + 1] == dollar, bytes[index + 2] == open {
                literal += [dollar, open]
                index += 3
                continue
            }
            if byte == dollar, index + 1 < bytes.count, bytes[index + 1] == open {
                guard let end = bytes[(index + 2)...].firstIndex(of: close) else {
                    throw TemplateSyntaxError(message: "has `${` at byte \(index) without a closing `}`")
                }
                let name = String(decoding: bytes[(index + 2)..<end], as: UTF8.self)
                guard Template.isValidName(name) else {
                    throw TemplateSyntaxError(
                        message: "refers to `${\(name)}`, which is not a secret name (letters, digits, `_`, `-`, `.`)")
                }
                if !literal.isEmpty {
                    parts.append(.literal(literal))
                    literal = []
                }
                parts.append(.secret(name))
                index = end + 1
                continue
            }
            literal.append(byte)
            index += 1
        }
        if !literal.isEmpty { parts.append(.literal(literal)) }
        self.parts = parts
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
            }
    }

    /// The secrets referred to, in order of first appearance.
    var secretNames: [String] {
        var names: [String] = []
        for case .secret(let name) in parts where !names.contains(name) { names.append(name) }
        return names
    }

    /// The rendered bytes, each reference replaced by `lookup(name)`.
    func render(_ lookup: (String) throws -> [UInt8]) rethrows -> [UInt8] {
        var out: [UInt8] = []
        for part in parts {
            switch part {
            case .literal(let bytes): out += bytes
            case .secret(let name): out += try lookup(name)
            }
        }
        return out
    }
}

/// Why a template does not parse.
struct TemplateSyntaxError: Error {
    let message: String
}
