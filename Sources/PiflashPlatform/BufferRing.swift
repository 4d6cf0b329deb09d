#if canImport(Glibc)
import Glibc
#endif
import PiflashCore
import Synchronization

/// One chunk of a stream travelling round a ``RingPipeline``: which buffer of the ring holds it and
/// what it is. Only the stage holding a chunk touches its buffer; handing the chunk on hands the
/// buffer on.
public struct RingChunk: Sendable {
    /// The ring buffer holding the bytes.
    public let slot: Int
    /// The chunk's place in the stream (0, 1, 2…).
    public var index: Int = 0
    /// The stream offset of the buffer's first byte.
    public var offset: UInt64 = 0
    /// The stream bytes in the buffer (the rest of the buffer is padding or unused).
    public var length: Int = 0
    /// The bytes in the buffer that are valid for I/O (``length`` rounded up to a sector, for
    /// `O_DIRECT`).
    public var used: Int = 0
    /// The byte ranges of the stream (absolute offsets, inside this chunk) the chunk stands for
    /// when only part of it matters (a sparse write or read-back); nil for all of it.
    public var ranges: [Range<UInt64>]? = nil

    init(slot: Int) { self.slot = slot }

    /// The stream range the buffer's stream bytes cover.
    public var span: Range<UInt64> { offset..<(offset + UInt64(length)) }

    /// The parts of the chunk that matter: ``ranges``, or the whole ``span``.
    public var parts: [Range<UInt64>] { ranges ?? [span] }
}

/// The memory of a ring: `depth` buffers of `bufferSize` bytes, aligned for `O_DIRECT`, allocated
/// once and freed with the ring.
///
/// The one `@unchecked Sendable` of the pipelines: raw memory cannot prove who uses it, so the
/// ring's protocol does — a buffer is reached only through the ``RingChunk`` naming it, and a
/// chunk is held by exactly one stage at a time (it moves through ``Channel``s).
private final class RingMemory: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let bufferSize: Int
    let depth: Int

    init(bufferSize: Int, depth: Int) {
        precondition(bufferSize > 0 && bufferSize % 4096 == 0, "ring buffers are whole 4 KiB pages")
        var pointer: UnsafeMutableRawPointer?
        let rc = posix_memalign(&pointer, 4096, bufferSize * depth)
        precondition(rc == 0 && pointer != nil, "posix_memalign(\(bufferSize * depth)) failed")
        base = pointer!
        self.bufferSize = bufferSize
        self.depth = depth
    }

    deinit { free(base) }

    func buffer(_ slot: Int) -> UnsafeMutableRawBufferPointer {
        precondition(slot >= 0 && slot < depth, "no ring buffer \(slot)")
        return UnsafeMutableRawBufferPointer(start: base + slot * bufferSize, count: bufferSize)
    }
}

/// A stream pushed through a ring of aligned buffers by stages on their own threads: the one
/// pipeline behind the writer, the read-back and `verify`.
///
/// The stages form a loop of bounded channels: free buffers → first stage → … → last stage → free
/// buffers. The first stage takes empty chunks and fills them (decompressing, or reading a card);
/// each later stage takes the chunks in order, works on them (hashing, checksumming, writing,
/// comparing) and hands them on; the last stage's chunks go back to the free list. Never more than
/// `depth` buffers exist, so memory is flat whatever the stream's length. The first error of any
/// stage stops every stage and is what ``finish(_:)`` throws.
///
/// ``stage(_:)`` bodies are `sending` closures: the state a stage owns (a decompressor, a hasher)
/// moves to its thread, and Swift 6 checks that nothing else reaches it; what stages share is
/// `Sendable`. The last stage runs on the calling thread (where progress is reported) and may
/// use the caller's state.
public final class RingPipeline: Sendable {
    /// The size of each buffer.
    public let bufferSize: Int
    /// How many buffers the ring holds.
    public let depth: Int
    private let memory: RingMemory
    private let free: Channel<RingChunk>
    private let failure = Locked<PiflashError?>(nil)
    private let stopped = Atomic<Bool>(false)
    /// Every channel, the free list first; the last is the next stage's input.
    private let links: Locked<[Channel<RingChunk>]>
    private let workers = Locked<[WorkerThread]>([])

    /// - Parameters:
    ///   - bufferSize: bytes per buffer, a multiple of 4 KiB.
    ///   - depth: buffers in the ring (≥ 1).
    public init(bufferSize: Int, depth: Int) {
        precondition(depth > 0)
        self.bufferSize = bufferSize
        self.depth = depth
        memory = RingMemory(bufferSize: bufferSize, depth: depth)
        let free = Channel<RingChunk>(capacity: depth)
        for slot in 0..<depth { free.send(RingChunk(slot: slot)) }
        self.free = free
        links = Locked([free])
    }

    /// The buffer of `chunk`, for the stage holding it.
    public func buffer(_ chunk: RingChunk) -> UnsafeMutableRawBufferPointer { memory.buffer(chunk.slot) }

    /// The stream bytes of `chunk` (its first ``RingChunk/length`` bytes).
    public func bytes(_ chunk: RingChunk) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: memory.buffer(chunk.slot)[0..<chunk.length])
    }

    /// The bytes of `chunk` at stream offsets `range` (inside the chunk's buffer).
    public func bytes(_ chunk: RingChunk, in range: Range<UInt64>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= chunk.offset && range.upperBound <= chunk.offset + UInt64(bufferSize),
                     "\(range) is outside the chunk at \(chunk.offset)")
        let from = Int(range.lowerBound - chunk.offset)
        return UnsafeRawBufferPointer(rebasing: memory.buffer(chunk.slot)[from..<(from + range.count)])
    }

    /// One stage's view of the ring: the chunks coming in, and where they go next.
    public struct Port: Sendable {
        let input: Channel<RingChunk>
        let output: Channel<RingChunk>
        /// The pipeline, for the chunks' buffers.
        public let ring: RingPipeline

        /// The next chunk (for the first stage: an empty one to fill), or nil when the stream
        /// ended or the pipeline stopped.
        public func next() -> RingChunk? {
            guard !ring.isStopped, let chunk = input.receive() else { return nil }
            return chunk
        }

        /// Hands a chunk to the next stage. False when the pipeline stopped (then stop too).
        @discardableResult
        public func pass(_ chunk: RingChunk) -> Bool { output.send(chunk) }

        /// Gives a chunk's buffer back to the ring without passing it on (the first stage, for a
        /// buffer it took but had nothing to put in).
        public func giveBack(_ chunk: RingChunk) { ring.free.send(RingChunk(slot: chunk.slot)) }
    }

    /// Whether a stage failed (every stage stops at its next chunk).
    public var isStopped: Bool { stopped.load(ordering: .acquiring) }

    /// Starts a stage on its own thread, reading what the previous stage (or, for the first, the
    /// free list) hands on.
    ///
    /// - Parameter body: loops `while let chunk = port.next()`, works, `port.pass(chunk)`;
    ///   returning ends the stream for the next stage; throwing stops the pipeline.
    public func stage(_ body: sending @escaping (Port) throws -> Void) {
        let output = Channel<RingChunk>(capacity: depth)
        let input = links.withLock { links -> Channel<RingChunk> in
            let input = links[links.count - 1]
            links.append(output)
            return input
        }
        let port = Port(input: input, output: output, ring: self)
        let worker = WorkerThread { [self] in
            do {
                try body(port)
                output.close()
            } catch {
                fail(error)
            }
        }
        workers.withLock { $0.append(worker) }
    }

    /// Runs the last stage on the calling thread (its chunks go back to the free list), then waits
    /// for every stage.
    ///
    /// - Throws: the first error of any stage (as a ``PiflashError``).
    public func finish(_ body: (Port) throws -> Void) throws {
        let input = links.withLock { $0[$0.count - 1] }
        do {
            try body(Port(input: input, output: free, ring: self))
        } catch {
            fail(error)
        }
        // The stream is done (or stopped): wake every stage still waiting and wait for them.
        for link in links.withLock({ $0 }) { link.close() }
        for worker in workers.withLock({ $0 }) { worker.join() }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Records the first error and stops every stage.
    public func fail(_ error: Error) {
        failure.withLock { existing in
            if existing == nil { existing = error as? PiflashError ?? PiflashError.failure("\(error)") }
        }
        stopped.store(true, ordering: .releasing)
        for link in links.withLock({ $0 }) { link.close() }
    }
}
