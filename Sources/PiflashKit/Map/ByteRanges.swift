/// A set of byte offsets kept as sorted, non-overlapping, non-touching half-open ranges.
public struct ByteRanges: Sendable, Equatable {
    /// The ranges, sorted; neighbours never overlap or touch (they are merged).
    public private(set) var ranges: [Range<UInt64>] = []

    public init() {}

    /// The union of `ranges` (in any order, overlapping or not).
    public init<S: Sequence>(_ ranges: S) where S.Element == Range<UInt64> {
        let sorted = ranges.filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
        for range in sorted {
            if let last = self.ranges.last, range.lowerBound <= last.upperBound {
                if range.upperBound > last.upperBound { self.ranges[self.ranges.count - 1] = last.lowerBound..<range.upperBound }
            } else {
                self.ranges.append(range)
            }
        }
    }

    /// Bytes covered.
    public var count: UInt64 { ranges.reduce(0) { $0 + UInt64($1.count) } }

    /// Adds a range (union).
    public mutating func insert(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        self = ByteRanges(ranges + [range])
    }

    /// The union with another set.
    public func union(_ other: ByteRanges) -> ByteRanges { ByteRanges(ranges + other.ranges) }

    /// These bytes minus `other`'s.
    public func subtracting(_ other: ByteRanges) -> ByteRanges {
        var result: [Range<UInt64>] = []
        var cut = other.ranges[...]
        for range in ranges {
            var start = range.lowerBound
            while let first = cut.first, first.upperBound <= start { cut = cut.dropFirst() }
            var index = cut.startIndex
            while index < cut.endIndex, cut[index].lowerBound < range.upperBound {
                let hole = cut[index]
                if hole.lowerBound > start { result.append(start..<hole.lowerBound) }
                start = max(start, hole.upperBound)
                index += 1
            }
            if start < range.upperBound { result.append(start..<range.upperBound) }
        }
        return ByteRanges(result)
    }

    /// Only the bytes inside `limit`.
    public func clamped(to limit: Range<UInt64>) -> ByteRanges {
        ByteRanges(ranges.compactMap { range in
            let clamped = range.clamped(to: limit)
            return clamped.isEmpty ? nil : clamped
        })
    }

    /// Whether every byte of `range` is in the set.
    public func contains(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return true }
        // Binary search for the last range starting at or before range.lowerBound.
        var low = 0
        var high = ranges.count
        while low < high {
            let mid = (low + high) / 2
            if ranges[mid].lowerBound <= range.lowerBound { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return false }
        return ranges[low - 1].upperBound >= range.upperBound
    }

    /// Each range widened outward to multiples of `unit` (then merged), never past `limit`.
    public func roundedOutward(to unit: UInt64, limit: UInt64) -> ByteRanges {
        precondition(unit > 0, "a rounding unit of 0")
        return ByteRanges(ranges.map { range in
            let start = range.lowerBound / unit * unit
            let end = min(limit, (range.upperBound + unit - 1) / unit * unit)
            return start..<max(start, end)
        })
    }
}
