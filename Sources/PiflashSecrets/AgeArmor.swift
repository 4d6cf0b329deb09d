// The ASCII armor of age files (age-encryption.org/v1, "ASCII armor"), decoded as strictly as
// the reference implementation: canonical padded base64, 64-column lines, nothing but
// whitespace around the armor.

/// Decoding of `-----BEGIN AGE ENCRYPTED FILE-----` armor.
enum AgeArmor {
    static let beginLine = Array("-----BEGIN AGE ENCRYPTED FILE-----".utf8)
    static let endLine = Array("-----END AGE ENCRYPTED FILE-----".utf8)
    static let columnsPerLine = 64
    static let bytesPerLine = 48
    /// The most whitespace tolerated before and after the armor.
    static let maximumWhitespace = 1024

    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (byte >= 0x09 && byte <= 0x0D) || byte == 0x85 || byte == 0xA0
    }

    /// Whether `file` starts (after some whitespace) with the armor's first line.
    static func isArmored(_ file: [UInt8]) -> Bool {
        var index = 0
        while index < file.count, index < maximumWhitespace, isWhitespace(file[index]) { index += 1 }
        return file[index...].starts(with: beginLine)
    }

    /// The binary age file inside the armor.
    static func decode(_ file: [UInt8]) throws(AgeFailure) -> [UInt8] {
        var index = 0
        var skipped = 0
        while index < file.count, skipped < maximumWhitespace, isWhitespace(file[index]) {
            index += 1
            skipped += 1
        }

        /// The next line without its LF or CRLF; fails at the end of the input.
        func nextLine() throws(AgeFailure) -> ArraySlice<UInt8> {
            guard index < file.count else { throw .armor("the armor ends before its closing line") }
            let end = file[index...].firstIndex(of: UInt8(ascii: "\n")) ?? file.count
            var line = file[index..<end]
            index = min(end + 1, file.count)
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            return line
        }

        func checkTrailing() throws(AgeFailure) {
            let rest = file[index...]
            if rest.prefix(maximumWhitespace).contains(where: { !isWhitespace($0) }) {
                throw .armor("data after the armor's closing line")
            }
            if rest.count >= maximumWhitespace { throw .armor("too much whitespace after the armor") }
        }

        guard try nextLine().elementsEqual(beginLine) else { throw .armor("the armor does not start with \(String(decoding: beginLine, as: UTF8.self))") }
        var output: [UInt8] = []
        while true {
            let line = try nextLine()
            if line.elementsEqual(endLine) {
                try checkTrailing()
                return output
            }
            if line.isEmpty { throw .armor("empty line inside the armor") }
            if line.count > columnsPerLine { throw .armor("armor line longer than \(columnsPerLine) columns") }
            guard let decoded = Base64.decode(line, padded: true) else { throw .armor("armor line is not canonical base64") }
            output += decoded
            if decoded.count < bytesPerLine {
                guard try nextLine().elementsEqual(endLine) else { throw .armor("a short armor line must be the last one") }
                try checkTrailing()
                return output
            }
        }
    }
}

extension AgeArmor {
    /// The armored form of a binary age file: the BEGIN line, canonical padded base64 in
    /// 64-column lines, the END line, each ending with LF.
    static func encode(_ binary: [UInt8]) -> [UInt8] {
        var output = beginLine + [0x0A]
        var index = 0
        while index < binary.count {
            let end = min(index + bytesPerLine, binary.count)
            output += Array(Base64.encode(binary[index..<end], padded: true).utf8) + [0x0A]
            index = end
        }
        return output + endLine + [0x0A]
    }
}
