import Foundation
import PiflashKit
import PiflashSecrets
import Testing

/// The flash job's order and the card map, in-process on image files (no device needed).
@Suite("the flash job's order and the card map")
struct FlashOrderTests {
    /// A "disk image" of random bytes with an MBR signature in its head, so a head is recognisable.
    func image(in folder: HostsTempFolder, bytes: Int = 6 << 20) throws -> (path: String, content: [UInt8]) {
        var generator = SystemRandomNumberGenerator()
        var content = (0..<bytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
        content[510] = 0x55
        content[511] = 0xaa
        return (try folder.write("disk.img", content), content)
    }

    @Test("the head reaches the target only after the injection ran, and a failing injection leaves no file")
    func headLastInjectionFirst() throws {
        let folder = try HostsTempFolder()
        let (path, content) = try image(in: folder)
        let output = folder.path + "/out.img"
        let seenDuringInjection = Locked<[UInt8]>([])
        let recording = Injection { target, _ in
            // The card as the injection sees it: its partition tables zeroed, the head in memory.
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: target.path))
            let head = Array(try handle.read(upToCount: 1 << 20) ?? Data())
            try handle.close()
            seenDuringInjection.withLock { $0 = head }
            #expect(target.head == Array(content.prefix(1 << 20)), "the held head is the image's")
            return InjectionOutcome(files: [], blocks: [])
        }
        let job = FlashJob(image: try ImageSource(path: path), target: FlashTarget(kind: .output, path: output), injection: recording)
        let result = job.run(reporter: SilentReporter())
        #expect(result.ok, "\(result.error ?? "")")
        let during = seenDuringInjection.withLock { $0 }
        #expect(during.prefix(64 << 10).allSatisfy { $0 == 0 }, "no partition table on the target while injecting")
        #expect(during[(64 << 10)...] == content[(64 << 10)..<(1 << 20)] || during[(64 << 10)...].allSatisfy { $0 == 0 },
                "the rest of the head is not written before the end")
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: output))) == content, "after ok the target is the image")

        let failing = Injection { _, _ in throw PiflashError.failure("injection failed on purpose") }
        let failed = FlashJob(image: try ImageSource(path: path), target: FlashTarget(kind: .output, path: output), injection: failing)
            .run(reporter: SilentReporter())
        #expect(!failed.ok)
        #expect(!FileManager.default.fileExists(atPath: output), "an unfinished output file is removed")
    }

    @Test("the card map verifier: intact, a flipped image byte, a flipped injected byte, a keyed digest")
    func cardMap() throws {
        let folder = try HostsTempFolder()
        let (path, content) = try image(in: folder)
        var card = content
        // Two "injected" ranges: their bytes differ from the image's.
        let ranges: [(Int, Int)] = [(2 << 20 + 100, 4096 - 100), (3 << 20, 8192)]
        let key = DigestKey(raw: Array(repeating: 7, count: 32))
        var blocks: [InjectedBlock] = []
        for (start, length) in ranges {
            for i in start..<(start + length) { card[i] = card[i] ^ 0x33 }
            var at = start
            while at < start + length {
                let end = min(start + length, (at / 4096 + 1) * 4096)
                blocks.append(InjectedBlock(offset: UInt64(at), length: UInt64(end - at),
                                            digest: .of(card[at..<end], key: key)))
                at = end
            }
        }
        let cardPath = try folder.write("card.img", card)
        func check(_ bytes: [UInt8]) throws -> CardMapMismatch? {
            try folder.write("card.img", bytes)
            let file = try DeviceFile(path: cardPath, mode: .read, direct: false)
            let outcome = try CardMapVerifier(chunkSize: 1 << 20).verify(
                try ImageSource(path: path), blocks: blocks, key: key, target: file, reporter: SilentReporter())
            try file.close()
            #expect(outcome.imageSHA256 == Array(hexDecoded(sha256Hex(content))))
            return outcome.mismatch
        }
        #expect(try check(card) == nil)
        var body = card
        body[5 << 20 + 3] ^= 1
        #expect(try check(body) == CardMapMismatch(offset: 5 << 20 + 3, inInjectedBlock: false))
        var injected = card
        injected[3 << 20 + 5000] ^= 1
        #expect(try check(injected) == CardMapMismatch(offset: 3 << 20 + 4096, inInjectedBlock: true))
        var head = card
        head[446] ^= 1
        #expect(try check(head) == CardMapMismatch(offset: 446, inInjectedBlock: false))
        // Without the key, keyed digests cannot be checked: refused, not passed.
        let file = try DeviceFile(path: cardPath, mode: .read, direct: false)
        #expect(throws: PiflashError.self) {
            _ = try CardMapVerifier().verify(try ImageSource(path: path), blocks: blocks, key: nil, target: file, reporter: SilentReporter())
        }
        try file.close()
    }

    @Test("the write log merges overlapping writes, later bytes winning")
    func writeLogMerges() {
        let log = Ext2WriteLog()
        log.recordForTesting(offset: 100, bytes: [1, 1, 1, 1])
        log.recordForTesting(offset: 102, bytes: [2, 2, 2])
        log.recordForTesting(offset: 200, bytes: [3])
        log.recordForTesting(offset: 98, bytes: [4, 4, 4])
        let ranges = log.ranges
        #expect(ranges.count == 2)
        #expect(ranges[0].offset == 98 && ranges[0].bytes == [4, 4, 4, 1, 2, 2, 2])
        #expect(ranges[1].offset == 200 && ranges[1].bytes == [3])
    }
}

private func hexDecoded(_ hex: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        bytes.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}
