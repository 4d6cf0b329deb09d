import Foundation

/// A loop device standing in for an SD card: over a sparse backing file, detached at the end.
final class CandidateCard {
    let loop: LoopDevice
    var path: String { loop.path }

    convenience init(scratch: ScratchDirectory, size: UInt64) throws {
        try self.init(backing: scratch.file("card-\(UUID().uuidString.prefix(8))"), size: size)
    }

    init(backing: String, size: UInt64) throws {
        loop = try LoopDevice(backing: backing, size: size)
    }
}
