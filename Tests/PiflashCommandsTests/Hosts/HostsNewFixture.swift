import Foundation
import Testing

/// A scratch repository with a `.sops.yaml` (comments, a path_regex, an admin age recipient made
/// by age-keygen) and an empty hosts folder, for `piflash hosts new`.
final class NewHostRepository {
    let scratch: ScratchDirectory
    let repository: String
    let hosts: String
    let adminKey: String
    let adminRecipient: String
    let sopsConfigText: String

    static var sopsAvailable: Bool { (try? Shell.run(["bash", "-c", "command -v sops"]))?.status == 0 }

    init() throws {
        scratch = try ScratchDirectory("piflash-hosts-new")
        repository = scratch.file("repo")
        hosts = repository + "/hosts"
        try Shell.sh("mkdir -p '\(hosts)'")
        adminKey = scratch.file("admin-age.txt")
        try Shell.sh("age-keygen -o '\(adminKey)' 2>/dev/null")
        adminRecipient = try Shell.sh("age-keygen -y '\(adminKey)'").trimmingCharacters(in: .whitespacesAndNewlines)
        sopsConfigText = """
            # The admins' keys.
            creation_rules:
              # The Pis' bootstrap secrets: the admin only.
              - path_regex: ^hosts/secrets/[^/]+\\.(yaml|json|env)$
                age: >-
                  \(adminRecipient)
                # end of the Pi rule
              - path_regex: ^other/
                age: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p  # someone else

            """
        try sopsConfigText.write(toFile: repository + "/.sops.yaml", atomically: true, encoding: .utf8)
    }

    /// The environment every command runs with: the admin identity only, no default keys file.
    var environment: [String: String] {
        ["SOPS_AGE_KEY_FILE": adminKey, "HOME": scratch.path, "XDG_CONFIG_HOME": scratch.file("config")]
    }

    @discardableResult
    func piflash(_ arguments: [String], input: String? = nil, environment extra: [String: String] = [:]) throws -> Shell.Output {
        try Shell.run([Shell.piflash] + arguments, input: input, environment: environment.merging(extra) { $1 })
    }

    /// `hosts new NAME --hosts HOSTS … --json`, the result object.
    func newHost(_ name: String, _ extra: [String] = [], psk: String? = "correct horse battery") throws -> [String: Any] {
        var arguments = ["hosts", "new", name, "--hosts", hosts, "--json"] + extra
        if psk != nil { arguments += ["--wifi-ssid", "Pi Net", "--wifi-psk-stdin"] }
        let run = try piflash(arguments, input: psk.map { $0 + "\n" })
        #expect(run.status == 0, "stderr: \(run.stderr)")
        let line = try #require(run.stdout.split(separator: "\n").last)
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    /// The real sops, run in the repository (where it finds .sops.yaml) with the admin key.
    func sops(_ arguments: [String]) throws -> Shell.Output {
        let quoted = arguments.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        return try Shell.run(["bash", "-c", "cd '\(repository)' && exec sops " + quoted], environment: environment)
    }

    /// `sops -d` of a file as a JSON object of strings.
    func sopsValues(_ path: String) throws -> [String: Any] {
        let run = try sops(["--decrypt", "--output-type", "json", path])
        #expect(run.status == 0, "sops -d: \(run.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    }

    /// Every file under the hosts folder with its SHA-256, to prove nothing was written.
    func snapshot() throws -> String {
        try Shell.sh("cd '\(repository)' && find . -type f -o -type d | sort | while read f; do if [ -f \"$f\" ]; then sha256sum \"$f\"; else echo \"$f/\"; fi; done")
    }

    /// `ssh-keygen -y` of a private key given as text.
    func publicKey(ofPrivateKey pem: String) throws -> String {
        let file = scratch.file("key-\(UUID().uuidString.prefix(8))")
        try pem.write(toFile: file, atomically: true, encoding: .utf8)
        try Shell.sh("chmod 600 '\(file)'")
        return try Shell.sh("ssh-keygen -y -f '\(file)'").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The age recipient of an `ssh-ed25519 AAAA…` line, computed independently in Python:
    /// u = (1 + y) / (1 − y) mod 2^255 − 19, then BIP 173 Bech32 with the `age` prefix.
    static func independentRecipient(_ publicLine: String) throws -> String {
        let script = """
            import sys, base64
            p = 2**255 - 19
            key = base64.b64decode(sys.argv[1].split()[1])[-32:]
            y = int.from_bytes(key, 'little') & ((1 << 255) - 1)
            data = ((1 + y) * pow(1 - y, p - 2, p) % p).to_bytes(32, 'little')
            C = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l'
            def polymod(vs):
                g = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3]
                c = 1
                for v in vs:
                    b = c >> 25
                    c = (c & 0x1ffffff) << 5 ^ v
                    for i in range(5):
                        c ^= g[i] if (b >> i) & 1 else 0
                return c
            acc, bits, five = 0, 0, []
            for x in data:
                acc, bits = (acc << 8) | x, bits + 8
                while bits >= 5:
                    bits -= 5
                    five.append((acc >> bits) & 31)
            if bits:
                five.append((acc << (5 - bits)) & 31)
            hrp = [ord(x) >> 5 for x in 'age'] + [0] + [ord(x) & 31 for x in 'age']
            m = polymod(hrp + five + [0] * 6) ^ 1
            print('age1' + ''.join(C[d] for d in five + [(m >> 5 * (5 - i)) & 31 for i in range(6)]))
            """
        return try Shell.run(["python3", "-c", script, publicLine]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
