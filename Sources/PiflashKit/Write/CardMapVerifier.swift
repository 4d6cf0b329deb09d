#if canImport(Glibc)
import Glibc
#endif
import Crypto
import PiflashPlatform

/// Where a provisioned card first differs from its journal record.
public struct CardMapMismatch: Sendable, Equatable {
    /// The first bad byte.
    public var offset: UInt64
    /// Whether it lies in an injected block (checked against its digest) rather than in the image.
    public var inInjectedBlock: Bool

    public init(offset: UInt64, inInjectedBlock: Bool) {
        self.offset = offset
        self.inInjectedBlock = inInjectedBlock
    }
}

/// Checks a provisioned card against its map (SPEC `verify --host`): every image byte outside the
/// injected blocks against the image, and every injected block against its recorded digest — the
/// head included. Reads the card with `O_DIRECT` after dropping its caches alongside the image,
/// through the same stream as `verify IMAGE` (``ImageComparer``).
public struct CardMapVerifier: Sendable {
    public var chunkSize: Int
    public var depth: Int

    public init(chunkSize: Int = 4 << 20, depth: Int = 4) {
        self.chunkSize = chunkSize
        self.depth = depth
    }

    /// What the check found.
    public struct Outcome: Sendable {
        /// SHA-256 of the uncompressed image.
        public var imageSHA256: [UInt8]
        public var bytes: UInt64
        /// The first bad byte, or nil when the card holds exactly what was recorded.
        public var mismatch: CardMapMismatch?
        public var seconds: Double
    }

    /// Compares `target` with `image` and `blocks`.
    ///
    /// - Parameters:
    ///   - blocks: the injected blocks, ascending and disjoint, inside the image's length.
    ///   - key: the host's digest key for keyed blocks (nil when the blocks are plain SHA-256).
    /// - Throws: exit 2 when keyed blocks need a key that is not given, read errors (exit 1), a
    ///   corrupt image (exit 2), a card shorter than the image (exit 4).
    public func verify(
        _ image: ImageSource, plan: WritePlan = .full(because: "default"), blocks: [InjectedBlock], key: DigestKey?,
        target: borrowing DeviceFile, reporter: Reporter
    ) throws -> Outcome {
        if blocks.contains(where: \.keyed) && key == nil {
            throw PiflashError.usage("the record's injected blocks have keyed digests, but no digest key was derived from the host's secrets")
        }
        var mismatch: CardMapMismatch?
        var blockIndex = 0
        var pending: [UInt8] = []
        // A sparse card is checked where it was written, and where the injection wrote (it
        // allocates from the free space the write skipped).
        var checked = plan
        if let ranges = plan.ranges {
            checked = WritePlan(
                ranges: ByteRanges(ranges + blocks.map { $0.offset..<$0.end }).ranges, imageBytes: plan.imageBytes,
                fullBecause: nil)
        }
        let streamed = try ImageAndCardStream(depth: depth, chunkSize: chunkSize)
            .run(image, target: target, plan: checked, reporter: reporter) { range, imageBytes, card in
                mismatch = compare(device: card, image: imageBytes, at: range.lowerBound, blocks: blocks,
                                   blockIndex: &blockIndex, pending: &pending, key: key)
                return mismatch == nil
            }
        if mismatch == nil, blockIndex < blocks.count {
            // A block past the image's end: the record does not fit this image.
            mismatch = CardMapMismatch(offset: blocks[blockIndex].offset, inInjectedBlock: true)
        }
        return Outcome(imageSHA256: streamed.sha256, bytes: streamed.bytes, mismatch: mismatch, seconds: streamed.seconds)
    }

    /// Compares one chunk at `start`: bytes outside the blocks byte for byte, bytes inside them
    /// gathered into `pending` and checked against the block's digest when the block ends.
    func compare(
        device: UnsafeRawBufferPointer, image: UnsafeRawBufferPointer, at start: UInt64, blocks: [InjectedBlock],
        blockIndex: inout Int, pending: inout [UInt8], key: DigestKey?
    ) -> CardMapMismatch? {
        let end = start + UInt64(device.count)
        var position = start
        while position < end {
            if blockIndex < blocks.count, blocks[blockIndex].offset <= position {
                let block = blocks[blockIndex]
                let upTo = min(end, block.end)
                let from = Int(position - start), to = Int(upTo - start)
                pending.append(contentsOf: device[from..<to])
                position = upTo
                if upTo == block.end {
                    if !block.digest.matches(pending, key: key) {
                        // Only a digest is recorded: the block (at most 4 KiB) is as precise as it gets.
                        return CardMapMismatch(offset: block.offset, inInjectedBlock: true)
                    }
                    pending.removeAll(keepingCapacity: true)
                    blockIndex += 1
                }
                continue
            }
            let nextBlock = blockIndex < blocks.count ? min(blocks[blockIndex].offset, end) : end
            let from = Int(position - start), to = Int(nextBlock - start)
            if memcmp(device.baseAddress! + from, image.baseAddress! + from, to - from) != 0 {
                for i in from..<to where device[i] != image[i] {
                    return CardMapMismatch(offset: start + UInt64(i), inInjectedBlock: false)
                }
            }
            position = nextBlock
        }
        return nil
    }
}

extension InjectedBlocks {
    /// Checks each recorded block on a card against its digest (the station's "already
    /// provisioned" check: quick, no image needed).
    ///
    /// - Returns: the first block whose bytes do not match, or nil.
    public static func firstMismatch(
        _ blocks: [InjectedBlock], on target: borrowing DeviceFile, key: DigestKey?
    ) throws -> InjectedBlock? {
        try target.dropCaches()
        for block in blocks {
            let bytes = try readRange(descriptor: target.descriptor, path: target.path, offset: block.offset, length: Int(block.length))
            if !block.digest.matches(bytes, key: key) { return block }
        }
        return nil
    }
}
