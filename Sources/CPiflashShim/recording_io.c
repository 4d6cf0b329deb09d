// A libext2fs I/O manager that forwards everything to the unix I/O manager and reports every
// write (offset and length relative to the channel, plus the bytes) to a callback. The callback
// and its context are per thread: set them with piflash_recording_io_arm() right before
// ext2fs_open2 on the same thread; the channel opened then keeps them until it is closed.
#include "CPiflashShim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PIFLASH_RECORDING_MAGIC 0x70667269L

struct recording_private {
    io_channel inner;
    piflash_write_recorder recorder;
    void *context;
};

static __thread piflash_write_recorder armed_recorder;
static __thread void *armed_context;
static __thread int armed_on_descriptor;

void piflash_recording_io_arm(piflash_write_recorder recorder, void *context) {
    armed_recorder = recorder;
    armed_context = context;
}

void piflash_recording_io_arm_descriptor(int on_descriptor) {
    armed_on_descriptor = on_descriptor;
}

static struct recording_private *priv(io_channel channel) {
    return (struct recording_private *)channel->private_data;
}

static void sync_from_inner(io_channel channel) {
    io_channel inner = priv(channel)->inner;
    channel->block_size = inner->block_size;
    channel->flags = inner->flags;
    channel->align = inner->align;
}

static void record(io_channel channel, unsigned long long offset, unsigned long long length, const void *data) {
    struct recording_private *p = priv(channel);
    if (p->recorder && length > 0) p->recorder(p->context, offset, length, data);
}

static unsigned long long block_bytes(io_channel channel, int count) {
    return count < 0 ? (unsigned long long)(-(long long)count)
                     : (unsigned long long)count * (unsigned long long)channel->block_size;
}

static errcode_t rec_open(const char *name, int flags, io_channel *channel) {
    if (!armed_recorder) return EXT2_ET_INVALID_ARGUMENT;
    io_channel inner = NULL;
    io_manager under = armed_on_descriptor ? unixfd_io_manager : unix_io_manager;
    armed_on_descriptor = 0;
    errcode_t code = under->open(name, flags, &inner);
    if (code) return code;
    io_channel outer = calloc(1, sizeof(*outer));
    struct recording_private *p = calloc(1, sizeof(*p));
    char *copy = strdup(name);
    if (!outer || !p || !copy) {
        free(outer);
        free(p);
        free(copy);
        io_channel_close(inner);
        return EXT2_ET_NO_MEMORY;
    }
    p->inner = inner;
    p->recorder = armed_recorder;
    p->context = armed_context;
    armed_recorder = NULL;
    armed_context = NULL;
    outer->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    outer->manager = piflash_recording_io_manager();
    outer->name = copy;
    outer->refcount = 1;
    outer->private_data = p;
    sync_from_inner(outer);
    *channel = outer;
    return 0;
}

static errcode_t rec_close(io_channel channel) {
    if (--channel->refcount > 0) return 0;
    struct recording_private *p = priv(channel);
    errcode_t code = io_channel_close(p->inner);
    free(channel->name);
    free(p);
    free(channel);
    return code;
}

static errcode_t rec_set_blksize(io_channel channel, int blksize) {
    errcode_t code = io_channel_set_blksize(priv(channel)->inner, blksize);
    sync_from_inner(channel);
    return code;
}

static errcode_t rec_read_blk(io_channel channel, unsigned long block, int count, void *data) {
    return io_channel_read_blk(priv(channel)->inner, block, count, data);
}

static errcode_t rec_read_blk64(io_channel channel, unsigned long long block, int count, void *data) {
    return io_channel_read_blk64(priv(channel)->inner, block, count, data);
}

static errcode_t rec_write_blk(io_channel channel, unsigned long block, int count, const void *data) {
    errcode_t code = io_channel_write_blk(priv(channel)->inner, block, count, data);
    if (!code) record(channel, (unsigned long long)block * channel->block_size, block_bytes(channel, count), data);
    return code;
}

static errcode_t rec_write_blk64(io_channel channel, unsigned long long block, int count, const void *data) {
    errcode_t code = io_channel_write_blk64(priv(channel)->inner, block, count, data);
    if (!code) record(channel, block * channel->block_size, block_bytes(channel, count), data);
    return code;
}

static errcode_t rec_write_byte(io_channel channel, unsigned long offset, int count, const void *data) {
    errcode_t code = io_channel_write_byte(priv(channel)->inner, offset, count, data);
    if (!code) record(channel, offset, (unsigned long long)count, data);
    return code;
}

static errcode_t rec_flush(io_channel channel) { return io_channel_flush(priv(channel)->inner); }

static errcode_t rec_set_option(io_channel channel, const char *option, const char *arg) {
    io_channel inner = priv(channel)->inner;
    if (!inner->manager->set_option) return EXT2_ET_INVALID_ARGUMENT;
    return inner->manager->set_option(inner, option, arg);
}

static errcode_t rec_get_stats(io_channel channel, io_stats *stats) {
    io_channel inner = priv(channel)->inner;
    if (!inner->manager->get_stats) return EXT2_ET_UNIMPLEMENTED;
    return inner->manager->get_stats(inner, stats);
}

static errcode_t rec_discard(io_channel channel, unsigned long long block, unsigned long long count) {
    // What a discarded range reads as afterwards is up to the card: never discard what is recorded.
    (void)channel;
    (void)block;
    (void)count;
    return EXT2_ET_UNIMPLEMENTED;
}

static errcode_t rec_cache_readahead(io_channel channel, unsigned long long block, unsigned long long count) {
    io_channel inner = priv(channel)->inner;
    if (!inner->manager->cache_readahead) return EXT2_ET_OP_NOT_SUPPORTED;
    return inner->manager->cache_readahead(inner, block, count);
}

static errcode_t rec_zeroout(io_channel channel, unsigned long long block, unsigned long long count) {
    io_channel inner = priv(channel)->inner;
    if (!inner->manager->zeroout) return EXT2_ET_UNIMPLEMENTED;
    errcode_t code = inner->manager->zeroout(inner, block, count);
    if (!code) record(channel, block * channel->block_size, count * channel->block_size, NULL);
    return code;
}

static struct struct_io_manager recording_manager = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "piflash recording I/O manager",
    .open = rec_open,
    .close = rec_close,
    .set_blksize = rec_set_blksize,
    .read_blk = rec_read_blk,
    .write_blk = rec_write_blk,
    .flush = rec_flush,
    .write_byte = rec_write_byte,
    .set_option = rec_set_option,
    .get_stats = rec_get_stats,
    .read_blk64 = rec_read_blk64,
    .write_blk64 = rec_write_blk64,
    .discard = rec_discard,
    .cache_readahead = rec_cache_readahead,
    .zeroout = rec_zeroout,
};

io_manager piflash_recording_io_manager(void) { return &recording_manager; }
