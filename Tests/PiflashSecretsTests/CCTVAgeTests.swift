import Crypto
import Foundation
import Testing

@testable import PiflashSecrets

/// One C2SP/CCTV age test vector (format in vectors/cctv-age/README.md).
struct CCTVVector: CustomTestStringConvertible {
    var name: String
    var expect: String
    var payloadHash: String
    var identities: [String]
    var passphrases: [String]
    var armored: Bool
    var compressed: Bool
    var body: Data

    var testDescription: String { name }

    init(name: String, file: Data) throws {
        self.name = name
        let separator = file.range(of: Data("\n\n".utf8))!
        let header = String(decoding: file[..<separator.lowerBound], as: UTF8.self)
        body = file[separator.upperBound...]
        var fields: [(String, String)] = []
        for line in header.split(separator: "\n") {
            guard let colon = line.range(of: ": ") else { continue }
            fields.append((String(line[..<colon.lowerBound]), String(line[colon.upperBound...])))
        }
        expect = fields.first { $0.0 == "expect" }?.1 ?? ""
        payloadHash = fields.first { $0.0 == "payload" }?.1 ?? ""
        identities = fields.filter { $0.0 == "identity" }.map(\.1)
        passphrases = fields.filter { $0.0 == "passphrase" }.map(\.1)
        armored = fields.contains { $0 == ("armored", "yes") }
        compressed = fields.contains { $0 == ("compressed", "zlib") }
    }

    /// In scope: vectors whose identities are all X25519 (scrypt and ML-KEM hybrid are not).
    var outOfScopeReason: String? {
        if identities.isEmpty && !passphrases.isEmpty { return "passphrase (scrypt) only" }
        if identities.contains(where: { !$0.hasPrefix("AGE-SECRET-KEY-1") }) { return "ML-KEM hybrid identity" }
        return nil
    }

    static func names() -> [String] {
        guard let folder = TestSupport.vector("cctv-age"),
            let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path)
        else { return [] }
        return names.filter { $0 != "README.md" && $0 != "LICENSE" }.sorted()
    }

    static func load(_ name: String) throws -> CCTVVector {
        let url = TestSupport.vector("cctv-age")!.appendingPathComponent(name)
        return try CCTVVector(name: name, file: try Data(contentsOf: url))
    }
}

func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

@Suite("age: C2SP CCTV vectors", .enabled(if: TestSupport.vectorsRoot != nil, "../shared/vectors is absent"))
struct CCTVAgeTests {
    @Test("each X25519 vector behaves as its expect: line says", arguments: CCTVVector.names())
    func vector(_ name: String) throws {
        let vector = try CCTVVector.load(name)
        var body = vector.body
        if vector.compressed { body = try TestSupport.inflate(body) }
        if let reason = vector.outOfScopeReason {
            // Not decryptable here; the armor (if any) must still decode.
            if vector.armored {
                _ = try AgeArmor.decode(Array(body))
            }
            print("CCTV \(name): skipped (\(reason) not supported)")
            return
        }
        let identities = try vector.identities.map { try AgeIdentity(bech32: $0) }
        let result = AgeFile.open(Array(body), identities: identities, armored: vector.armored)
        switch vector.expect {
        case "success":
            #expect(result.failure == nil, "\(name): \(String(describing: result.failure))")
            #expect(sha256Hex(result.plaintext) == vector.payloadHash)
        case "no match":
            #expect(result.failure == .noMatch, "\(name): \(String(describing: result.failure))")
        case "HMAC failure":
            #expect(result.failure == .headerMAC, "\(name): \(String(describing: result.failure))")
        case "header failure":
            guard case .header? = result.failure else {
                Issue.record("\(name): expected a header failure, got \(String(describing: result.failure))")
                return
            }
        case "armor failure":
            guard case .armor? = result.failure else {
                Issue.record("\(name): expected an armor failure, got \(String(describing: result.failure))")
                return
            }
        case "payload failure":
            guard case .payload? = result.failure else {
                Issue.record("\(name): expected a payload failure, got \(String(describing: result.failure))")
                return
            }
            // What was released before the failure must match the payload hash.
            #expect(sha256Hex(result.plaintext) == vector.payloadHash)
        default:
            Issue.record("\(name): unknown expectation \(vector.expect)")
        }
        // The public API agrees: success returns, everything else throws.
        if vector.expect == "success" {
            #expect(throws: Never.self) { try AgeFile.decrypt(Array(body), identities: identities) }
        } else if !vector.armored {
            #expect(throws: (any Error).self) { try AgeFile.decrypt(Array(body), identities: identities) }
        }
    }

    @Test("most vectors are in scope, and the skipped ones are scrypt or hybrid")
    func coverage() throws {
        let vectors = try CCTVVector.names().map(CCTVVector.load)
        let skipped = vectors.filter { $0.outOfScopeReason != nil }
        print("CCTV: \(vectors.count - skipped.count) X25519 vectors checked, \(skipped.count) skipped (scrypt/ML-KEM hybrid)")
        #expect(vectors.count - skipped.count >= 90)
        #expect(skipped.allSatisfy { $0.name.contains("scrypt") || $0.name.contains("hybrid") })
    }
}
