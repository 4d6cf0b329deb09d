/// What a Wi-Fi network name and passphrase must be for WPA-PSK (IEEE 802.11i): the one place
/// that decides, asked by host-file loading (`hosts --check`, `flash` before any card) and by
/// `hosts new`.
public enum WiFiRules {
    /// Why a value cannot be used, with a stable code (for `--json` and tests).
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        /// `psk_length`, `psk_character`, `psk_hex`, `ssid_length`.
        public var code: String
        public var description: String
    }

    /// A WPA passphrase: 8–63 printable ASCII characters (0x20–0x7e), or exactly 64 hex digits
    /// (the raw pre-shared key). Nil when valid.
    public static func pskProblem(_ psk: [UInt8]) -> Problem? {
        let isHex: (UInt8) -> Bool = { (0x30...0x39).contains($0) || (0x41...0x46).contains($0) || (0x61...0x66).contains($0) }
        if psk.count == 64 {
            if psk.allSatisfy(isHex) { return nil }
            return Problem(code: "psk_hex", description: "a 64-character Wi-Fi key must be 64 hex digits (a raw WPA key); a passphrase has 8–63 characters")
        }
        guard (8...63).contains(psk.count) else {
            return Problem(code: "psk_length", description: "a Wi-Fi passphrase has 8–63 characters (this one has \(psk.count)), or is 64 hex digits")
        }
        if let index = psk.firstIndex(where: { !(0x20...0x7e).contains($0) }) {
            return Problem(code: "psk_character", description: "a Wi-Fi passphrase holds printable ASCII characters only; character \(index + 1) is not one")
        }
        return nil
    }

    /// A Wi-Fi network name (SSID): 1–32 bytes. Nil when valid.
    public static func ssidProblem(_ ssid: [UInt8]) -> Problem? {
        guard (1...32).contains(ssid.count) else {
            return Problem(code: "ssid_length", description: "a Wi-Fi network name (SSID) has 1–32 bytes (this one has \(ssid.count))")
        }
        return nil
    }
}
