/**
 * @file
 * Data sets: IDX files (MNIST-style, plain or gzip-compressed), numeric CSV, and seeded
 * shuffled minibatches.
 *
 * A tg_dataset holds n examples, each a dense feature block of one shape (a 28x28 image, a CSV
 * row) stored contiguously in float32 or float64, plus optional int32 labels. Loading is
 * all-or-nothing: a failed load leaves the data set as it was and records a message on it that
 * names the file, the place (byte offset, or line and column) and the expected and actual
 * values, e.g.
 *
 *     "train-labels.gz": 59999 labels but "train-images.gz" has 60000 images
 *
 * The message is owned by the data set (tg_dataset_error) and stays until the next call that
 * succeeds.
 *
 * IDX (LeCun's format): 2 zero bytes, a type byte (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
 * 0x0D f32, 0x0E f64), a rank byte, rank big-endian u32 dims, then the values big-endian in
 * row-major order. Dim 0 counts examples. Labels come from a second, rank-1 IDX file of an
 * integer type.
 *
 * Gzip (IDX and CSV): a file is gzip when it starts with the gzip magic 1f 8b, whatever its
 * name. A file may hold several gzip members one after another (as `cat a.gz b.gz > c.gz`
 * makes; gzip -d reads them as one stream), and their contents are read as one stream. Any
 * byte after the last member, zero padding included, is a format error naming the offset where
 * the trailing bytes start, as is a corrupt or cut member.
 *
 * Messages quote file content (a CSV cell) with invisible and control characters escaped:
 * `\t \n \r \" \\`, `\uXXXX` for a no-break or zero-width space, a byte-order mark, a bidi
 * control and similar, `\xNN` for other control bytes and for bytes that are not UTF-8.
 */
#ifndef TAPEGRAD_DATA_H
#define TAPEGRAD_DATA_H

#include <tapegrad/tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_dataset tg_dataset; /**< examples (features + optional labels) in memory */
typedef struct tg_batcher tg_batcher; /**< walks a data set in (shuffled) minibatches */

/** Options of tg_dataset_load_idx (zero: the defaults). */
typedef struct tg_idx_options {
    tg_dtype dtype;     /**< storage for the features: TG_F32 (the default, 0) or TG_F64 */
    bool scale_to_unit; /**< u8 data only: divide by 255, so pixels lie in [0, 1] */
} tg_idx_options;

/** Whether a CSV file's first line is a header.
 *
 * The first line below is the first non-blank one. In AUTO mode its cells are numbers (an
 * out-of-range one such as 1e999 counts as a number), empty, or text (anything else, quoted
 * numbers included). The line is a header when it has text and no number, data when it has
 * no text (and fails as data on an empty or out-of-range cell), and an error when it has both
 * (e.g. "1.5,abc": a data row with a typo, or a header with numeric names such as "x,2019"):
 * the message names the line, the first text cell and the first number, with their columns,
 * and TG_CSV_HEADER_PRESENT or NONE says what is meant. When the data set ends up empty, or
 * the first data line fails, the message says which line was taken as a header and, for AUTO,
 * which cell of it is not a number. Cells in messages show control and invisible characters
 * escaped (as `\r`, `\ufeff`). */
typedef enum tg_csv_header {
    TG_CSV_HEADER_AUTO = 0, /**< the first line is a header when it has text and no number */
    TG_CSV_HEADER_NONE,     /**< every line is data */
    TG_CSV_HEADER_PRESENT,  /**< the first line is a header and is skipped */
} tg_csv_header;

/** Options of tg_dataset_load_csv (zero: the defaults). */
typedef struct tg_csv_options {
    tg_dtype dtype;       /**< TG_F32 (default) or TG_F64 */
    tg_csv_header header; /**< default TG_CSV_HEADER_AUTO */
    char delimiter;       /**< default ',' (when 0) */
    bool has_labels;      /**< take labels from column label_column */
    int label_column;     /**< 0-based; -1 means the last column. Values: integers >= 0 */
} tg_csv_options;

TG_API tg_dataset *tg_dataset_new(void); /**< An empty data set; NULL only when out of memory. */
TG_API void tg_dataset_free(tg_dataset *ds); /**< Free the data set; NULL is a no-op. */
/** Status of the last failed call, or TG_OK after a call that succeeded. */
TG_API tg_status tg_dataset_status(const tg_dataset *ds);
/** Message of the last failed call, or NULL after a call that succeeded. */
TG_API const char *tg_dataset_error(const tg_dataset *ds);

/** Load images (any IDX rank 1..TG_MAX_DIMS) and, when labels_path is not NULL, their labels
 * (rank-1 IDX of u8/i8/i16/i32, every label >= 0, as many as images). opt may be NULL. Replaces
 * the data set's contents on success. Errors: TG_ERR_IO (open/read), TG_ERR_FORMAT (bad magic,
 * unknown type, truncated, trailing bytes, counts that disagree, dims overflow), TG_ERR_ARG,
 * TG_ERR_NOMEM. */
TG_API tg_status tg_dataset_load_idx(tg_dataset *ds, const char *images_path,
                                     const char *labels_path, const tg_idx_options *opt);
/** Load a numeric CSV file (plain or gzip): one example per line, cells parsed as C-locale
 * numbers (nan/inf accepted), surrounding spaces and tabs ignored, blank lines skipped. Text is
 * UTF-8 or ASCII: a leading UTF-8 byte-order mark (Excel's "CSV UTF-8") is skipped; UTF-16 is
 * refused by name. A line ends at LF, CRLF or a lone CR (classic Mac OS), mixed or not; line
 * numbers count each of them once. Errors name the file, line and column: empty cells,
 * non-numbers (with a hint for a decimal comma, another delimiter or quotes), ragged rows,
 * labels that are not integers >= 0, NUL bytes. opt may be NULL. */
TG_API tg_status tg_dataset_load_csv(tg_dataset *ds, const char *path, const tg_csv_options *opt);

TG_API size_t tg_dataset_count(const tg_dataset *ds);    /**< The number of examples. */
TG_API size_t tg_dataset_features(const tg_dataset *ds); /**< Values per example. */
/** Rank of one example's shape (2 for 28x28 MNIST images, 1 for a CSV row). */
TG_API int tg_dataset_ndim(const tg_dataset *ds);
/** Dim `axis` of one example's shape (28 and 28 for MNIST images, the column count for CSV);
 * 0 when out of range. */
TG_API int64_t tg_dataset_dim(const tg_dataset *ds, int axis);
TG_API tg_dtype tg_dataset_dtype(const tg_dataset *ds); /**< The dtype of the features. */
/** count x features values (float* or double* by dtype), row-major; NULL when empty. */
TG_API const void *tg_dataset_data(const tg_dataset *ds);
/** count labels, or NULL when the data set has none. */
TG_API const int32_t *tg_dataset_labels(const tg_dataset *ds);
/** 1 + the largest label (0 without labels). */
TG_API int32_t tg_dataset_num_classes(const tg_dataset *ds);

/* --------------------------------------------------------------------------------------- */
/** @name Minibatches
 * Each epoch visits every example once, in an order drawn from rng by a
 * Fisher-Yates shuffle (or in file order when rng is NULL), so the same seed gives the same
 * batches bit for bit. The data set and rng are borrowed and must outlive the batcher.
 * @{ */
/** One minibatch, filled by tg_batcher_next. */
typedef struct tg_batch {
    size_t size;           /**< examples in this batch: batch_size, or fewer for the last one */
    const void *x;         /**< features, gathered: (size x features) for TG_EXAMPLES_AS_ROWS,
                              (features x size) for TG_EXAMPLES_AS_COLUMNS */
    const int32_t *labels; /**< size labels, or NULL when the data set has none */
    const size_t *indices; /**< which examples of the data set, in batch order */
} tg_batch;

/** NULL on a bad argument (NULL or empty data set, batch_size 0) or out of memory; a static
 * reason goes to *err when err is not NULL. The first epoch starts shuffled. */
TG_API tg_batcher *tg_batcher_new(const tg_dataset *ds, size_t batch_size, tg_layout layout,
                                  bool drop_last, tg_rng *rng, const char **err);
/** Free the batcher (not its data set or rng); NULL is a no-op. */
TG_API void tg_batcher_free(tg_batcher *b);
/** Fill *out with the next batch and return true; false at the end of the epoch (then call
 * tg_batcher_reset). The batch's buffers belong to the batcher and stay valid until the next
 * call. */
TG_API bool tg_batcher_next(tg_batcher *b, tg_batch *out);
/** Start a new epoch: draw a fresh order from rng (if any) and rewind. */
TG_API void tg_batcher_reset(tg_batcher *b);
/** Batches per epoch (counting a short last batch unless drop_last). */
TG_API size_t tg_batcher_num_batches(const tg_batcher *b);
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_DATA_H */
