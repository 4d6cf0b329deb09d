// The header of an age v1 file: the version line, recipient stanzas and the header MAC.

/// Why an age file could not be opened. The CCTV vectors distinguish these cases.
enum AgeFailure: Error, Equatable {
    /// The ASCII armor is malformed.
    case armor(String)
    /// The header is malformed (or a stanza for our identity type is).
    case header(String)
    /// The header parsed, but no stanza opens with the identities given.
    case noMatch
    /// A file key was unwrapped, but the header MAC does not match.
    case headerMAC
    /// The encrypted payload does not decrypt all the way to its end.
    case payload(String)
}

/// A parsed age v1 header.
struct AgeHeader {
    /// One `-> TYPE ARGS…` stanza and its body.
    struct Stanza {
        var type: String
        var arguments: [String]
        var body: [UInt8]
    }

    static let versionLine = Array("age-encryption.org/v1".utf8)

    var stanzas: [Stanza]
    /// The header MAC (32 bytes).
    var mac: [UInt8]
    /// The bytes the MAC covers: the header up to and including `---`.
    var authenticatedBytes: ArraySlice<UInt8>
    /// Where the payload (nonce, then STREAM chunks) starts.
    var payloadStart: Int

    /// A stanza argument: non-empty, printable ASCII without spaces.
    static func isValidArgument(_ argument: ArraySlice<UInt8>) -> Bool {
        !argument.isEmpty && argument.allSatisfy { $0 >= 33 && $0 <= 126 }
    }

    /// Parses the header at the start of a binary age file, exactly as the reference
    /// implementation does (LF line endings, canonical unpadded base64, 64-column bodies).
    static func parse(_ file: [UInt8]) throws(AgeFailure) -> AgeHeader {
        var index = 0

        /// The next line without its LF; a line must end with LF.
        func nextLine() throws(AgeFailure) -> ArraySlice<UInt8> {
            guard let end = file[index...].firstIndex(of: UInt8(ascii: "\n")) else {
                throw .header("the header ends without a newline")
            }
            let line = file[index..<end]
            index = end + 1
            return line
        }

        let first = try nextLine()
        guard first.elementsEqual(versionLine) else {
            if first.starts(with: Array("age-encryption.org/".utf8)) {
                throw .header("unsupported age format version")
            }
            throw .header("not an age file (the first line is not age-encryption.org/v1)")
        }

        var stanzas: [Stanza] = []
        while true {
            let peek = file[index..<min(index + 3, file.count)]
            if peek.elementsEqual(Array("---".utf8)) {
                let footerStart = index
                let line = try nextLine()
                let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
                guard parts.count == 2, parts[0].elementsEqual(Array("---".utf8)),
                    let mac = Base64.decode(parts[1], padded: false), mac.count == 32
                else { throw .header("malformed header MAC line") }
                return AgeHeader(
                    stanzas: stanzas, mac: mac, authenticatedBytes: file[0..<(footerStart + 3)], payloadStart: index)
            }
            guard peek.count == 3, peek.starts(with: Array("->".utf8)) else {
                throw .header("unexpected line in the header")
            }
            let line = try nextLine()
            let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
            guard parts.count >= 2, parts[0].elementsEqual(Array("->".utf8)),
                parts.dropFirst().allSatisfy(isValidArgument)
            else { throw .header("malformed stanza line") }
            var body: [UInt8] = []
            while true {
                let bodyLine = try nextLine()
                guard bodyLine.count <= 64, let decoded = Base64.decode(bodyLine, padded: false) else {
                    throw .header("malformed stanza body line")
                }
                body += decoded
                if decoded.count < 48 { break }
            }
            let texts = parts.dropFirst().map { String(decoding: $0, as: UTF8.self) }
            stanzas.append(Stanza(type: texts[0], arguments: Array(texts.dropFirst()), body: body))
        }
    }
}
