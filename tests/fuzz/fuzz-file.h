/*
 * What the fuzz targets that read a file (checkpoint, csv, idx) share: an invariant check and
 * the helper that writes the input to a temporary file for the loader under test.
 *
 * Define before including:
 *   FUZZ_TARGET     the target's name, which starts CHECK's message ("fuzz-csv")
 *   FUZZ_FILE_NAME  the temporary file's name under $TMPDIR (else /tmp), a format whose one
 *                   conversion, %ld, takes the process id ("tg-fuzz-csv-%ld.csv")
 */
#ifndef TG_FUZZ_FILE_H
#define TG_FUZZ_FILE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#if !defined(FUZZ_TARGET) || !defined(FUZZ_FILE_NAME)
#error "define FUZZ_TARGET and FUZZ_FILE_NAME before including fuzz-file.h"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test: on failure, say which and abort, so that libFuzzer
 * (and the corpus replay under meson test) reports the input. */
#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, FUZZ_TARGET ": invariant failed at line %d: %s\n", __LINE__,       \
                    #cond);                                                                    \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* The temporary file: named on first use, one per process (libFuzzer's -jobs run several). */
static char fuzz_path[4096];

/* Writes the input to fuzz_path; false when it cannot (the input is then skipped). */
static bool
write_input(const uint8_t *data, size_t size)
{
    if (!fuzz_path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(fuzz_path, sizeof fuzz_path, "%s/" FUZZ_FILE_NAME, dir && *dir ? dir : "/tmp",
                 (long)getpid());
    }
    FILE *f = fopen(fuzz_path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

#endif /* TG_FUZZ_FILE_H */
