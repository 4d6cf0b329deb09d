// Macros, ioctl numbers and globals that Swift cannot import, re-exported as constants and
// small functions. Nothing here decides anything: it only makes the kernel and libext2fs reachable.
#ifndef CPIFLASH_SHIM_H
#define CPIFLASH_SHIM_H

#include <stdint.h>
#include <ext2fs/ext2fs.h>

/// ioctl request numbers of <linux/fs.h> (function-like macros in C).
extern const unsigned long piflash_BLKGETSIZE64;
extern const unsigned long piflash_BLKSSZGET;
extern const unsigned long piflash_BLKPBSZGET;
extern const unsigned long piflash_BLKFLSBUF;
extern const unsigned long piflash_BLKROGET;
extern const unsigned long piflash_BLKRRPART;
/// `O_DIRECT` (needs _GNU_SOURCE in C, so Glibc's Swift overlay does not always have it).
extern const int piflash_O_DIRECT;

/// `ioctl(fd, request, &out)` for requests that fill a 64-bit value. Returns -1 and sets errno on failure.
int piflash_ioctl_u64(int fd, unsigned long request, uint64_t *out);
/// `ioctl(fd, request, &out)` for requests that fill an int.
int piflash_ioctl_int(int fd, unsigned long request, int *out);
/// `ioctl(fd, request, 0)` for requests without an argument.
int piflash_ioctl_none(int fd, unsigned long request);
/// `ioctl(fd, BLKDISCARD, {start, length})`: tells the device the range's content is no longer
/// needed. Returns 0, or -1 with errno (EOPNOTSUPP when the device cannot discard).
int piflash_blkdiscard(int fd, uint64_t start, uint64_t length);

/// `memfd_create(name, MFD_CLOEXEC)`: an anonymous memory file (needs _GNU_SOURCE in C).
int piflash_memfd(const char *name);

/// libext2fs' `unix_io_manager`, a mutable global that Swift 6 strict concurrency refuses.
io_manager piflash_unix_io_manager(void);
/// libext2fs' `unixfd_io_manager`: the channel's name is a descriptor number, which it closes.
io_manager piflash_unixfd_io_manager(void);

/// Receives each write of the recording I/O manager: `offset` and `length` in bytes relative to
/// the channel (the filesystem's start), `data` the bytes written (NULL for a range zeroed out).
typedef void (*piflash_write_recorder)(void *context, unsigned long long offset, unsigned long long length,
                                       const void *data);
/// An I/O manager that forwards to `unix_io_manager` and reports every write to a recorder.
io_manager piflash_recording_io_manager(void);
/// Arms the recorder for the next channel this thread opens with ``piflash_recording_io_manager``
/// (call right before `ext2fs_open2`; the open takes and clears it).
void piflash_recording_io_arm(piflash_write_recorder recorder, void *context);
/// Makes the next recording channel opened on this thread wrap `unixfd_io_manager` (the name is a
/// descriptor number) instead of `unix_io_manager` (the name is a path). Reset by the open.
void piflash_recording_io_arm_descriptor(int on_descriptor);

/// Ejects the medium of a SCSI disk (USB card readers are SCSI disks) through SG_IO:
/// PREVENT ALLOW MEDIUM REMOVAL (allow), then START STOP UNIT with LOEJ=1, START=0.
/// Returns 0, or -errno when an ioctl failed, or a positive SCSI status when the device refused.
int piflash_scsi_eject(int fd);

/// Whether this CPU can run `piflash_crc32_fold` (x86-64 with PCLMULQDQ and SSE4.1).
int piflash_crc32_fold_available(void);
/// zlib's `crc32(crc, data, len)` computed with PCLMULQDQ. `len` must be at least 64 and a multiple
/// of 16, and `piflash_crc32_fold_available()` true; callers do other lengths with zlib.
uint32_t piflash_crc32_fold(uint32_t crc, const void *data, size_t len);

/// `prctl(PR_SET_DUMPABLE, value)` (prctl is variadic: Swift cannot call it). Returns 0 or -1 with errno.
int piflash_set_dumpable(int value);
/// `prctl(PR_GET_DUMPABLE)`: 1 dumpable, 0 not, -1 with errno.
int piflash_get_dumpable(void);

#endif
