import Foundation
import PiflashPlatform
import Synchronization
import Testing

/// The ring behind the writer, the read-back and `verify`, in-process: chunks arrive in order
/// through every stage, never more than `depth` buffers are out, the first error stops every stage
/// and is the one thrown, and a last stage that stops early releases the others.
@Suite("the ring pipeline")
struct RingPipelineTests {
    /// A counter shared by stages.
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    /// A source stage writing `count` chunks of `size` bytes, each filled with its index.
    static func source(count: Int, size: Int, failAt: Int? = nil) -> (RingPipeline.Port) throws -> Void {
        { port in
            for index in 0..<count {
                guard var chunk = port.next() else { return }
                if index == failAt { throw PiflashError.failure("source failed at \(index)") }
                let buffer = port.ring.buffer(chunk)
                buffer.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: index))
                chunk.index = index
                chunk.offset = UInt64(index * size)
                chunk.length = size
                chunk.used = size
                guard port.pass(chunk) else { return }
            }
        }
    }

    @Test("chunks pass every stage in order with their bytes, and at most depth buffers are out at once")
    func orderAndBound() throws {
        let ring = RingPipeline(bufferSize: 4096, depth: 3)
        let out = Counter()
        let most = Counter()
        ring.stage { port in
            try Self.source(count: 50, size: 4096)(port)
        }
        ring.stage { port in
            while let chunk = port.next() {
                let now = out.value.add(1, ordering: .relaxed).newValue
                _ = most.value.max(now, ordering: .relaxed)
                // Let the source run ahead as far as it can.
                usleep(200)
                guard port.pass(chunk) else { return }
            }
        }
        var seen: [Int] = []
        try ring.finish { port in
            while let chunk = port.next() {
                #expect(port.ring.bytes(chunk).allSatisfy { $0 == UInt8(truncatingIfNeeded: chunk.index) })
                seen.append(chunk.index)
                out.value.subtract(1, ordering: .relaxed)
                port.pass(chunk)
            }
        }
        #expect(seen == Array(0..<50))
        #expect(most.value.load(ordering: .relaxed) <= 3, "never more than depth buffers held by the stages")
        #expect(most.value.load(ordering: .relaxed) >= 2, "the stages overlapped")
    }

    @Test("the first error of a stage stops the others and is what finish throws")
    func failure() {
        let ring = RingPipeline(bufferSize: 4096, depth: 2)
        ring.stage { port in try Self.source(count: 100, size: 4096, failAt: 7)(port) }
        ring.stage { port in
            while let chunk = port.next() { guard port.pass(chunk) else { return } }
        }
        var received = 0
        #expect {
            try ring.finish { port in
                while let chunk = port.next() {
                    received += 1
                    port.pass(chunk)
                }
            }
        } throws: { error in
            (error as? PiflashError)?.message == "source failed at 7"
        }
        #expect(received <= 7, "nothing after the failure")
    }

    @Test("a last stage that stops early, or throws, releases a source with more to send")
    func earlyStop() {
        for throwing in [false, true] {
            let ring = RingPipeline(bufferSize: 4096, depth: 2)
            ring.stage { port in try Self.source(count: 1000, size: 4096)(port) }
            let stopped: Result<Void, Error> = Result {
                try ring.finish { port in
                    guard let chunk = port.next() else { return }
                    port.pass(chunk)
                    if throwing { throw PiflashError.verification("stop") }
                }
            }
            // Reaching here at all is the point: the source, blocked with 999 chunks to go, was released.
            switch stopped {
            case .success: #expect(!throwing)
            case .failure(let error): #expect(throwing && (error as? PiflashError)?.message == "stop")
            }
        }
    }
}
