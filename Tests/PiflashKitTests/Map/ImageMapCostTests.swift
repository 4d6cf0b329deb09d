#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PiflashKit
import Testing

/// The cost of the map pass on a large image, for Benchmarks/map-cost (which builds the image and its
/// compressed forms and sets PIFLASH_MAP_BENCH_IMAGE). Prints one line per form; skipped otherwise.
@Suite("ImageMap cost")
struct ImageMapCostTests {
    static let image = ProcessInfo.processInfo.environment["PIFLASH_MAP_BENCH_IMAGE"]

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        try body()
        var end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &end)
        return Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
    }

    @Test("map pass time vs image size (set PIFLASH_MAP_BENCH_IMAGE, see Benchmarks/map-cost)", .enabled(if: image != nil))
    func cost() throws {
        let image = try #require(Self.image)
        var reference: ImageMap?
        for suffix in ["", ".zst", ".xz", ".gz"] where FileManager.default.fileExists(atPath: image + suffix) {
            var result: (map: ImageMap, pass: ImageMapper.Pass)?
            let time = try Self.seconds { result = try ImageMapper.map(imageAt: image + suffix) }
            let (map, pass) = try #require(result)
            if let reference { #expect(map == reference, "\(suffix): the same map as the raw image") } else { reference = map }
            // The whole stream decompressed, for comparison: what a full pass would cost.
            var full = 0.0
            if !suffix.isEmpty {
                let reader = try ImageReader(path: image + suffix)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
                defer { buffer.deallocate() }
                full = try Self.seconds { while try reader.read(into: buffer) > 0 {} }
            }
            let line = String(
                format: "map-cost %@: image %.1f MiB, mapped %.1f MiB (%.1f %%), map pass %.3f s, streamed %.1f MiB, kept %.1f KiB, passes %d, full decompression %.2f s",
                suffix.isEmpty ? "raw" : String(suffix.dropFirst()), Double(map.imageBytes) / 1_048_576,
                Double(map.mappedBytes) / 1_048_576, map.mappedFraction * 100, time, Double(pass.streamedBytes) / 1_048_576,
                Double(pass.retainedBytes) / 1024, pass.passes, full)
            print(line)
            for region in map.regions where suffix.isEmpty { print("  \(region.range): \(region.summary) \(region.mappedInFullBecause ?? "")") }
        }
    }
}
