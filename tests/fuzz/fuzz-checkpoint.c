/*
 * Fuzz target: the safetensors checkpoint loader.
 *
 * The input is written to a temporary file and loaded twice: into a state dict (two parameter
 * sets and a raw buffer, so names, dtypes and shapes can match or not) and through the
 * inspection API (tg_checkpoint_open), whose every accessor is then called. Invariants: a
 * failed load sets a non-empty message and leaves every registered value bitwise unchanged
 * (all-or-nothing); a successful open gives tensors whose sizes agree with their dims.
 * Crashes, leaks and hangs are the sanitizers' and libFuzzer's to report.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/tapegrad.h>

#define FUZZ_TARGET "fuzz-checkpoint"
#define FUZZ_FILE_NAME "tg-fuzz-ckpt-%ld.safetensors"
#include "fuzz-file.h"

static void
load_into_state_dict(unsigned flags)
{
    tg_params *p32 = tg_params_new(TG_F32), *p64 = tg_params_new(TG_F64);
    tg_state_dict *sd = tg_state_dict_new();
    double step = 7.0;
    if (p32 && p64 && sd) {
        tg_params_add(p32, "w", 2, (int64_t[]){2, 3});
        tg_params_add(p32, "f", 1, (int64_t[]){6});
        tg_params_add(p64, "d", 1, (int64_t[]){6});
        for (size_t i = 0; i < tg_params_size(p32); i++)
            ((float *)tg_params_values(p32))[i] = (float)i + 0.5f;
        for (size_t i = 0; i < tg_params_size(p64); i++)
            ((double *)tg_params_values(p64))[i] = (double)i - 0.5;
        tg_state_dict_add_params(sd, "", p32);
        tg_state_dict_add_params(sd, "", p64);
        tg_state_dict_add_buffer(sd, "step", TG_F64, 0, NULL, &step);

        float before32[12];
        double before64[6];
        memcpy(before32, tg_params_values(p32), tg_params_size(p32) * sizeof(float));
        memcpy(before64, tg_params_values(p64), tg_params_size(p64) * sizeof(double));
        tg_status s = tg_state_dict_load(sd, fuzz_path, flags);
        if (s != TG_OK) {
            const char *msg = tg_state_dict_error(sd);
            CHECK(msg && msg[0]);
            CHECK(memcmp(before32, tg_params_values(p32), tg_params_size(p32) * sizeof(float)) == 0);
            CHECK(memcmp(before64, tg_params_values(p64), tg_params_size(p64) * sizeof(double)) == 0);
            CHECK(step == 7.0);
        } else {
            (void)tg_state_dict_metadata(sd, "test");
        }
    }
    tg_state_dict_free(sd);
    tg_params_free(p32);
    tg_params_free(p64);
}

static void
inspect(void)
{
    tg_checkpoint *ck = tg_checkpoint_open(fuzz_path);
    if (!ck)
        return;
    if (tg_checkpoint_status(ck) != TG_OK) {
        const char *msg = tg_checkpoint_error(ck);
        CHECK(msg && msg[0]);
        CHECK(tg_checkpoint_count(ck) == 0 || 1); /* accessors stay callable */
    }
    size_t n = tg_checkpoint_count(ck);
    for (size_t i = 0; i <= n; i++) { /* one past the end on purpose */
        const char *name = tg_checkpoint_name(ck, i);
        (void)tg_checkpoint_dtype_name(ck, i);
        int nd = tg_checkpoint_ndim(ck, i);
        size_t elems = 1;
        for (int a = -1; a <= nd; a++) {
            int64_t d = tg_checkpoint_dim(ck, i, a);
            if (a >= 0 && a < nd)
                elems *= (size_t)d;
        }
        size_t size = tg_checkpoint_size(ck, i);
        if (i < n) {
            CHECK(name != NULL);
            CHECK(tg_checkpoint_find(ck, name) == (long)i);
            CHECK(elems == size);
        }
        tg_dtype dt;
        if (tg_checkpoint_dtype(ck, i, &dt) == TG_OK && size <= (1u << 20)) {
            const void *v = tg_checkpoint_data(ck, i);
            CHECK(v != NULL || size == 0);
            double *dst = malloc((size ? size : 1) * sizeof *dst);
            if (dst)
                tg_checkpoint_read(ck, i, dst, size);
            free(dst);
        }
    }
    size_t m = tg_checkpoint_metadata_count(ck);
    for (size_t i = 0; i <= m; i++) {
        const char *k = tg_checkpoint_metadata_key(ck, i);
        const char *v = tg_checkpoint_metadata_value(ck, i);
        if (i < m) {
            CHECK(k && v);
            CHECK(tg_checkpoint_metadata_get(ck, k) != NULL);
        }
    }
    tg_checkpoint_free(ck);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20) || !write_input(data, size))
        return 0;
    /* The flags come from the input's length, so the bytes themselves stay a plain file
     * (seeds are real checkpoints). */
    unsigned flags = (unsigned)(size % 8);
    load_into_state_dict(flags);
    inspect();
    unlink(fuzz_path);
    return 0;
}
