/// Every write libext2fs made through the recording I/O manager, in order, with its bytes:
/// what an injection changed on the card, so the card can be checked later against the image
/// outside these ranges and against their digests inside them.
///
/// Offsets are relative to the filesystem's first byte. Used from the one thread that owns the
/// ``Ext2Filesystem``.
public final class Ext2WriteLog {
    private var writes: [(offset: UInt64, bytes: [UInt8])] = []

    public init() {}

    /// Called by the I/O manager for each completed write; `data` nil means zeroed out.
    func record(offset: UInt64, length: UInt64, data: UnsafeRawPointer?) {
        let count = Int(length)
        let bytes = data.map { Array(UnsafeRawBufferPointer(start: $0, count: count)) }
            ?? [UInt8](repeating: 0, count: count)
        writes.append((offset, bytes))
    }

    /// Records a write as the I/O manager would (for tests of the merge).
    public func recordForTesting(offset: UInt64, bytes: [UInt8]) {
        writes.append((offset, bytes))
    }

    /// How many writes were recorded.
    public var count: Int { writes.count }

    /// The final content of every byte written: disjoint ranges in ascending order, adjacent or
    /// overlapping writes merged, later writes over earlier ones.
    public var ranges: [(offset: UInt64, bytes: [UInt8])] {
        let spans = writes.map { (start: $0.offset, end: $0.offset + UInt64($0.bytes.count)) }.sorted { $0.start < $1.start }
        var merged: [(start: UInt64, end: UInt64)] = []
        for span in spans where span.end > span.start {
            if let last = merged.last, span.start <= last.end {
                merged[merged.count - 1].end = max(last.end, span.end)
            } else {
                merged.append(span)
            }
        }
        var contents = merged.map { [UInt8](repeating: 0, count: Int($0.end - $0.start)) }
        for write in writes where !write.bytes.isEmpty {
            // The merged range holding this write: the last one starting at or before it.
            var low = 0, high = merged.count - 1
            while low < high {
                let mid = (low + high + 1) / 2
                if merged[mid].start <= write.offset { low = mid } else { high = mid - 1 }
            }
            let at = Int(write.offset - merged[low].start)
            contents[low].replaceSubrange(at..<(at + write.bytes.count), with: write.bytes)
        }
        return zip(merged, contents).map { ($0.start, $1) }
    }
}
