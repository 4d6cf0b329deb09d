import Foundation
import Synchronization
import Testing

/// A loop device standing in for an SD card in a USB reader: over a sparse backing file named
/// `piflash-card-…`, which the runtime udev rule of ``CandidateTagging`` tags
/// `PIFLASH_CANDIDATE=1`, so the real safety policy accepts it. Detached at the end.
final class CandidateCard {
    let loop: LoopDevice
    var path: String { loop.path }

    convenience init(scratch: ScratchDirectory, size: UInt64) throws {
        try self.init(directory: scratch.path, size: size)
    }

    /// - Parameters:
    ///   - directory: where the backing file goes (e.g. a small tmpfs, for a dying card).
    init(directory: String, size: UInt64) throws {
        try #require(CandidateTagging.ready, "needs systemd-udevd")
        loop = try LoopDevice(backing: directory + "/piflash-card-\(UUID().uuidString.prefix(8))", size: size)
        try Shell.sh("udevadm trigger --action=change --settle \(loop.path) && udevadm settle")
        let tagged = try Shell.sh("udevadm info --query=property --name=\(loop.path)")
        try #require(tagged.contains("PIFLASH_CANDIDATE=1"), "the test rule tagged \(loop.path)")
    }
}

/// A real systemd-udevd and a runtime rule tagging only the loop devices over `piflash-card-*`
/// files, installed for a suite and removed afterwards.
struct CandidateTagging: SuiteTrait, TestScoping {
    /// One file per test process: other test runs on the machine add and remove their own.
    static let rulePath = "/run/udev/rules.d/99-piflash-commands-tests-\(getpid()).rules"
    static let rule = """
        # piflash command tests: tag only the loop devices the tests attach to their own card files.
        SUBSYSTEM=="block", KERNEL=="loop*", ENV{DEVTYPE}=="disk", ATTR{loop/backing_file}=="*/piflash-card-*", ENV{PIFLASH_CANDIDATE}="1"

        """

    /// Whether udevd runs (started here when installed but not running).
    static let ready: Bool = {
        guard Shell.isRoot else { return false }
        if (try? Shell.run(["udevadm", "control", "--ping"]))?.status == 0 { return true }
        guard FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd-udevd") else { return false }
        _ = try? Shell.run(["bash", "-c", "/lib/systemd/systemd-udevd --daemon </dev/null >/dev/null 2>&1"])
        return (try? Shell.run(["udevadm", "control", "--ping", "--timeout=10"]))?.status == 0
    }()

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard Self.ready else {
            try await function()
            return
        }
        // Suites that run in parallel share the rule: the first one in installs it, the last one out removes it.
        try Self.users.withLock { users in
            if users == 0 {
                try FileManager.default.createDirectory(atPath: "/run/udev/rules.d", withIntermediateDirectories: true)
                try Self.rule.write(toFile: Self.rulePath, atomically: true, encoding: .utf8)
                try Shell.sh("udevadm control --reload")
            }
            users += 1
        }
        defer {
            Self.users.withLock { users in
                users -= 1
                if users == 0 {
                    try? FileManager.default.removeItem(atPath: Self.rulePath)
                    _ = try? Shell.run(["udevadm", "control", "--reload"])
                }
            }
        }
        try await function()
    }

    private static let users = Mutex(0)

}

extension Trait where Self == CandidateTagging {
    /// Tags the suite's test cards as candidates through a runtime udev rule.
    static var candidateTagging: CandidateTagging { CandidateTagging() }
}
