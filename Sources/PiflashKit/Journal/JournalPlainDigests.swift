import PiflashPlatform

/// What ``Journal/scrubPlainDigests(host:)`` removed.
public struct PlainDigestScrub: Sendable, Equatable {
    /// The attempts that carried plain digests, ascending.
    public var entries: [Int64]
    /// File digests removed.
    public var files: Int
    /// Error messages from which digests (and file sizes) were removed.
    public var errors: Int
    /// Whether the journal's write-ahead log could be emptied, so no old copy of the removed
    /// digests is left in `PATH-wal` (false when another process, e.g. a running station, keeps
    /// reading the journal: the log is emptied when it stops).
    public var logEmptied: Bool
}

/// Plain SHA-256 digests written by piflash before keyed digests (journal schema 1 and 2): of
/// every injected file, whether or not its content came from secrets, and in the message of an
/// injected-file mismatch. They are read and shown, never written again; these find and remove
/// them.
extension Journal {
    /// The `error` text of an injected-file mismatch written before keyed digests
    /// (`content SHA-256 is HEX (N bytes), expected HEX (N bytes)`); today's messages say
    /// `content hmac-sha256 is …` or `content sha256 is …` and never match.
    static let legacyMismatchPattern = "%content SHA-256 is %"

    /// The attempts (ids, ascending) that carry plain digests recorded before keyed digests: a
    /// legacy file digest, or a legacy mismatch message with digests. Of one host, or all.
    public func entriesWithPlainDigests(host: String? = nil) throws -> [Int64] {
        var sql = """
            SELECT id FROM flashes WHERE (id IN (SELECT flash_id FROM injected_files
                WHERE digest_kind IS NULL AND digest <> '') OR error LIKE ?)
            """
        var parameters: [SQLiteValue] = [.text(Journal.legacyMismatchPattern)]
        if let host {
            sql += " AND host = ?"
            parameters.append(.text(host))
        }
        sql += " ORDER BY id"
        let query = sql
        let bound = parameters
        return try read { db in try db.query(query, bound).compactMap { $0[0].int64 } }
    }

    /// Removes the plain digests recorded before keyed digests (of one host, or all): each legacy
    /// file digest becomes "scrubbed" (path, mode and owner stay), and the digests and sizes in
    /// legacy mismatch messages are replaced by `(scrubbed)`. The removed bytes are zeroed in the
    /// database file (`secure_delete`), the file is rebuilt (`VACUUM`) and the write-ahead log
    /// emptied (`wal_checkpoint(TRUNCATE)`), so no copy stays behind in either file.
    ///
    /// Keyed digests and the digests of public content are kept.
    ///
    /// - Throws: ``PiflashError`` when the database cannot be written.
    public func scrubPlainDigests(host: String? = nil) throws -> PlainDigestScrub {
        let entries = try entriesWithPlainDigests(host: host)
        let hostFilter = host.map { _ in " AND flash_id IN (SELECT id FROM flashes WHERE host = ?)" } ?? ""
        let hostParameters: [SQLiteValue] = host.map { [.text($0)] } ?? []
        let counts: (files: Int, errors: Int) = try withDatabase { db in
            try db.transaction {
                let files = try db.run(
                    "UPDATE injected_files SET digest = '', digest_kind = 'scrubbed'"
                        + " WHERE digest_kind IS NULL AND digest <> ''" + hostFilter,
                    hostParameters)
                var errors = 0
                var sql = "SELECT id, error FROM flashes WHERE error LIKE ?"
                if host != nil { sql += " AND host = ?" }
                for row in try db.query(sql, [.text(Journal.legacyMismatchPattern)] + hostParameters) {
                    guard let id = row[0].int64, let message = row[1].string else { continue }
                    let scrubbed = Journal.scrubbedMessage(message)
                    if scrubbed != message {
                        errors += try db.run("UPDATE flashes SET error = ? WHERE id = ?", [.text(scrubbed), .integer(id)])
                    }
                }
                return (files, errors)
            }
        }
        let emptied = try withDatabase { db -> Bool in
            if counts.files + counts.errors > 0 {
                try db.retryingWhileBusy { try db.execute("VACUUM") }
            }
            // (busy, log frames, checkpointed frames): busy = 0 when the log was emptied.
            let checkpoint = try db.query("PRAGMA wal_checkpoint(TRUNCATE)").first
            return checkpoint?[0].int64 == 0
        }
        return PlainDigestScrub(entries: entries, files: counts.files, errors: counts.errors, logEmptied: emptied)
    }

    /// A legacy mismatch message without its digests and sizes: every run of 64 hex digits
    /// becomes `(scrubbed)`, each ` (N bytes)` goes, and `content SHA-256 is` becomes `content
    /// digest is` (so the message no longer matches ``legacyMismatchPattern``).
    static func scrubbedMessage(_ message: String) -> String {
        var out = ""
        var run = ""
        func flush() {
            out += run.count == 64 ? "(scrubbed)" : run
            run = ""
        }
        for character in message {
            if character.isHexDigit {
                run.append(character)
            } else {
                flush()
                out.append(character)
            }
        }
        flush()
        return out.replacing(#/ \(\d+ bytes\)/#, with: "").replacing("content SHA-256 is ", with: "content digest is ")
    }
}
