#include "arena.h"

#include <stdint.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "internal.h"

#define TG__ARENA_MIN_BLOCK ((size_t)1 << 16)

static size_t
header_size(void)
{
    return TG__ARENA_BLOCK_HEADER;
}

static void *
block_data(struct tg__arena_block *b)
{
    return (char *)b + header_size();
}

/*
 * Large blocks ask the kernel for transparent huge pages (Linux, where THP is in "madvise"
 * mode by default): a 64 MiB tensor spans 16384 small pages, and streaming over it misses the
 * TLB on every page, which costs most under virtualization (a two-level page walk). Measured
 * on a 2-vCPU VM: a 16M-element float sum went from 35.7 GB/s to [see docs/performance.md].
 * Only the 2 MiB-aligned interior of the block is advised; the advice is a hint, and a
 * refusal (no THP, a custom allocator's memory) changes nothing but speed.
 */
static void
advise_huge(void *raw, size_t bytes)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)1 << 21;
    if (bytes < 4 * huge)
        return;
    uintptr_t lo = ((uintptr_t)raw + huge - 1) & ~(huge - 1);
    uintptr_t hi = ((uintptr_t)raw + bytes) & ~(huge - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)raw, (void)bytes;
#endif
}

static struct tg__arena_block *
block_new(size_t size)
{
    size_t hdr = header_size();
    if (size > SIZE_MAX - hdr - TG__ARENA_ALIGN)
        return NULL;
    /* Over-allocate by the alignment so the data can be aligned whatever malloc returns;
     * the block header records the raw pointer at its start (blocks are placed at the
     * aligned address, and the raw pointer is stored just before it). */
    void *raw = tg__malloc(hdr + size + TG__ARENA_ALIGN + sizeof(void *));
    if (!raw)
        return NULL;
    advise_huge(raw, hdr + size + TG__ARENA_ALIGN + sizeof(void *));
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + TG__ARENA_ALIGN - 1) &
                  ~(uintptr_t)(TG__ARENA_ALIGN - 1);
    struct tg__arena_block *b = (struct tg__arena_block *)p;
    ((void **)b)[-1] = raw;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

static void
block_free(struct tg__arena_block *b)
{
    tg__free(((void **)b)[-1]);
}

/* Whether a new block for a request of `need` bytes fits under the limit; *want (>= need) is
 * lowered to what is left when it would not. Records a refusal in the budget. */
static bool
budget_allows(struct tg__arena_budget *budget, size_t need, size_t *want)
{
    if (!budget || budget->limit == 0)
        return true;
    size_t room = budget->limit > budget->held ? budget->limit - budget->held : 0;
    if (need > room) {
        budget->refused = need;
        return false;
    }
    if (*want > room)
        *want = room;
    return true;
}

static void
add_total(struct tg__arena *a, size_t bytes)
{
    a->total += bytes;
    if (a->budget)
        a->budget->held += bytes;
}

void *
tg__arena_alloc_slow(struct tg__arena *a, size_t size)
{
    if (size > SIZE_MAX - TG__ARENA_ALIGN)
        return NULL;
    size = (size + TG__ARENA_ALIGN - 1) & ~(size_t)(TG__ARENA_ALIGN - 1);
    if (size == 0)
        size = TG__ARENA_ALIGN; /* distinct, valid pointers for empty tensors */

    /* Try the current block, then the following (already allocated, rewound) ones. */
    for (struct tg__arena_block *b = a->current; b; b = b->next) {
        if (b != a->current)
            b->used = 0;
        if (b->size - b->used >= size) {
            void *p = (char *)block_data(b) + b->used;
            b->used += size;
            a->current = b;
            return p;
        }
    }

    /* Append a new block at the end of the chain, at least double the last one (or what is
     * left under the budget's limit, if that is less but still enough). */
    struct tg__arena_block *last = a->current;
    while (last && last->next)
        last = last->next;
    size_t want = last ? last->size * 2 : TG__ARENA_MIN_BLOCK;
    if (want < size)
        want = size;
    if (!budget_allows(a->budget, size, &want))
        return NULL;
    struct tg__arena_block *b = block_new(want);
    if (!b)
        return NULL;
    if (last)
        last->next = b;
    else
        a->first = b;
    add_total(a, want);
    b->used = size;
    a->current = b;
    return block_data(b);
}

bool
tg__arena_reserve(struct tg__arena *a, size_t bytes)
{
    if (a->total >= bytes)
        return true;
    size_t want = bytes - a->total;
    if (!budget_allows(a->budget, want, &want))
        return false;
    struct tg__arena_block *b = block_new(want);
    if (!b)
        return false;
    struct tg__arena_block *last = a->first;
    while (last && last->next)
        last = last->next;
    if (last)
        last->next = b;
    else
        a->first = a->current = b;
    add_total(a, b->size);
    return true;
}

void
tg__arena_reset(struct tg__arena *a)
{
    if (a->first)
        a->first->used = 0;
    a->current = a->first;
}

void
tg__arena_release(struct tg__arena *a)
{
    struct tg__arena_block *b = a->first;
    while (b) {
        struct tg__arena_block *next = b->next;
        block_free(b);
        b = next;
    }
    a->first = a->current = NULL;
    if (a->budget)
        a->budget->held -= a->total;
    a->total = 0;
}
