// PiflashPlatform: the only Swift module that imports the C libraries (libudev, libblkid,
// libext2fs, libzstd, liblzma, zlib, SQLite) and the kernel's ioctls. Everything above it sees
// Swift types and ``PiflashError``.
@_exported import PiflashCore
