// swift-tools-version: 6.0
import PackageDescription

/// One `.systemLibrary` per C library: a module map and a one-line header, found through pkg-config,
/// with the Debian package that provides it.
func cLibrary(_ name: String, _ pkgConfig: String, apt: String) -> Target {
    .systemLibrary(name: name, pkgConfig: pkgConfig, providers: [.apt([apt])])
}

let package = Package(
    name: "piflash",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "piflash", targets: ["piflash"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssh", from: "0.15.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        cLibrary("CUdev", "libudev", apt: "libudev-dev"),
        cLibrary("CBlkid", "blkid", apt: "libblkid-dev"),
        cLibrary("CExt2fs", "ext2fs", apt: "libext2fs-dev"),
        cLibrary("CZstd", "libzstd", apt: "libzstd-dev"),
        cLibrary("CLzma", "liblzma", apt: "liblzma-dev"),
        cLibrary("CZlib", "zlib", apt: "zlib1g-dev"),
        cLibrary("CSQLite", "sqlite3", apt: "libsqlite3-dev"),
        // ioctl numbers, macros and globals Swift cannot import directly.
        .target(name: "CPiflashShim", dependencies: ["CExt2fs"]),

        // Errors, exit statuses and the event stream every layer shares. No C here.
        .target(name: "PiflashCore"),
        // The only Swift module that imports the C libraries; everything above sees Swift types.
        .target(
            name: "PiflashPlatform",
            dependencies: [
                "PiflashCore", "CUdev", "CBlkid", "CExt2fs", "CZstd", "CLzma", "CZlib", "CSQLite", "CPiflashShim",
                // The PostgreSQL wire protocol (a shared journal): wrapped once, behind a blocking API.
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // age, SOPS, OpenSSH keys: pure Swift on swift-crypto.
        .target(
            name: "PiflashSecrets",
            dependencies: [
                "PiflashCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The domain: image sources, targets and the safety policy, the writer, the verifier,
        // host files, the ext4 patcher, the journal, the flash job and the station.
        .target(
            name: "PiflashKit",
            dependencies: [
                "PiflashCore", "PiflashPlatform", "PiflashSecrets",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        // After first boot: the SSH host key over a real key exchange, tcp and http checks.
        .target(
            name: "PiflashCheck",
            dependencies: [
                "PiflashCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSH", package: "swift-nio-ssh"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The station's views, fed by its one event stream: the terminal, the log, JSON lines, and
        // the read-only web page with its JSON API (SwiftNIO's HTTP/1 server).
        .target(
            name: "PiflashStationViews",
            dependencies: [
                "PiflashKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "PiflashCommands",
            dependencies: [
                "PiflashCore", "PiflashKit", "PiflashCheck", "PiflashSecrets", "PiflashStationViews",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "piflash", dependencies: ["PiflashCommands"]),

        // A real PostgreSQL server (initdb/pg_ctl in a temporary folder) for the shared-journal tests.
        .target(name: "PostgreSQLFixture", path: "Tests/PostgreSQLFixture"),
        .testTarget(name: "PiflashSecretsTests", dependencies: ["PiflashSecrets"]),
        .testTarget(name: "PiflashKitTests", dependencies: ["PiflashKit", "PiflashPlatform", "PostgreSQLFixture"]),
        .testTarget(name: "PiflashCheckTests", dependencies: ["PiflashCheck", "PiflashKit"]),
        .testTarget(name: "PiflashCommandsTests", dependencies: ["PiflashCommands", "PiflashKit", "PiflashStationViews", "PostgreSQLFixture"]),
    ]
)
