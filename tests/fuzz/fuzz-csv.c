/*
 * Fuzz target: the numeric CSV reader (plain or gzip).
 *
 * The input is written to a temporary file and loaded with options chosen by its length
 * (dtype, header mode, delimiter, labels and their column), so the bytes stay a plain CSV
 * file. Invariants: a failed load sets a non-empty message and leaves the data set empty; a
 * successful one is consistent (walk() below: every value and label readable, batches cover
 * it).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapegrad/data.h>
#include <tapegrad/tapegrad.h>

#define FUZZ_TARGET "fuzz-csv"
#define FUZZ_FILE_NAME "tg-fuzz-csv-%ld.csv"
#include "fuzz-file.h"

static void
walk(const tg_dataset *ds)
{
    size_t n = tg_dataset_count(ds), f = tg_dataset_features(ds);
    CHECK(n > 0 && f > 0);
    CHECK(tg_dataset_ndim(ds) >= 1);
    const void *v = tg_dataset_data(ds);
    CHECK(v != NULL);
    volatile double sink = tg_dataset_dtype(ds) == TG_F32 ? ((const float *)v)[n * f - 1]
                                                          : ((const double *)v)[n * f - 1];
    (void)sink;
    const int32_t *labels = tg_dataset_labels(ds);
    if (labels)
        for (size_t i = 0; i < n; i++)
            CHECK(labels[i] >= 0 && labels[i] < tg_dataset_num_classes(ds));
    tg_batcher *b = tg_batcher_new(ds, 2, TG_EXAMPLES_AS_COLUMNS, false, NULL, NULL);
    tg_batch batch;
    size_t seen = 0;
    while (b && tg_batcher_next(b, &batch))
        seen += batch.size;
    CHECK(!b || seen == n);
    tg_batcher_free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20) || !write_input(data, size))
        return 0;
    static const char delims[] = {0, ',', ';', '\t', ' ', '|', '"', '\n'};
    size_t k = size;
    tg_csv_options o = {0};
    o.dtype = (k & 1) ? TG_F64 : TG_F32;
    k >>= 1;
    o.header = (tg_csv_header)(k % 3);
    k /= 3;
    o.delimiter = delims[k % 8];
    k /= 8;
    o.has_labels = k & 1;
    o.label_column = (int)((k >> 1) % 5) - 2; /* -2 is invalid */
    tg_dataset *ds = tg_dataset_new();
    if (ds) {
        tg_status s = tg_dataset_load_csv(ds, fuzz_path, &o);
        if (s != TG_OK) {
            const char *msg = tg_dataset_error(ds);
            CHECK(msg && msg[0]);
            CHECK(tg_dataset_count(ds) == 0);
        } else {
            walk(ds);
        }
    }
    tg_dataset_free(ds);
    unlink(fuzz_path);
    return 0;
}
