import Crypto
import Foundation
import PiflashPlatform

/// Which bytes of an image a flash puts on the card and reads back: every byte (`--full`), or the
/// image's mapped ranges (``ImageMap``) — the bytes any reader of its filesystems can see — plus
/// the whole head, which is written last. The writer, the read-back, the journal and `verify`
/// all follow the same plan.
public struct WritePlan: Sendable, Equatable {
    /// The ranges written, sorted and disjoint, each a multiple of ``unit`` except where the image
    /// ends; nil when every byte is written.
    public let ranges: [Range<UInt64>]?
    /// The image's size (known when the plan comes from a map).
    public let imageBytes: UInt64?
    /// Why the plan writes everything (`--full`, or the map could not be made), for the log.
    public let fullBecause: String?

    /// Ranges are rounded outward to this: small gaps are written rather than skipped, so writes
    /// stay large enough for a card to take them at full speed.
    public static let unit: UInt64 = 64 << 10

    /// Every byte.
    public static func full(because reason: String, imageBytes: UInt64? = nil) -> WritePlan {
        WritePlan(ranges: nil, imageBytes: imageBytes, fullBecause: reason)
    }

    /// The map's ranges rounded outward to ``unit``, and the head (the first MiB).
    public init(map: ImageMap) {
        var set = ByteRanges(map.ranges(alignedTo: Self.unit))
        set.insert(0..<min(UInt64(DirectWriter.headSize), map.imageBytes))
        self.init(ranges: set.ranges, imageBytes: map.imageBytes, fullBecause: nil)
    }

    /// A plan from recorded ranges (a journal entry).
    public init(ranges: [Range<UInt64>]?, imageBytes: UInt64?, fullBecause: String?) {
        self.ranges = ranges
        self.imageBytes = imageBytes
        self.fullBecause = fullBecause
    }

    /// The plan for flashing `image`: every byte with `full`, else its map (a `map` phase: for a
    /// compressed image a decompression pass over its first MiB up to the root filesystem's
    /// bitmaps; the whole stream when the format does not tell the size).
    ///
    /// - Throws: the mapper's exit-2 errors for an unreadable or corrupt image.
    /// - Parameter verb: what is done with the planned bytes, for the note (`writing`, `comparing`).
    public static func make(
        for image: ImageSource, full: Bool, verb: String = "writing", reporter: Reporter
    ) throws -> WritePlan {
        if full { return .full(because: "--full") }
        reporter.begin("map", total: nil)
        let started = monotonicSeconds()
        let mapped = try ImageMapper.map(image) { streamed, total in
            reporter.progress("map", done: streamed, total: total)
        }
        let plan = WritePlan(map: mapped.map)
        reporter.end("map", bytes: mapped.pass.streamedBytes, seconds: monotonicSeconds() - started)
        if let planned = plan.plannedBytes, mapped.map.imageBytes > 0 {
            let percent = Double(planned) * 100 / Double(mapped.map.imageBytes)
            reporter.note(
                "\(verb) the \(formatBytes(planned)) of \(formatBytes(mapped.map.imageBytes)) the image's filesystems use "
                    + "(\(String(format: "%.0f", percent)) %); --full does every byte")
        }
        return plan
    }

    /// Whether only some bytes are written.
    public var isSparse: Bool { ranges != nil }

    /// Bytes written: the planned ranges, or the whole image when known.
    public var plannedBytes: UInt64? {
        if let ranges { return ranges.reduce(0) { $0 + UInt64($1.count) } }
        return imageBytes
    }

    /// The ranges not written, inside the image (nothing for a full plan).
    public var skippedRanges: [Range<UInt64>] {
        guard let ranges, let imageBytes else { return [] }
        return ByteRanges([0..<imageBytes]).subtracting(ByteRanges(ranges)).ranges
    }

    /// A cursor handing out the planned parts of successive chunks.
    func cursor() -> Cursor { Cursor(ranges: ranges) }

    /// Walks the plan alongside a stream cut into ascending chunks.
    struct Cursor {
        let ranges: [Range<UInt64>]?
        private var index = 0

        init(ranges: [Range<UInt64>]?) { self.ranges = ranges }

        /// The planned parts of `span` (ascending, non-overlapping calls), clipped to it; nil when
        /// every byte is planned.
        mutating func parts(of span: Range<UInt64>) -> [Range<UInt64>]? {
            guard let ranges else { return nil }
            while index < ranges.count, ranges[index].upperBound <= span.lowerBound { index += 1 }
            var parts: [Range<UInt64>] = []
            var look = index
            while look < ranges.count, ranges[look].lowerBound < span.upperBound {
                let part = ranges[look].clamped(to: span)
                if !part.isEmpty { parts.append(part) }
                look += 1
            }
            return parts
        }
    }
}

/// The digests of what a plan covers, taken the same way over what was written and what was read
/// back: a CRC-32 per chunk (of the chunk's planned parts, to name the first bad chunk quickly) and
/// a SHA-256 per planned range (what the journal keeps, so `verify --host` can check the range
/// later). A full plan is one range, the whole image.
struct PlanDigests: Sendable, Equatable {
    /// CRC-32 per chunk index; chunks without planned bytes have none.
    var chunkCRCs: [Int: UInt32] = [:]
    /// SHA-256 per planned range, in order.
    var rangeSHA256: [[UInt8]] = []
}

/// Accumulates ``PlanDigests`` from chunks in stream order.
struct PlanDigester {
    private var digests = PlanDigests()
    private var rangeHasher: StreamHasher?
    private let ranges: [Range<UInt64>]?
    private var rangeIndex = 0

    private let hashesFullPlan: Bool

    /// - Parameter hashFullPlan: whether a full plan's one range is hashed too (the read-back
    ///   does; the writer has the image's digest already).
    init(plan: WritePlan, hashFullPlan: Bool) {
        ranges = plan.ranges
        hashesFullPlan = hashFullPlan
    }

    /// Adds a chunk's planned parts (`parts` with their bytes).
    mutating func add(index: Int, parts: [(range: Range<UInt64>, bytes: UnsafeRawBufferPointer)]) {
        var crc: UInt32 = 0
        for part in parts {
            crc = crc32(crc, part.bytes)
            if let ranges {
                var position = part.range.lowerBound
                var consumed = 0
                while position < part.range.upperBound {
                    while rangeIndex < ranges.count, ranges[rangeIndex].upperBound <= position { finishRange() }
                    guard rangeIndex < ranges.count else { break }
                    let range = ranges[rangeIndex]
                    let upTo = min(range.upperBound, part.range.upperBound)
                    if rangeHasher == nil { rangeHasher = StreamHasher() }
                    let count = Int(upTo - position)
                    rangeHasher!.update(UnsafeRawBufferPointer(rebasing: part.bytes[consumed..<(consumed + count)]))
                    consumed += count
                    position = upTo
                    if upTo == range.upperBound { finishRange() }
                }
            } else if hashesFullPlan {
                if rangeHasher == nil { rangeHasher = StreamHasher() }
                rangeHasher!.update(part.bytes)
            }
        }
        if !parts.isEmpty { digests.chunkCRCs[index] = crc }
    }

    private mutating func finishRange() {
        digests.rangeSHA256.append((rangeHasher ?? StreamHasher()).finalize())
        rangeHasher = nil
        rangeIndex += 1
    }

    /// The digests; a range still open (the stream ended inside it) is closed.
    mutating func finalize() -> PlanDigests {
        if let ranges {
            while rangeIndex < ranges.count { finishRange() }
        } else if hashesFullPlan {
            digests.rangeSHA256 = [(rangeHasher ?? StreamHasher()).finalize()]
        }
        return digests
    }
}
