/*
 * The allocator hook: every allocation the library makes goes through here, so users can
 * count allocations (the zero-allocation-per-step test), inject failures (the hardening
 * tests) or plug in their own allocator.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void *
default_malloc(size_t size, void *ctx)
{
    (void)ctx;
    return malloc(size);
}

static void *
default_realloc(void *ptr, size_t size, void *ctx)
{
    (void)ctx;
    return realloc(ptr, size);
}

static void
default_free(void *ptr, void *ctx)
{
    (void)ctx;
    free(ptr);
}

static tg_allocator allocator = {default_malloc, default_realloc, default_free, NULL};

void
tg_set_allocator(const tg_allocator *a)
{
    if (a && a->malloc && a->realloc && a->free)
        allocator = *a;
    else
        allocator = (tg_allocator){default_malloc, default_realloc, default_free, NULL};
}

void *
tg__malloc(size_t size)
{
    return allocator.malloc(size ? size : 1, allocator.ctx);
}

void *
tg__calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = tg__malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *
tg__realloc(void *ptr, size_t size)
{
    return allocator.realloc(ptr, size ? size : 1, allocator.ctx);
}

void
tg__free(void *ptr)
{
    if (ptr)
        allocator.free(ptr, allocator.ctx);
}

char *
tg__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tg__malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
