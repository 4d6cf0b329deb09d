import Glibc
import PiflashPlatform

/// Where a flash goes: a card (a block device chosen and checked by the safety policy) or an
/// image file (`--output`).
public struct FlashTarget: Sendable {
    public enum Kind: Sendable { case device, output }
    public var kind: Kind
    /// The device node or the output file.
    public var path: String
    /// What the journal and the summary say about the card.
    public var model: String?
    public var serial: String?
    public var byPath: String?
    public var bus: String?
    /// The size the safety policy saw.
    public var size: UInt64?
    /// Whether to eject the card when done (`--no-eject` turns it off).
    public var eject: Bool

    public init(kind: Kind, path: String, model: String? = nil, serial: String? = nil, byPath: String? = nil,
                bus: String? = nil, size: UInt64? = nil, eject: Bool = true) {
        self.kind = kind
        self.path = path
        self.model = model
        self.serial = serial
        self.byPath = byPath
        self.bus = bus
        self.size = size
        self.eject = eject
    }
}

/// One flash, SPEC steps 3–7, in the order that makes the invariant true: **a target carries a
/// valid partition table only if every phase passed.**
///
/// Map the image (``ImageMapper``: the bytes its filesystems use; every byte with ``full``); open
/// the target exclusively with `O_DIRECT` and zero its partition tables; check its capacity;
/// stream the image's mapped ranges except its head (first MiB, held in memory), `fsync`; read that body back with
/// `O_DIRECT`; find the root partition from the held head and inject the host's files; drop caches,
/// reopen fresh, read every injected file and block back, `e2fsck -fn`; only then write the head,
/// `fsync`, and read it back; eject. A failure, signal, pulled card or power cut at any earlier
/// moment leaves the head zeroed (and an `--output` file is removed on failure).
public struct FlashJob: Sendable {
    public var image: ImageSource
    public var target: FlashTarget
    public var host: String?
    public var injection: Injection?
    public var hostKeyFingerprint: String?
    public var knownHostsLine: String?
    /// Write and verify every byte of the image (`--full`) instead of its mapped ranges.
    public var full = false
    /// Discard (`BLKDISCARD`) what a sparse write skips, where the card can. Off only in tests that
    /// must see a card keep its old bytes there (a loop device's discard makes them read as zeros).
    public var discard = true
    public var writer = DirectWriter()
    public var verifier = ReadBackVerifier()

    public init(image: ImageSource, target: FlashTarget, host: String? = nil, injection: Injection? = nil,
                hostKeyFingerprint: String? = nil, knownHostsLine: String? = nil) {
        self.image = image
        self.target = target
        self.host = host
        self.injection = injection
        self.hostKeyFingerprint = hostKeyFingerprint
        self.knownHostsLine = knownHostsLine
    }

    /// Runs the job. Never throws: failures are in the result, with the exit status.
    public func run(reporter: Reporter) -> FlashResult {
        var result = FlashResult()
        result.host = host
        result.image = image.path
        result.compression = image.compression.rawValue
        switch target.kind {
        case .device: result.device = target.path
        case .output: result.output = target.path
        }
        do {
            try execute(into: &result, reporter: reporter)
            result.ok = true
            result.hostKeyFingerprint = hostKeyFingerprint
            result.knownHostsLine = knownHostsLine
        } catch let error as PiflashError {
            result.fail(error)
        } catch {
            result.fail(PiflashError.failure("\(error)"))
        }
        return result
    }

    private func execute(into result: inout FlashResult, reporter: Reporter) throws {
        try image.checkStoredFileDigest(reporter: reporter)
        let plan = try WritePlan.make(for: image, full: full, reporter: reporter)
        let reader = try image.open()
        let file: DeviceFile
        switch target.kind {
        case .device:
            file = try DeviceFile(path: target.path, mode: .readWrite, direct: true, exclusive: true)
            if file.isReadOnly() {
                throw PiflashError.refused("\(target.path) is read-only", path: target.path,
                                           hint: "check the lock switch on the side of the card")
            }
            let size = try file.size()
            if size == 0 {
                throw PiflashError.refused("\(target.path) has no medium (size 0)", path: target.path, hint: "insert a card")
            }
            if let needed = image.uncompressedSize, needed > size {
                throw PiflashError.refused(
                    "\(target.path) (\(formatBytes(size))) is smaller than the image (\(formatBytes(needed)))", path: target.path)
            }
        case .output:
            file = try DeviceFile(path: target.path, mode: .createFile, direct: true)
        }
        var wroteAnything = false
        do {
            if target.kind == .device {
                try Interrupts.check("opening \(target.path)")
                wroteAnything = true
                reporter.begin("capacity", total: nil)
                let probeStarted = monotonicSeconds()
                try CapacityProbe.check(file, size: try file.size())
                reporter.end("capacity", bytes: 0, seconds: monotonicSeconds() - probeStarted)
            }
            try Interrupts.check("opening \(target.path)")
            wroteAnything = true
            // The body: everything but the head, which stays in memory.
            let written = try writer.write(
                from: reader, to: file, plan: plan, discard: discard, total: image.uncompressedSize, reporter: reporter)
            result.bytes = written.bytes
            result.imageBytes = written.bytes
            result.mappedBytes = written.writtenBytes
            result.writtenRanges = written.writtenRanges
            result.writeSeconds = written.seconds
            result.imageSHA256 = hexString(written.sha256)
            if let expected = image.expected, !expected.ofCompressedFile, expected.sha256 != result.imageSHA256 {
                throw PiflashError.usage(
                    "the image's SHA-256 is \(result.imageSHA256!), but \(expected.origin) says \(expected.sha256)",
                    path: image.path, hint: "the image is damaged or is not the one you meant; the card was not left valid")
            }
            let verified = try verifier.verify(file, against: written, image: image, reporter: reporter)
            result.verifySeconds = verified.seconds

            if let injection {
                let started = monotonicSeconds()
                try Interrupts.check("starting to inject files into \(target.path)")
                let outcome = try injection.run(
                    InjectionTarget(descriptor: file.descriptor, path: target.path, head: written.head,
                                    imageBytes: written.bytes),
                    reporter)
                result.files = outcome.files
                result.injectedBlocks = outcome.blocks
                result.injectSeconds = monotonicSeconds() - started
            }
            // Every phase passed: only now does the target get its partition table.
            try Interrupts.check("about to write the partition table of \(target.path)")
            reporter.begin("commit", total: UInt64(written.head.count))
            let committing = monotonicSeconds()
            try DirectWriter.commitHead(written.head, to: file)
            reporter.end("commit", bytes: UInt64(written.head.count), seconds: monotonicSeconds() - committing)
            try file.sync()
        } catch {
            if target.kind == .output {
                // An unfinished image file is worth nothing and must not be flashed later by mistake.
                unlink(target.path)
            } else if wroteAnything {
                reporter.note("zeroing the first MiB of \(target.path) so the unfinished card does not look valid")
                DirectWriter.invalidate(file)
            }
            throw error
        }
        // The job's own handle ejects the card: nothing reopens it by path.
        if target.kind == .device && target.eject {
            result.ejected = eject(file, reporter: reporter)
        }
        try file.close()
    }

    /// Ejects a USB card reader's medium (a SCSI disk) through the job's handle; loop devices and
    /// MMC slots need nothing.
    private func eject(_ file: borrowing DeviceFile, reporter: Reporter) -> Bool {
        guard resolvedDeviceName(target.path).hasPrefix("sd") else { return false }
        do {
            try file.ejectSCSI()
        } catch let error as PiflashError {
            reporter.warning("\(error.description); everything was flushed, so the card is safe to pull")
            return false
        } catch {
            return false
        }
        return true
    }
}

/// The kernel name of a device node (`sdb` for `/dev/disk/by-id/usb-…`).
func resolvedDeviceName(_ path: String) -> String {
    guard let real = realpath(path, nil) else { return String(path.split(separator: "/").last ?? "") }
    defer { free(real) }
    return String(String(cString: real).split(separator: "/").last ?? "")
}
