import Foundation
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
