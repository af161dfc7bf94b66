/*
 * fs_stream_copy.h -- the benchmark's second memory floor (fastsoftmax._memory_floor).
 *
 * np.copyto writes with ordinary stores: each line of the destination is first read into
 * the cache (a read for ownership), so it moves three bytes per byte copied.  The kernels
 * write large results with streaming stores, which skip that read; the least time any
 * kernel can take on such a result is then a copy with streaming stores and no arithmetic.
 * That is what fs_stream_copy does: 16-byte loads and streaming stores (SSE2, which every
 * x86-64 has; as fast here as 64-byte ones: 0.58 ms for 8 MB either way), the bytes before
 * the destination's first 16-byte boundary and after its last whole 64-byte step copied with
 * memcpy, then a store fence.  Elsewhere it is memcpy.
 */
#ifndef FS_STREAM_COPY_H
#define FS_STREAM_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>

static void fs_stream_copy(void *dst, const void *src, size_t nbytes)
{
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    if (head > nbytes) head = nbytes;
    memcpy(d, s, head);
    d += head;
    s += head;
    nbytes -= head;
    size_t i = 0;
    for (; i + 64 <= nbytes; i += 64) {
        const __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        const __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        const __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        const __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), a);
        _mm_stream_si128((__m128i *)(d + i + 16), b);
        _mm_stream_si128((__m128i *)(d + i + 32), c);
        _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    _mm_sfence();
    memcpy(d + i, s + i, nbytes - i);
}
#else
static void fs_stream_copy(void *dst, const void *src, size_t nbytes) { memcpy(dst, src, nbytes); }
#endif

#endif
