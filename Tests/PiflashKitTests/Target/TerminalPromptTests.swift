#if canImport(Glibc)
import Glibc
#endif
import PiflashKit
import Testing

/// A real pseudo-terminal: the prompt opens the slave side as its "/dev/tty", the test types on
/// the master side.
final class PseudoTerminal {
    let master: Int32
    let slavePath: String

    init() throws {
        // posix_openpt/grantpt/unlockpt/ptsname, spelled as the kernel interface they wrap
        // (glibc hides them from Swift without _XOPEN_SOURCE).
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        var unlock: Int32 = 0
        var number: UInt32 = 0
        let TIOCSPTLCK: UInt = 0x4004_5431, TIOCGPTN: UInt = 0x8004_5430
        guard master >= 0, ioctl(master, TIOCSPTLCK, &unlock) == 0, ioctl(master, TIOCGPTN, &number) == 0 else {
            throw PiflashError.system("open", errno: errno, path: "/dev/ptmx", what: "cannot open a pseudo-terminal")
        }
        slavePath = "/dev/pts/\(number)"
    }

    deinit { close(master) }

    func type(_ text: String) {
        writeAll(text, to: master)
    }

    /// What the program wrote to the terminal so far (non-blocking).
    func screen() -> String {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var descriptor = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
        while poll(&descriptor, 1, 0) > 0 {
            let n = buffer.withUnsafeMutableBytes { read(master, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buffer[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

@Suite("Questions on the terminal")
struct TerminalPromptTests {
    let disks = [
        DiskDescription(devnode: "/dev/sdb", sysname: "sdb", model: "SD/MMC", vendor: "Generic-", serial: "058F63626420",
                        size: 3_965_190_144, bus: .usb, removable: true),
        DiskDescription(devnode: "/dev/mmcblk0", sysname: "mmcblk0", model: "SN64G", serial: "0x535809eb",
                        size: 63_864_569_856, bus: .mmc),
    ]

    @Test("without a terminal nothing is asked")
    func noTerminal() {
        #expect(!TerminalPrompt(path: "/nonexistent/tty").isInteractive)
    }

    @Test("confirmation needs the word yes")
    func confirm() throws {
        let terminal = try PseudoTerminal()
        let prompt = TerminalPrompt(path: terminal.slavePath)
        #expect(prompt.isInteractive)
        terminal.type("yes\n")
        #expect(try prompt.confirm(disks[0], summary: disks[0].summaryLines))
        let screen = terminal.screen()
        #expect(screen.contains("Target: /dev/sdb"))
        #expect(screen.contains("serial:  058F63626420"))
        #expect(screen.contains("Everything on /dev/sdb will be overwritten"))
        terminal.type("y\n")
        #expect(try prompt.confirm(disks[0], summary: []) == false, "only 'yes' confirms")
        terminal.type("YES\n")
        #expect(try prompt.confirm(disks[0], summary: []))
    }

    @Test("choosing among several cards by number or name")
    func choose() throws {
        let terminal = try PseudoTerminal()
        let prompt = TerminalPrompt(path: terminal.slavePath)
        terminal.type("7\n2\n")
        #expect(try prompt.choose(disks)?.devnode == "/dev/mmcblk0")
        let screen = terminal.screen()
        #expect(screen.contains("1) /dev/sdb") && screen.contains("2) /dev/mmcblk0"))
        #expect(screen.contains("Please answer with a number"))
        terminal.type("/dev/sdb\n")
        #expect(try prompt.choose(disks)?.devnode == "/dev/sdb")
        terminal.type("\n")
        #expect(try prompt.choose(disks) == nil, "an empty answer cancels")
    }
}
