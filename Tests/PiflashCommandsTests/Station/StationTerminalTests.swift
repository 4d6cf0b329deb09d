import Foundation
import Testing

/// A tmux session: a real terminal emulator whose screen `capture-pane` reads back as text.
final class TmuxSession {
    let socket = "piflash-test-\(getpid())-\(UUID().uuidString.prefix(6))"
    let name = "station"
    let width: Int
    let height: Int
    /// The tmux server's pid and the pane's first program's (the station), for the cleanup.
    private var pids: [pid_t] = []

    init(width: Int, height: Int, command: String) throws {
        self.width = width
        self.height = height
        // The tmux server (and the station in its pane) must not inherit the test's pipes, or
        // reading them to the end would never finish: every descriptor above 2 is closed first.
        try Shell.sh("for fd in /proc/$$/fd/*; do n=${fd##*/}; if [ \"$n\" -gt 2 ]; then eval \"exec $n>&-\" 2>/dev/null || true; fi; done; "
                     + "tmux -L \(socket) -f /dev/null new-session -d -s \(name) -x \(width) -y \(height) \(Self.quote(command))"
                     + " </dev/null >/dev/null 2>&1 && tmux -L \(socket) set-option -t \(name) remain-on-exit on </dev/null >/dev/null 2>&1")
        let ids = try Shell.sh("tmux -L \(socket) display-message -p -t \(name) '#{pid} #{pane_pid}'")
        pids = ids.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    static func quote(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// The screen as text, one string per row (trailing blanks trimmed).
    func screen() -> [String] {
        let text = (try? Shell.sh("tmux -L \(socket) capture-pane -p -t \(name)")) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).map {
            String($0).replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
    }

    /// Waits (bounded, re-reading the screen) until `predicate` holds for it.
    func waitFor(timeout: TimeInterval, _ predicate: ([String]) -> Bool) -> [String]? {
        Web.waitFor(timeout: timeout, every: 0.1) { () -> [String]? in
            let screen = screen()
            return predicate(screen) ? screen : nil
        }
    }

    func sendKeys(_ keys: String) { _ = try? Shell.run(["tmux", "-L", socket, "send-keys", "-t", name, keys]) }

    /// Whether the pane's program has exited (remain-on-exit keeps the pane).
    var paneDead: Bool {
        (try? Shell.sh("tmux -L \(socket) display-message -p -t \(name) '#{pane_dead}'"))?.hasPrefix("1") == true
    }

    /// Ends the server and what runs in it. The server inherits the test runner's blocked signals
    /// (SIGCHLD among them), so it may never reap its pane and never exit on `kill-server` alone:
    /// both are then killed by pid.
    deinit {
        _ = try? Shell.run(["tmux", "-L", socket, "kill-server"])
        for pid in pids.reversed() where pid > 1 { kill(pid, SIGKILL) }
        unlink("/tmp/tmux-\(getuid())/\(socket)")
    }
}

/// The station's own view for a person: on a terminal (tmux), a header and per slot the host,
/// the card and a progress bar redrawn in place; not on a terminal, plain log lines.
@Suite("piflash station: the terminal view", .serialized,
       .enabled(if: StationEnvironment.available, "needs root, loop devices and systemd-udevd"))
struct StationTerminalTests {
    @Test("on a terminal: header, host, card, a moving progress bar with rate and ETA, redrawn in place in the terminal's width; Ctrl-C stops it")
    func terminalView() throws {
        let fixture = try StationFixture(slots: [252], hosts: ["pi-01"])
        let slot = fixture.loops[0]
        let group = try fixture.throttle([(slot.majorMinor, 2_000_000, nil)])
        let width = 120
        let tmux = try TmuxSession(width: width, height: 30, command:
            "echo $$ > \(group)/cgroup.procs && exec '\(Shell.piflash)' station --config '\(fixture.configPath)'")

        let idle = tmux.waitFor(timeout: 60) { $0.contains { $0.hasPrefix("piflash station ") } && $0.contains("   insert a card") }
        let ready = try #require(idle, "the idle screen: \(tmux.screen())")
        #expect(ready.contains { $0.hasPrefix("piflash station ") && $0.hasSuffix("· hosts \(fixture.hostsDir)") }, "\(ready)")
        #expect(ready.contains("queue: 0 done, 0 flashing, 1 remaining of 1"), "\(ready)")
        #expect(ready.contains("TA  idle"))

        let card = try fixture.blankCard("card")
        try slot.insert(card)
        func writeLine(_ screen: [String]) -> String? {
            screen.first { $0.hasPrefix("   write   [") && $0.contains("%") && $0.contains("/s") && $0.contains("ETA ") }
        }
        func percent(_ line: String) -> Int? {
            line.split(separator: "]").last?.split(separator: "%").first.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        }
        let first = try #require(tmux.waitFor(timeout: 120) { writeLine($0) != nil }, "a progress bar: \(tmux.screen())")
        let firstPercent = try #require(percent(writeLine(first)!))
        let later = tmux.waitFor(timeout: 120) { screen in
            writeLine(screen).flatMap(percent).map { $0 > firstPercent } ?? false
        }
        let moving = try #require(later, "the bar moves: \(tmux.screen())")
        let bar = writeLine(moving)!
        #expect(bar.contains("#") && bar.contains("-"), "a bar partly filled: \(bar)")
        #expect(moving.contains { $0.hasPrefix("TA  flashing  pi-01  ") && $0.contains(formatCardSize(card)) && $0.hasSuffix(slot.path) },
                "host, card and device: \(moving)")
        #expect(moving.contains("queue: 0 done, 1 flashing, 0 remaining of 1"))
        // Redrawn in place: one header on the screen, however many redraws; no line wider than the terminal.
        #expect(moving.filter { $0.hasPrefix("piflash station ") }.count == 1, "\(moving)")
        #expect(moving.filter { $0.hasPrefix("TA  ") }.count == 1)
        #expect(moving.allSatisfy { $0.count < width })

        fixture.unthrottle(group, slot.majorMinor)
        // The queue line follows within a second of the result (it is read from the journal).
        let done = tmux.waitFor(timeout: 300) {
            $0.contains { $0.hasPrefix("   ✓ verified ") } && $0.contains("queue: 1 done, 0 flashing, 0 remaining of 1")
        }
        let finished = try #require(done, "the card is verified and the queue done: \(tmux.screen())")
        #expect(finished.contains { $0.hasPrefix("TA  verified  pi-01  ") })
        #expect(finished.filter { $0.hasPrefix("piflash station ") }.count == 1)

        tmux.sendKeys("C-c")
        #expect(tmux.waitFor(timeout: 60) { _ in tmux.paneDead } != nil, "Ctrl-C stops the station")
        let history = try Shell.run([Shell.piflash, "history", "--journal", fixture.journal, "--json"])
        #expect(history.stdout.contains("\"ok\":true"))
    }

    @Test("not on a terminal: a log line per change (ready, flashing with the card, verified), no escape sequences")
    func logView() throws {
        let fixture = try StationFixture(slots: [253], hosts: ["pi-01"])
        let station = try PiflashProcess(["station", "--config", fixture.configPath])
        defer { if station.isRunning { kill(station.pid, SIGKILL) } }
        #expect(station.waitForLine(timeout: 60) { $0.hasPrefix("station ready: 1 slot(s)") } != nil)
        try fixture.loops[0].insert(try fixture.blankCard("card"))
        let flashing = station.waitForLine(timeout: 120) { $0.hasPrefix("TA  flashing pi-01") }
        #expect(flashing != nil)
        #expect(station.waitForLine(timeout: 300) { $0.hasPrefix("TA  verified ✓ pi-01") } != nil)
        kill(station.pid, SIGTERM)
        let end = station.finish(timeout: 60)
        #expect(end.status == 0)
        #expect(!end.lines.contains { $0.contains("\u{1B}") }, "no terminal escapes in a log")
        #expect(end.lines.contains { $0.hasPrefix("SIGTERM: no new cards") })
    }

    private func formatCardSize(_ file: String) -> String {
        let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? UInt64) ?? 0
        return String(format: "%.1f MiB", Double(size) / 1_048_576)
    }
}
