#define _GNU_SOURCE
#include "CPiflashShim.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <linux/fs.h>
#include <scsi/sg.h>

_Static_assert(sizeof(uint64_t) == 8, "BLKGETSIZE64 fills a 64-bit value");

const unsigned long piflash_BLKGETSIZE64 = BLKGETSIZE64;
const unsigned long piflash_BLKSSZGET = BLKSSZGET;
const unsigned long piflash_BLKPBSZGET = BLKPBSZGET;
const unsigned long piflash_BLKFLSBUF = BLKFLSBUF;
const unsigned long piflash_BLKROGET = BLKROGET;
const unsigned long piflash_BLKRRPART = BLKRRPART;
const int piflash_O_DIRECT = O_DIRECT;

int piflash_ioctl_u64(int fd, unsigned long request, uint64_t *out) { return ioctl(fd, request, out); }
int piflash_ioctl_int(int fd, unsigned long request, int *out) { return ioctl(fd, request, out); }
int piflash_ioctl_none(int fd, unsigned long request) { return ioctl(fd, request, 0); }

int piflash_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

io_manager piflash_unix_io_manager(void) { return unix_io_manager; }
io_manager piflash_unixfd_io_manager(void) { return unixfd_io_manager; }

static int scsi_command(int fd, unsigned char *cdb, unsigned char cdb_len) {
    unsigned char sense[32];
    sg_io_hdr_t io;
    memset(&io, 0, sizeof(io));
    memset(sense, 0, sizeof(sense));
    io.interface_id = 'S';
    io.cmd_len = cdb_len;
    io.cmdp = cdb;
    io.dxfer_direction = SG_DXFER_NONE;
    io.mx_sb_len = sizeof(sense);
    io.sbp = sense;
    io.timeout = 10000;
    if (ioctl(fd, SG_IO, &io) < 0) return -errno;
    if (io.status != 0 || io.host_status != 0 || io.driver_status != 0) {
        return io.status ? io.status : 0xff;
    }
    return 0;
}

int piflash_scsi_eject(int fd) {
    unsigned char allow[6] = {0x1e, 0, 0, 0, 0, 0};        // PREVENT ALLOW MEDIUM REMOVAL, prevent=0
    unsigned char stop_eject[6] = {0x1b, 0, 0, 0, 0x02, 0}; // START STOP UNIT, LOEJ=1 START=0
    int rc = scsi_command(fd, allow, sizeof(allow));
    if (rc < 0) return rc;
    return scsi_command(fd, stop_eject, sizeof(stop_eject));
}

int piflash_set_dumpable(int value) {
    return prctl(PR_SET_DUMPABLE, (unsigned long)value, 0UL, 0UL, 0UL);
}

int piflash_get_dumpable(void) {
    return prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
}

int piflash_blkdiscard(int fd, uint64_t start, uint64_t length) {
    uint64_t range[2] = {start, length};
    return ioctl(fd, BLKDISCARD, range);
}
