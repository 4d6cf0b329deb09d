/// The host's bootstrap files as the step after a verified write: find the root partition on the
/// target itself, inject the files in place, and read them back from a fresh direct-I/O open with a
/// read-only consistency check (SPEC steps 5–6).
extension Injection {
    /// - Parameters:
    ///   - files: the rendered files (secrets in memory only).
    ///   - root: how the root partition is found (`NIXOS_SD` by default).
    public static func bootstrap(_ files: [BootstrapFile], root: RootSelector) -> Injection {
        Injection { targetPath, reporter in
            let partition = try RootPartition.locate(on: targetPath, selector: root)
            reporter.note("root filesystem: \(partition)")
            _ = try Ext4Patcher.inject(files, into: partition, on: targetPath, reporter: reporter)
            reporter.begin("check-files", total: nil)
            let started = monotonicSeconds()
            let verified = try InjectionVerifier.verify(files, root: partition, on: targetPath)
            reporter.end("check-files", bytes: UInt64(files.reduce(0) { $0 + $1.content.count }), seconds: monotonicSeconds() - started)
            return verified
        }
    }
}
