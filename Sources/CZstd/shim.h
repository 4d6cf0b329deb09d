// ZSTD_getFrameHeader (walking multi-frame files) is in zstd.h's static-linking section; libzstd.so
// exports it.
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
