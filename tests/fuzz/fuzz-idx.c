/*
 * Fuzz target: the IDX reader (MNIST format, plain or gzip).
 *
 * The input is written to a temporary file and loaded as images, and (by the input's length)
 * also as its own labels file, so rank-1 integer files exercise the label path. Options come
 * from the length too, so the bytes stay a plain IDX file and real files make good seeds.
 * Invariants: a failed load sets a non-empty message and leaves the data set as it was; a
 * successful one has count x features values, labels >= 0, and can be walked in batches.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapegrad/data.h>
#include <tapegrad/tapegrad.h>

#define FUZZ_TARGET "fuzz-idx"
#define FUZZ_FILE_NAME "tg-fuzz-idx-%ld"
#include "fuzz-file.h"

/* Walks a loaded data set: every value and label is readable, batches cover it. */

static void
fuzz_walk_dataset(const tg_dataset *ds)
{
    size_t n = tg_dataset_count(ds), f = tg_dataset_features(ds);
    size_t prod = 1;
    for (int a = 0; a < tg_dataset_ndim(ds); a++)
        prod *= (size_t)tg_dataset_dim(ds, a);
    CHECK(n == 0 || prod == f);
    const void *v = tg_dataset_data(ds);
    volatile double sink = 0;
    if (v && n > 0 && f > 0) {
        if (tg_dataset_dtype(ds) == TG_F32)
            sink += ((const float *)v)[n * f - 1];
        else
            sink += ((const double *)v)[n * f - 1];
    }
    const int32_t *labels = tg_dataset_labels(ds);
    int32_t classes = tg_dataset_num_classes(ds);
    if (labels)
        for (size_t i = 0; i < n; i++)
            CHECK(labels[i] >= 0 && labels[i] < classes);
    if (n == 0 || n * f > (1u << 20))
        return;
    tg_rng *rng = tg_rng_new(n);
    tg_batcher *b = tg_batcher_new(ds, 1 + n / 3, n & 1 ? TG_EXAMPLES_AS_ROWS
                                                        : TG_EXAMPLES_AS_COLUMNS,
                                   n & 2, rng, NULL);
    if (b) {
        tg_batch batch;
        size_t seen = 0, batches = 0;
        while (tg_batcher_next(b, &batch)) {
            seen += batch.size;
            batches++;
            for (size_t i = 0; i < batch.size; i++)
                CHECK(batch.indices[i] < n);
        }
        CHECK(batches == tg_batcher_num_batches(b));
        CHECK(seen <= n);
    }
    tg_batcher_free(b);
    tg_rng_free(rng);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20) || !write_input(data, size))
        return 0;
    tg_dataset *ds = tg_dataset_new();
    if (ds) {
        tg_idx_options o = {.dtype = (size & 1) ? TG_F64 : TG_F32, .scale_to_unit = size & 2};
        tg_status s = tg_dataset_load_idx(ds, fuzz_path, (size & 4) ? fuzz_path : NULL, &o);
        if (s != TG_OK) {
            const char *msg = tg_dataset_error(ds);
            CHECK(msg && msg[0]);
            CHECK(tg_dataset_count(ds) == 0); /* was empty, stays empty */
        } else {
            fuzz_walk_dataset(ds);
            /* a second, failing load must keep what the first loaded */
            size_t n = tg_dataset_count(ds);
            if (tg_dataset_load_idx(ds, "/nonexistent/tg-fuzz", NULL, NULL) != TG_OK)
                CHECK(tg_dataset_count(ds) == n);
        }
    }
    tg_dataset_free(ds);
    unlink(fuzz_path);
    return 0;
}
