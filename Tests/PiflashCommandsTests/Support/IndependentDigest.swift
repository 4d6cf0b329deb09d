import Foundation

/// The keyed digests of piflash-hosts(5) (SECRETS) computed by Python's `hmac`/`hashlib` from the
/// documented construction (HKDF-SHA-256 written out: extract, then one expand block), never by
/// piflash's code: the independent check that a recorded `hmac_sha256` recomputes from the secrets.
enum IndependentDigest {
    static let script = """
        import hashlib, hmac, os, sys
        folder, names, files = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
        ikm = b""
        for name in sorted(names, key=lambda n: n.encode()):
            value = open(os.path.join(folder, name), "rb").read()
            for part in (name.encode(), value):
                ikm += len(part).to_bytes(4, "big") + part
        prk = hmac.new(b"piflash", ikm, hashlib.sha256).digest()
        key = hmac.new(prk, b"piflash content digest v1" + b"\\x01", hashlib.sha256).digest()
        for path in files:
            print(hmac.new(key, open(path, "rb").read(), hashlib.sha256).hexdigest())
        """

    /// HMAC-SHA-256 hex of each file's content under the key derived from the `dir` secrets
    /// `names` in `folder` (each a file holding the value).
    static func hmac(secretsFolder folder: String, names: [String], files: [String]) throws -> [String] {
        let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"
        let out = try Shell.run([python, "-c", script, folder, names.joined(separator: ",")] + files)
        guard out.status == 0 else { throw FixtureError("python3 hmac failed: \(out.stderr)") }
        return out.stdout.split(separator: "\n").map(String.init)
    }

    /// Whether `needle` (a hex digest) occurs in any of `haystacks`, as text or as its 32 raw bytes.
    static func occurs(_ hex: String, in haystacks: [Data]) -> Bool {
        var raw = Data()
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            raw.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return haystacks.contains { $0.range(of: Data(hex.utf8)) != nil || $0.range(of: raw) != nil }
    }
}
