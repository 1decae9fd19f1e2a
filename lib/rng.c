/*
 * xoshiro256** (Blackman & Vigna, 2018), seeded through splitmix64 so that any 64-bit seed,
 * including 0, gives a well-mixed state. Same seed, same stream, on every platform.
 */
#include <math.h>

#include "internal.h"

struct tg_rng {
    uint64_t s[4];
    double spare; /* second Box-Muller variate */
    bool has_spare;
};

static uint64_t
splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

tg_rng *
tg_rng_new(uint64_t seed)
{
    tg_rng *r = tg__calloc(1, sizeof *r);
    if (!r)
        return NULL;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
    return r;
}

void
tg_rng_free(tg_rng *r)
{
    tg__free(r);
}

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t
tg_rng_u64(tg_rng *r)
{
    if (!r)
        return 0;
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* The top 53 bits as a double in [0, 1). */
double
tg_rng_uniform(tg_rng *r)
{
    return (double)(tg_rng_u64(r) >> 11) * 0x1.0p-53;
}

/* Box-Muller: z0 = sqrt(-2 ln u1) cos(2π u2), z1 = ... sin(2π u2); u1 in (0, 1]. */
double
tg_rng_normal(tg_rng *r)
{
    if (!r)
        return 0;
    if (r->has_spare) {
        r->has_spare = false;
        return r->spare;
    }
    double u1 = 1.0 - tg_rng_uniform(r);
    double u2 = tg_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    double ang = 6.283185307179586476925286766559 * u2;
    r->spare = rad * sin(ang);
    r->has_spare = true;
    return rad * cos(ang);
}
