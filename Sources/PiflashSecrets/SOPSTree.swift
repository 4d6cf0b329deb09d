// The tree of a SOPS document as sops itself walks it: keys in file order, lists in order,
// scalars with the text sops hashes into the MAC.

/// One value of a SOPS document.
indirect enum SOPSNode {
    /// A scalar: its text as written, the bytes sops feeds to the MAC for it when it is stored
    /// unencrypted (`True`/`False` for booleans, Go's formatting for numbers), and whether it
    /// is a string (only strings can hold `ENC[…]` values).
    case scalar(text: String, macText: String, isString: Bool)
    /// A mapping, in file order.
    case mapping([(key: String, value: SOPSNode)])
    /// A list, in file order.
    case sequence([SOPSNode])
    /// A null value: sops neither decrypts nor hashes it.
    case null

    /// A string scalar.
    static func string(_ text: String) -> SOPSNode { .scalar(text: text, macText: text, isString: true) }

    /// The value at `key` of a mapping.
    subscript(key: String) -> SOPSNode? {
        guard case .mapping(let items) = self else { return nil }
        return items.first { $0.key == key }?.value
    }

    /// The text of a scalar, nil otherwise.
    var text: String? {
        guard case .scalar(let text, _, _) = self else { return nil }
        return text
    }

    /// The items of a list; a missing value or null is an empty list.
    var items: [SOPSNode] {
        switch self {
        case .sequence(let items): return items
        default: return []
        }
    }
}

/// Go's `strconv.FormatFloat(value, 'f', -1, 64)`: the shortest decimal that round-trips,
/// never in exponent form. sops hashes unencrypted floats in this form.
func goFormatFloat(_ value: Double) -> String {
    if value.isNaN { return "NaN" }
    if value.isInfinite { return value < 0 ? "-Inf" : "+Inf" }
    // Swift's description is also the shortest round-trip form, possibly with an exponent.
    var text = "\(value.magnitude)"
    var exponent = 0
    if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
        exponent = Int(text[text.index(after: e)...]) ?? 0
        text = String(text[..<e])
    }
    var integerPart = text
    var fraction = ""
    if let dot = text.firstIndex(of: ".") {
        integerPart = String(text[..<dot])
        fraction = String(text[text.index(after: dot)...])
    }
    var digits = integerPart + fraction
    var pointPosition = integerPart.count + exponent
    // Normalise: strip leading zeros (keeping the point position right).
    while digits.count > 1, digits.first == "0" {
        digits.removeFirst()
        pointPosition -= 1
    }
    while digits.count > 1, digits.last == "0", digits.count > pointPosition { digits.removeLast() }
    var result: String
    if pointPosition <= 0 {
        result = "0." + String(repeating: "0", count: -pointPosition) + digits
    } else if pointPosition >= digits.count {
        result = digits + String(repeating: "0", count: pointPosition - digits.count)
    } else {
        let index = digits.index(digits.startIndex, offsetBy: pointPosition)
        result = String(digits[..<index]) + "." + String(digits[index...])
    }
    if result.contains(".") {
        while result.last == "0" { result.removeLast() }
        if result.last == "." { result.removeLast() }
    }
    if digits == "0" { result = "0" }
    return (value < 0 && result != "0" ? "-" : (value.sign == .minus && value == 0 ? "-" : "")) + result
}
