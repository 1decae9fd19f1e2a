/*
 * A per-tape bump allocator over chained blocks. tg__arena_reset() rewinds to the first block
 * and keeps every block, so once a training step has run, the same step allocates nothing.
 * Blocks grow on demand (no size to guess up front).
 */
#ifndef TG_ARENA_H
#define TG_ARENA_H

#include <stdbool.h>
#include <stddef.h>

#define TG__ARENA_ALIGN 64 /* cache line; also the widest SIMD load */

struct tg__arena_block {
    struct tg__arena_block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    /* data follows, aligned to TG__ARENA_ALIGN */
};

/* A cap shared by several arenas (a tape's three): the bytes their blocks hold together never
 * exceed limit (0: no limit). A block that would cross it is made smaller when the request
 * still fits, else refused, and the refused request is recorded for the error message. */
struct tg__arena_budget {
    size_t limit;   /* 0: none */
    size_t held;    /* sum of the member arenas' totals */
    size_t refused; /* bytes of the last request refused by the limit, 0 if none since cleared */
};

struct tg__arena {
    struct tg__arena_block *first;
    struct tg__arena_block *current;
    size_t total;                    /* bytes held in all blocks */
    struct tg__arena_budget *budget; /* NULL: unlimited */
};

/* The first TG__ARENA_ALIGN bytes of a block hold its header; data starts after them. */
#define TG__ARENA_BLOCK_HEADER                                                                     \
    ((sizeof(struct tg__arena_block) + TG__ARENA_ALIGN - 1) & ~(size_t)(TG__ARENA_ALIGN - 1))

/* The rest of tg__arena_alloc: the current block is full (or size is 0 or overflows). */
void *tg__arena_alloc_slow(struct tg__arena *a, size_t size);

/* Aligned, uninitialized memory, or NULL when out of memory, over the budget's limit (or size
 * overflows). Inline for the common case, a bump within the current block: a tape allocates
 * two or three times per node, and the call cost as much as the bump. */
static inline void *
tg__arena_alloc(struct tg__arena *a, size_t size)
{
    struct tg__arena_block *b = a->current;
    size_t rounded = (size + TG__ARENA_ALIGN - 1) & ~(size_t)(TG__ARENA_ALIGN - 1);
    if (b && size - 1 < (size_t)-1 - TG__ARENA_ALIGN && b->size - b->used >= rounded) {
        void *p = (char *)b + TG__ARENA_BLOCK_HEADER + b->used;
        b->used += rounded;
        return p;
    }
    return tg__arena_alloc_slow(a, size);
}
void tg__arena_reset(struct tg__arena *a);
/* Make sure the arena holds at least `bytes` in its blocks (grows by one block if not), so a
 * twin arena can be kept as large as this one. Returns false when out of memory. */
bool tg__arena_reserve(struct tg__arena *a, size_t bytes);
void tg__arena_release(struct tg__arena *a);

#endif /* TG_ARENA_H */
