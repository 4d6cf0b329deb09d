import Foundation
import PiflashCore
import PiflashKit
import PiflashPlatform
import Testing

/// The process protections of a process holding secrets, checked through the kernel's view.
@Suite("secret memory: non-dumpable process, locked and zeroed buffers", .serialized)
struct SecretMemoryTests {
    /// `VmLck` of /proc/self/status, in kB: what the kernel counts as locked.
    static func lockedKilobytes() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmLck:") })
        return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" })[1]) ?? -1
    }

    @Test("protectProcess makes the process non-dumpable")
    func nonDumpable() {
        SecretMemory.protectProcess()
        #expect(SecretMemory.isNonDumpable)
    }

    @Test("a LockedBytes buffer is counted as locked by the kernel while it lives, and holds its bytes")
    func locked() throws {
        let before = try Self.lockedKilobytes()
        do {
            let buffer = LockedBytes(copying: Array("correct horse battery".utf8))
            if buffer.isLocked {
                #expect(try Self.lockedKilobytes() >= before + 4)
            } else {
                #expect(SecretMemory.lockNote != nil, "a failed lock is noted for the user")
            }
            #expect(buffer.bytes == Array("correct horse battery".utf8))
            buffer.removeLast(8)
            #expect(buffer.bytes == Array("correct horse".utf8))
            #expect(buffer.equals(LockedBytes(copying: Array("correct horse".utf8))))
            #expect(!buffer.equals(LockedBytes(copying: Array("correct horsf".utf8))))
        }
        #expect(try Self.lockedKilobytes() == before, "unlocked again when released")
    }

    @Test("wipe zeroes an array in place")
    func wipe() {
        var secret = Array("s3cret".utf8)
        LockedBytes.wipe(&secret)
        #expect(secret == [0, 0, 0, 0, 0, 0])
    }
}

/// The flash path's secrets — decrypted values and rendered files — in locked, no-dump pages.
@Suite("secret memory on the flash path", .serialized)
struct FlashSecretMemoryTests {
    /// The `VmFlags` of the mapping holding `address`, from /proc/self/smaps.
    static func vmFlags(of address: UnsafeRawPointer) throws -> [Substring] {
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps"))
        let smaps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        try handle.close()
        let target = UInt(bitPattern: address)
        var inside = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= target && target < bounds[1]
            } else if inside, line.hasPrefix("VmFlags:") {
                return Array(fields.dropFirst())
            }
        }
        Issue.record("no mapping holds \(address) in /proc/self/smaps (\(smaps.count) characters)")
        return []
    }

    @Test("SecretBytes(wiping:) leaves the plaintext only in its pages, which the kernel locks and keeps out of core dumps")
    func sealedBytes() throws {
        let plaintext = Array("a passphrase with spaces\\".utf8)
        var source = plaintext
        let before = try SecretMemoryTests.lockedKilobytes()
        do {
            let secret = SecretBytes(wiping: &source)
            #expect(source == [UInt8](repeating: 0, count: plaintext.count), "the source array is zeroed")
            #expect(secret.bytes == plaintext)
            #expect(secret.equals(plaintext) && !secret.equals(plaintext.dropLast()))
            let flags = try secret.withUnsafeBytes { try Self.vmFlags(of: $0.baseAddress!) }
            #expect(flags.contains("dd"), "MADV_DONTDUMP: \(flags)")
            if secret.isLocked {
                #expect(flags.contains("lo"), "mlocked: \(flags)")
                #expect(try SecretMemoryTests.lockedKilobytes() >= before + 4)
            } else {
                #expect(SecretMemory.lockNote != nil)
            }
        }
        #expect(try SecretMemoryTests.lockedKilobytes() == before, "unlocked (and zeroed) when released")
    }

    @Test("a dir host's secrets and its rendered files live in locked pages; nothing stays locked after the job")
    func hostFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("piflash-secmem-\(getpid())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let secrets = directory.appendingPathComponent("secrets")
        try FileManager.default.createDirectory(at: secrets, withIntermediateDirectories: true)
        try Data("home network".utf8).write(to: secrets.appendingPathComponent("wifi_ssid"))
        try Data("correct horse battery".utf8).write(to: secrets.appendingPathComponent("wifi_psk"))
        let hostPath = directory.appendingPathComponent("pi.toml").path
        try """
            [image]
            path = "/nonexistent.img"
            [secrets]
            dir = "secrets"
            [[files]]
            path = "/var/lib/bootstrap/wifi.env"
            mode = "0600"
            env = { WIFI_SSID = "wifi_ssid", WIFI_PSK = "wifi_psk" }
            """.write(toFile: hostPath, atomically: true, encoding: .utf8)
        let before = try SecretMemoryTests.lockedKilobytes()
        do {
            let host = try HostFile.load(path: hostPath)
            let values = try HostSecrets.load(for: host, identities: [])
            #expect(SecretMemory.isNonDumpable, "loading secrets makes the process non-dumpable")
            let bootstrap = try host.bootstrap(secrets: values)
            let file = try #require(bootstrap.files.first)
            #expect(String(decoding: file.content, as: UTF8.self)
                == "WIFI_PSK=\"correct horse battery\"\nWIFI_SSID=\"home network\"\n", "variables in name order")
            for secret in [file.secret, values.secret("wifi_psk")!, values.secret("wifi_ssid")!] {
                let flags = try secret.withUnsafeBytes { try Self.vmFlags(of: $0.baseAddress!) }
                #expect(flags.contains("dd"), "\(flags)")
                #expect(!secret.isLocked || flags.contains("lo"), "\(flags)")
            }
            if values.isLocked {
                #expect(try SecretMemoryTests.lockedKilobytes() >= before + 12, "three secrets, a page each at least")
            }
        }
        #expect(try SecretMemoryTests.lockedKilobytes() == before, "released (zeroed and unlocked) with the job")
    }
}
