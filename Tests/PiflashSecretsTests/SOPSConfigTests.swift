import Foundation
import PiflashCore
import Testing

@testable import PiflashSecrets

/// `.sops.yaml`: finding it, matching rules as sops does, and adding a recipient textually.
@Suite("SOPS configuration (.sops.yaml)")
struct SOPSConfigTests {
    static let a = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    static let b = "age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw"
    static let host = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"

    static let commented = """
        # keys of the admins
        keys:
          - &admin age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
        creation_rules:
          # the Pis' bootstrap secrets
          - path_regex: hosts/secrets/[^/]+\\.(yaml|json|env)$
            age: >-
              \(a),
              \(b)
            # end of rule 1
          - path_regex: .*  # everything else
            age: "\(a)"  # only me
        """

    @Test("the first rule whose path_regex matches the path relative to the file's folder")
    func matching() throws {
        let config = try SOPSConfig(path: "/repo/.sops.yaml", text: Self.commented)
        #expect(config.rules.count == 2)
        #expect(try config.rule(for: "/repo/hosts/secrets/pi.yaml")?.index == 0)
        #expect(try config.rule(for: "/repo/hosts/secrets/pi.yaml")?.ageRecipients == [Self.a, Self.b])
        #expect(try config.rule(for: "/repo/other/x.yaml")?.index == 1)
        #expect(try config.rule(for: "/repo/other/x.yaml")?.ageRecipients == [Self.a])
    }

    @Test("found in the folder or above it; none is nil")
    func lookup() throws {
        let folder = try TestSupport.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let deep = folder.appendingPathComponent("a/b/hosts")
        try FileManager.default.createDirectory(at: deep, withIntermediateDirectories: true)
        try Self.commented.write(to: folder.appendingPathComponent("a/.sops.yaml"), atomically: true, encoding: .utf8)
        let found = try #require(try SOPSConfig.find(from: deep.path))
        #expect(found.path == folder.appendingPathComponent("a/.sops.yaml").standardizedFileURL.path)
        #expect(try SOPSConfig.find(from: folder.path) == nil)
    }

    @Test("adding to a folded comma-separated string keeps comments and order")
    func addToFoldedString() throws {
        let config = try SOPSConfig(path: "/repo/.sops.yaml", text: Self.commented)
        let edited = try #require(try config.addingRecipient(Self.host, toRule: 0))
        let expected = Self.commented.replacingOccurrences(of: "      \(Self.b)\n", with: "      \(Self.b),\n      \(Self.host)\n")
        #expect(edited == expected)
        #expect(try SOPSConfig(path: config.path, text: edited).rules[0].ageRecipients == [Self.a, Self.b, Self.host])
        // Already there: nothing to do.
        #expect(try SOPSConfig(path: config.path, text: edited).addingRecipient(Self.host, toRule: 0) == nil)
    }

    @Test("adding to a quoted string with a trailing comment")
    func addToQuotedString() throws {
        let config = try SOPSConfig(path: "/repo/.sops.yaml", text: Self.commented)
        let edited = try #require(try config.addingRecipient(Self.host, toRule: 1))
        #expect(edited == Self.commented.replacingOccurrences(of: "age: \"\(Self.a)\"  # only me", with: "age: \"\(Self.a),\(Self.host)\"  # only me"))
    }

    @Test("adding to a plain string, a block list and a key group's list")
    func addToOtherLayouts() throws {
        let plain = "creation_rules:\n  - age: \(Self.a) # me\n"
        #expect(try SOPSConfig(path: "/r/.sops.yaml", text: plain).addingRecipient(Self.host, toRule: 0)
                == "creation_rules:\n  - age: \(Self.a),\(Self.host) # me\n")
        let list = "creation_rules:\n  - path_regex: x\n    age:\n      - \(Self.a) # me\n      # others later\n    encrypted_regex: ^wifi\n"
        #expect(try SOPSConfig(path: "/r/.sops.yaml", text: list).addingRecipient(Self.host, toRule: 0)
                == "creation_rules:\n  - path_regex: x\n    age:\n      - \(Self.a) # me\n      - \(Self.host)\n      # others later\n    encrypted_regex: ^wifi\n")
        let groups = "creation_rules:\n  - key_groups:\n      - age:\n          - \(Self.a)\n"
        #expect(try SOPSConfig(path: "/r/.sops.yaml", text: groups).addingRecipient(Self.host, toRule: 0)
                == "creation_rules:\n  - key_groups:\n      - age:\n          - \(Self.a)\n          - \(Self.host)\n")
        let flow = "creation_rules:\n  - age: [\(Self.a)]\n"
        #expect(try SOPSConfig(path: "/r/.sops.yaml", text: flow).addingRecipient(Self.host, toRule: 0)
                == "creation_rules:\n  - age: [\(Self.a), \(Self.host)]\n")
    }

    @Test("a rule without an age key is refused with a hint, never guessed")
    func refusesWithoutAge() throws {
        let text = "creation_rules:\n  - pgp: ABCDEF\n"
        #expect(throws: PiflashError.self) { try SOPSConfig(path: "/r/.sops.yaml", text: text).addingRecipient(Self.host, toRule: 0) }
    }
}
