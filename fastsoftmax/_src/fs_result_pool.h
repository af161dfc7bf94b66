/*
 * fs_result_pool.h -- keeps the memory of large freed results for the next result.
 *
 * Design note
 * -----------
 * glibc's malloc maps every block above 32 MiB afresh and unmaps it on free, so a
 * large result (softmax of 256 x 50257 float32 is 51 MB) gets new pages on every
 * call, and the kernel zeroes each page on first touch: measured here, np.empty +
 * a copy of 51 MB takes 10.4 ms where the copy alone takes 6.4 ms.  Below 32 MiB
 * glibc keeps freed memory itself and this pool is not used.
 *
 * NumPy lets an array carry its own allocator (NEP 49, PyDataMem_Handler).  The
 * library creates its large results with the handler below: a freed block is kept
 * (at most FS_POOL_SLOTS blocks and `cap` bytes, the oldest dropped first) and the
 * next result that fits it (a block at most 1.25x the size asked for) takes it, its
 * pages already mapped.  Arrays made this way are ordinary NumPy arrays that own
 * their data; only their memory comes from here.  Blocks are whole multiples of
 * 2 MiB mapped with MADV_HUGEPAGE, like NumPy's own large arrays; a 64-byte header
 * before the data records the block's length, so free and realloc need nothing else.
 *
 * The handler's functions may run without the GIL: the pool is guarded by a Python
 * thread lock (fs_pool_init, which needs the GIL, creates it) held only to pick or store
 * a block.
 */
#ifndef FS_RESULT_POOL_H
#define FS_RESULT_POOL_H

#include <Python.h>
#include <pythread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <numpy/ndarraytypes.h>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define FS_POOL_MMAP 1
#else
#define FS_POOL_MMAP 0
#endif

#define FS_POOL_SLOTS 4
#define FS_POOL_GRAIN ((size_t)2 << 20)   /* block lengths are multiples of 2 MiB */
#define FS_POOL_HEADER ((size_t)64)       /* keeps the data 64-byte aligned */
#define FS_POOL_MAGIC UINT64_C(0x66737265736c7431)

typedef struct {
    size_t length;    /* bytes mapped, header included */
    uint64_t magic;
} fs_pool_header;

static struct {
    PyThread_type_lock lock;
    char *block[FS_POOL_SLOTS];   /* kept blocks, oldest first */
    size_t length[FS_POOL_SLOTS];
    int count;
    size_t bytes;                 /* sum of length[] */
    size_t cap;                   /* most bytes kept */
} fs_pool;

static char *fs_pool_map(size_t length)
{
#if FS_POOL_MMAP
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, length, MADV_HUGEPAGE);
#endif
    return (char *)p;
#elif defined(_WIN32)
    return (char *)_aligned_malloc(length, 64);
#else
    void *p = NULL;
    return posix_memalign(&p, 64, length) == 0 ? (char *)p : NULL;
#endif
}

static void fs_pool_unmap(char *block, size_t length)
{
#if FS_POOL_MMAP
    (void)munmap(block, length);
#elif defined(_WIN32)
    (void)length;
    _aligned_free(block);
#else
    (void)length;
    free(block);
#endif
}

/* The header of a block this handler made; anything else is memory corruption. */
static fs_pool_header *fs_pool_header_of(void *data)
{
    fs_pool_header *h = (fs_pool_header *)((char *)data - FS_POOL_HEADER);
    if (h->magic != FS_POOL_MAGIC) Py_FatalError("fastsoftmax result pool: freeing a block it did not make");
    return h;
}

/* Removes kept block i (lock held). */
static void fs_pool_remove(int i)
{
    fs_pool.bytes -= fs_pool.length[i];
    for (int j = i; j + 1 < fs_pool.count; j++) {
        fs_pool.block[j] = fs_pool.block[j + 1];
        fs_pool.length[j] = fs_pool.length[j + 1];
    }
    fs_pool.count--;
}

/* Drops the oldest kept blocks until at most `max_count` blocks and `max_bytes` bytes are kept. */
static void fs_pool_shrink(int max_count, size_t max_bytes)
{
    while (fs_pool.count > 0 && (fs_pool.count > max_count || fs_pool.bytes > max_bytes)) {
        char *old = fs_pool.block[0];
        size_t old_length = fs_pool.length[0];
        fs_pool_remove(0);
        fs_pool_unmap(old, old_length);
    }
}

/* A block for `size` data bytes: a kept one if one fits (*fresh = 0), else a new mapping. */
static void *fs_pool_take(size_t size, int *fresh)
{
    if (size > SIZE_MAX - FS_POOL_HEADER - FS_POOL_GRAIN) return NULL;
    size_t need = (size + FS_POOL_HEADER + FS_POOL_GRAIN - 1) / FS_POOL_GRAIN * FS_POOL_GRAIN;
    int best = -1;
    PyThread_acquire_lock(fs_pool.lock, WAIT_LOCK);
    for (int i = 0; i < fs_pool.count; i++) {
        size_t len = fs_pool.length[i];
        if (len >= need && len - need <= need / 4 && (best < 0 || len < fs_pool.length[best]))
            best = i;
    }
    char *block = NULL;
    if (best >= 0) {
        block = fs_pool.block[best];
        fs_pool_remove(best);
    }
    PyThread_release_lock(fs_pool.lock);
    *fresh = block == NULL;
    if (block == NULL) {
        block = fs_pool_map(need);
        if (block == NULL) return NULL;
        fs_pool_header *h = (fs_pool_header *)block;
        h->length = need;
        h->magic = FS_POOL_MAGIC;
    }
    return block + FS_POOL_HEADER;
}

static void *fs_pool_malloc(void *ctx, size_t size)
{
    (void)ctx;
    int fresh;
    return fs_pool_take(size, &fresh);
}

static void *fs_pool_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    if (elsize != 0 && nelem > SIZE_MAX / elsize) return NULL;
    int fresh;
    void *p = fs_pool_take(nelem * elsize, &fresh);
    if (p != NULL && !(fresh && FS_POOL_MMAP))  /* new mappings are already zero */
        memset(p, 0, nelem * elsize);
    return p;
}

static void fs_pool_free(void *ctx, void *data, size_t size)
{
    (void)ctx;
    (void)size;
    if (data == NULL) return;
    fs_pool_header *h = fs_pool_header_of(data);
    char *block = (char *)h;
    size_t length = h->length;
    PyThread_acquire_lock(fs_pool.lock, WAIT_LOCK);
    int keep = length <= fs_pool.cap;
    if (keep) {
        fs_pool_shrink(FS_POOL_SLOTS - 1, fs_pool.cap - length);
        fs_pool.block[fs_pool.count] = block;
        fs_pool.length[fs_pool.count] = length;
        fs_pool.count++;
        fs_pool.bytes += length;
    }
    PyThread_release_lock(fs_pool.lock);
    if (!keep) fs_pool_unmap(block, length);
}

static void *fs_pool_realloc(void *ctx, void *data, size_t new_size)
{
    if (data == NULL) return fs_pool_malloc(ctx, new_size);
    size_t capacity = fs_pool_header_of(data)->length - FS_POOL_HEADER;
    if (new_size <= capacity) return data;
    void *moved = fs_pool_malloc(ctx, new_size);
    if (moved == NULL) return NULL;  /* the old block stays valid, as realloc promises */
    memcpy(moved, data, capacity);
    fs_pool_free(ctx, data, capacity);
    return moved;
}

static PyDataMem_Handler fs_pool_handler = {
    "fastsoftmax_result_pool",
    1,
    {NULL, fs_pool_malloc, fs_pool_calloc, fs_pool_realloc, fs_pool_free},
};

/* Sets the most bytes kept (dropping kept blocks that no longer fit). */
static void fs_pool_set_cap(size_t cap)
{
    PyThread_acquire_lock(fs_pool.lock, WAIT_LOCK);
    fs_pool.cap = cap;
    fs_pool_shrink(FS_POOL_SLOTS, cap);
    PyThread_release_lock(fs_pool.lock);
}

/* Unmaps every kept block. */
static void fs_pool_release(void)
{
    PyThread_acquire_lock(fs_pool.lock, WAIT_LOCK);
    fs_pool_shrink(0, 0);
    PyThread_release_lock(fs_pool.lock);
}

static size_t fs_pool_cached_bytes(void)
{
    PyThread_acquire_lock(fs_pool.lock, WAIT_LOCK);
    size_t bytes = fs_pool.bytes;
    PyThread_release_lock(fs_pool.lock);
    return bytes;
}

/* In a child process after fork(): a new lock, in case another thread of the parent held
   the old one at the moment of the fork (the kept blocks were copied with the process). */
static int fs_pool_after_fork(void)
{
    PyThread_type_lock lock = PyThread_allocate_lock();
    if (lock == NULL) return -1;
    fs_pool.lock = lock; /* the old lock is left as it was: it may be held forever */
    return 0;
}

/* Takes (hold = 1) or releases the pool's lock: for the test that forks while it is held. */
static void fs_pool_hold_lock(int hold)
{
    if (hold) PyThread_acquire_lock(fs_pool.lock, WAIT_LOCK);
    else PyThread_release_lock(fs_pool.lock);
}

/* The handler as the capsule NumPy expects (name "mem_handler"); NULL if the lock fails. */
static PyObject *fs_pool_init(size_t cap)
{
    fs_pool.lock = PyThread_allocate_lock();
    if (fs_pool.lock == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    fs_pool.cap = cap;
    return PyCapsule_New(&fs_pool_handler, "mem_handler", NULL);
}

/* ---- 64-byte aligned results (below the pool's size) ----
 * malloc aligns to 16 bytes; a result that starts inside a cache line has every vector
 * store split over two lines, and its streamed rows share lines that must be written apart
 * (fs_activations_impl.h, softmax_medium_stream_span: 16384 x 128 float32 softmax took
 * 0.79 times np.copyto into a 64-byte aligned result, 1.34-1.40 into one at 16 or 48 before
 * those lines were streamed too; since, 1.0-1.07 times the aligned result's time).
 * This handler takes malloc'd memory 80 bytes longer and returns its first 64-byte boundary
 * after at least 16 bytes (16 to 79 bytes in); the pointer malloc gave is stored just before
 * the data.  Blocks of 4 MiB or more are marked for transparent huge pages, as NumPy's own
 * allocator does. */
static char *fs_aligned_boundary(char *raw)
{
    return (char *)(((uintptr_t)raw + 16 + 63) & ~(uintptr_t)63);
}

/* madvise(MADV_HUGEPAGE) over the whole pages of a block of 4 MiB or more (as NumPy does) */
static void fs_aligned_hugepages(char *raw, size_t length)
{
#if FS_POOL_MMAP && defined(MADV_HUGEPAGE)
    if (length < ((size_t)4 << 20)) return;
    const uintptr_t page = 4096;
    uintptr_t start = ((uintptr_t)raw + page - 1) & ~(page - 1), end = ((uintptr_t)raw + length) & ~(page - 1);
    if (end > start) (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
    (void)raw;
    (void)length;
#endif
}

static void *fs_aligned_data(char *raw, size_t length)
{
    if (raw == NULL) return NULL;
    fs_aligned_hugepages(raw, length);
    char *data = fs_aligned_boundary(raw);
    ((char **)data)[-1] = raw;
    return data;
}

static char *fs_aligned_raw(void *data)
{
    return ((char **)data)[-1];
}

static void *fs_aligned_malloc(void *ctx, size_t size)
{
    (void)ctx;
    if (size > SIZE_MAX - 80) return NULL;
    return fs_aligned_data((char *)malloc(size + 80), size + 80);
}

static void *fs_aligned_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    if (elsize != 0 && nelem > (SIZE_MAX - 80) / elsize) return NULL;
    return fs_aligned_data((char *)calloc(nelem * elsize + 80, 1), nelem * elsize + 80);
}

static void fs_aligned_free(void *ctx, void *data, size_t size)
{
    (void)ctx;
    (void)size;
    if (data != NULL) free(fs_aligned_raw(data));
}

static void *fs_aligned_realloc(void *ctx, void *data, size_t new_size)
{
    if (data == NULL) return fs_aligned_malloc(ctx, new_size);
    if (new_size > SIZE_MAX - 80) return NULL;
    char *raw = fs_aligned_raw(data);
    const size_t offset = (size_t)((char *)data - raw);
    char *moved = (char *)realloc(raw, new_size + 80);
    if (moved == NULL) return NULL; /* the old block stays valid */
    char *fresh = fs_aligned_boundary(moved);
    /* realloc kept the bytes at `offset`; the new boundary may be elsewhere in the block
       (both within its new_size + 80 bytes); the pointer before it is written after the
       move, which it could otherwise overwrite the data of */
    if ((size_t)(fresh - moved) != offset) memmove(fresh, moved + offset, new_size);
    ((char **)fresh)[-1] = moved;
    fs_aligned_hugepages(moved, new_size + 80);
    return fresh;
}

static PyDataMem_Handler fs_aligned_handler = {
    "fastsoftmax_aligned",
    1,
    {NULL, fs_aligned_malloc, fs_aligned_calloc, fs_aligned_realloc, fs_aligned_free},
};

/* The aligned handler as the capsule NumPy expects. */
static PyObject *fs_aligned_init(void)
{
    return PyCapsule_New(&fs_aligned_handler, "mem_handler", NULL);
}

#endif /* FS_RESULT_POOL_H */
