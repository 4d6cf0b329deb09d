/// Parses sizes as people write them on the command line: `256G`, `256GiB`, `64GB`, `512M`,
/// `1T`, or a plain number of bytes. `K`, `M`, `G`, `T` and their `iB` forms are binary
/// (1024-based, as `--max-size` and lsblk mean them); `KB`, `MB`, `GB`, `TB` are decimal, as
/// card makers print them.
/// - Returns: the size in bytes, or nil when the text is not a size.
public func parseByteSize(_ text: String) -> UInt64? {
    let trimmed = text.trimmingSpaces()
    guard let unitStart = trimmed.firstIndex(where: { !$0.isNumber && $0 != "." }) else {
        return UInt64(trimmed)
    }
    let number = trimmed[..<unitStart]
    let unit = String(trimmed[unitStart...]).trimmingSpaces().lowercased()
    guard !number.isEmpty, let value = Double(number), value >= 0 else { return nil }
    let multiplier: Double
    switch unit {
    case "b": multiplier = 1
    case "k", "kib": multiplier = 1024
    case "m", "mib": multiplier = 1024 * 1024
    case "g", "gib": multiplier = 1024 * 1024 * 1024
    case "t", "tib": multiplier = 1024 * 1024 * 1024 * 1024
    case "kb": multiplier = 1e3
    case "mb": multiplier = 1e6
    case "gb": multiplier = 1e9
    case "tb": multiplier = 1e12
    default: return nil
    }
    let bytes = (value * multiplier).rounded()
    guard bytes < 1.8e19 else { return nil }
    return UInt64(bytes)
}
