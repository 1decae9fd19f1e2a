/**
 * @file
 * Checkpoints in the safetensors format (https://github.com/huggingface/safetensors):
 *
 *     [8 bytes: N, u64 little-endian] [N bytes: JSON header] [data]
 *
 * The header maps each tensor name to {"dtype": "F32", "shape": [r, c], "data_offsets": [b, e]}
 * (byte offsets into the data, which follows the header), plus an optional "__metadata__"
 * object of string values. Values are little-endian, row-major. Files written here load in
 * Python's `safetensors` and PyTorch unchanged, and files from them load here when their dtypes
 * are F32/F64.
 *
 * Saving is atomic: the file is written to a temporary in the same directory, flushed with
 * fsync, renamed over the target and the directory is synced, so a crash or a full disk leaves
 * either the old complete file or the new complete file, never a mix. On any failure the
 * temporary is removed and the old file is untouched. Output is deterministic: the same
 * tensors and metadata give the same bytes (tensors in registration order, the header padded
 * with spaces to a multiple of 8 bytes).
 *
 * Temporaries. A save of dir/name writes dir/.name.tg-save.XXXXXX, where XXXXXX are six
 * characters from [A-Za-z0-9] (mkstemp), and holds an exclusive flock(2) on it from creation
 * until it has been renamed (or removed after a failure). A process killed meanwhile (SIGKILL,
 * OOM killer, preemption, power loss) leaves that temporary behind, so every save first removes
 * the stale temporaries of the same file: entries of dir whose name matches that pattern
 * exactly (for this name: not another checkpoint's, not rsync's .name.XXXXXX, nothing longer
 * or shorter), that are regular files (symbolic links, directories, FIFOs and devices with
 * such names are left alone, and not followed or opened), and whose lock can be taken without
 * waiting. A save still in progress, in this or any other process on this machine, holds its
 * lock and its temporary is left alone. The removal is best effort: it never fails the save.
 * On file systems without flock (where it fails), nothing is ever removed. Caveat: locks over
 * NFS only exclude other machines where the client forwards them (Linux does, as fcntl locks).
 *
 * Symbolic links. When path is a symbolic link, the save replaces the file at the end of its
 * chain (relative targets are taken from the directory of the link that holds them, at most
 * 40 links), atomically, with the temporary in the target's directory; the links are left as
 * they are, pointing at the new file (as editors and install(1) do). A dangling link gets its
 * target created (its directory must exist; the error names both). A link in a sticky
 * world-writable directory such as /tmp is followed only when it belongs to the caller or to
 * the directory's owner (the rule of Linux's fs.protected_symlinks), otherwise the save fails.
 * Only regular files are replaced: a path (or link target) that is a directory, FIFO, socket or
 * device is refused with TG_ERR_IO and left as it is.
 *
 * Loading validates the whole file before trusting any of it (header length bounded by
 * TG_CHECKPOINT_HEADER_MAX and by the file size, UTF-8 JSON object without duplicate keys,
 * nesting <= 64, integer-only shapes and offsets, known dtypes, rank <= TG_MAX_DIMS,
 * overflow-checked sizes, byte ranges that exactly tile the data with no hole, overlap or
 * trailing byte, unique bounded names) and then checks every tensor against what it is loaded
 * into (name, dtype, shape). Only when all of that passes are values copied, so a failed load
 * leaves every parameter and buffer bitwise unchanged. Messages name the file, the tensor and
 * the expected and actual values, e.g.
 *
 *     load "model.safetensors": tensor "fc1/W": shape in file (128x64), model expects (64x128)
 */
#ifndef TAPEGRAD_CHECKPOINT_H
#define TAPEGRAD_CHECKPOINT_H

#include <tapegrad/tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TG_CHECKPOINT_HEADER_MAX (16u << 20) /**< bytes of JSON header accepted on load */
#define TG_CHECKPOINT_TENSORS_MAX 65536      /**< tensors per file */
#define TG_CHECKPOINT_NAME_MAX 1024          /**< bytes of a tensor name */
#define TG_CHECKPOINT_META_MAX 65536         /**< bytes of one metadata key or value */
#define TG_CHECKPOINT_META_COUNT_MAX 1024    /**< metadata entries */

/* --------------------------------------------------------------------------------------- */
/** @name State dicts
 * A state dict: the named tensors that one checkpoint holds, by reference. Register parameter
 * sets (each under a name prefix) and raw buffers (optimizer state, step counters), then save
 * or load them all in one file. Nothing is copied at registration: parameter sets are
 * enumerated at save/load time (so parameters added later are included), and buffers must
 * stay valid while the state dict is used.
 *
 *     tg_state_dict *sd = tg_state_dict_new();
 *     tg_state_dict_add_params(sd, "", model);              // "fc1/W", "fc1/b", ...
 *     tg_state_dict_add_params(sd, "optim/m/", adam_m);     // "optim/m/fc1/W", ...
 *     tg_state_dict_add_buffer(sd, "optim/step", TG_F64, 0, NULL, &step);
 *     tg_state_dict_set_metadata(sd, "epoch", "3");
 *     if (tg_state_dict_save(sd, "ckpt.safetensors"))
 *         fprintf(stderr, "%s\n", tg_state_dict_error(sd));
 * @{ */
/** Named tensors (parameter sets and raw buffers, by reference) and metadata of one file. */
typedef struct tg_state_dict tg_state_dict;

/** Load flags (tg_state_dict_load). The default (0) is strict: every registered tensor must be
 * in the file and every tensor in the file must be registered. */
enum {
    TG_LOAD_ALLOW_MISSING = 1u << 0,    /**< registered tensors absent from the file are kept */
    /** tensors in the file that nobody registered are skipped */
    TG_LOAD_ALLOW_UNEXPECTED = 1u << 1,
    TG_LOAD_CHECK_FINITE = 1u << 2,     /**< fail on NaN/Inf, naming the tensor and the index */
};

/** An empty state dict; NULL only when out of memory. */
TG_API tg_state_dict *tg_state_dict_new(void);
/** Free the state dict; NULL is a no-op; borrowed objects stay. */
TG_API void tg_state_dict_free(tg_state_dict *sd);
/** Status of the last failed call (TG_OK after a call that succeeded). */
TG_API tg_status tg_state_dict_status(const tg_state_dict *sd);
/** Message of the last failed call (NULL after a call that succeeded). */
TG_API const char *tg_state_dict_error(const tg_state_dict *sd);

/** Every tensor of p (its parameters, then its buffers), named prefix + its name. prefix may
 * be "" or NULL. p is borrowed. */
TG_API tg_status tg_state_dict_add_params(tg_state_dict *sd, const char *prefix, tg_params *p);
/** One raw buffer of ndim dims (ndim 0 = a scalar), row-major, host byte order; the name is
 * copied, data is borrowed. dt is TG_F32 or TG_F64. */
TG_API tg_status tg_state_dict_add_buffer(tg_state_dict *sd, const char *name, tg_dtype dt,
                                          int ndim, const int64_t *dims, void *data);
/** String metadata saved under "__metadata__" (never interpreted). Keys and values are copied,
 * must be valid UTF-8 and at most TG_CHECKPOINT_META_MAX bytes; setting a key again replaces
 * its value; value NULL removes the key. */
TG_API tg_status tg_state_dict_set_metadata(tg_state_dict *sd, const char *key,
                                            const char *value);
/** The value for key (after a load: the file's metadata), or NULL. Owned by the state dict. */
TG_API const char *tg_state_dict_metadata(const tg_state_dict *sd, const char *key);

/** Write every registered tensor and the metadata to path, atomically (see above; through a
 * symbolic link, to its final target), first removing stale temporaries of earlier killed saves
 * of the same file (see "Temporaries" above). The new file gets the old file's permission bits,
 * or 0644 when there was none. Errors: TG_ERR_ARG
 * (duplicate or bad names, unsupported dtypes), TG_ERR_IO (with strerror), TG_ERR_NOMEM. If
 * only the final directory sync fails, the new file is in place and TG_ERR_IO says so. */
TG_API tg_status tg_state_dict_save(tg_state_dict *sd, const char *path);
/** Read path into the registered tensors, all or nothing. flags: TG_LOAD_* or 0. On success the
 * file's metadata replaces the state dict's. Errors: TG_ERR_IO (open/read), TG_ERR_FORMAT
 * (malformed file, missing/unexpected tensors, dtype or shape mismatches, NaN/Inf under
 * TG_LOAD_CHECK_FINITE), TG_ERR_NOMEM. */
TG_API tg_status tg_state_dict_load(tg_state_dict *sd, const char *path, unsigned flags);

/** Shorthand for one parameter set with no prefix: save p to path. err (may be NULL) receives
 * the message, truncated to errsize bytes. */
TG_API tg_status tg_checkpoint_save_params(tg_params *p, const char *path, char *err,
                                           size_t errsize);
/** Shorthand for one parameter set with no prefix: load path into p. err (may be NULL)
 * receives the message, truncated to errsize bytes. */
TG_API tg_status tg_checkpoint_load_params(tg_params *p, const char *path, char *err,
                                           size_t errsize);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Inspection
 * A whole file read into memory, validated as above, for listing names, dtypes,
 * shapes and metadata of any safetensors file. Tensors of every safetensors dtype are listed;
 * values are available for F32/F64 only (others are refused by name, e.g. "F16").
 *
 * Tensors are in file order (by data offset). Accessors return NULL/0 when i is out of range.
 * @{ */
/** A safetensors file read into memory and validated. */
typedef struct tg_checkpoint tg_checkpoint;

/** Read and validate path. Never NULL except when out of memory: check
 * tg_checkpoint_status()/error() before use. */
TG_API tg_checkpoint *tg_checkpoint_open(const char *path);
/** Free the file's contents; NULL is a no-op. */
TG_API void tg_checkpoint_free(tg_checkpoint *ck);
/** The status of the open, or of the last tg_checkpoint_dtype, tg_checkpoint_data or
 * tg_checkpoint_read call (TG_OK after one that succeeded). */
TG_API tg_status tg_checkpoint_status(const tg_checkpoint *ck);
/** The message of the last failure; NULL when all is well. */
TG_API const char *tg_checkpoint_error(const tg_checkpoint *ck);

TG_API size_t tg_checkpoint_count(const tg_checkpoint *ck); /**< The number of tensors. */
/** The index of the tensor of that name, or -1. */
TG_API long tg_checkpoint_find(const tg_checkpoint *ck, const char *name);
TG_API const char *tg_checkpoint_name(const tg_checkpoint *ck, size_t i); /**< Tensor i's name. */
/** Tensor i's safetensors dtype: "F32", "I8", ... */
TG_API const char *tg_checkpoint_dtype_name(const tg_checkpoint *ck, size_t i);
TG_API int tg_checkpoint_ndim(const tg_checkpoint *ck, size_t i); /**< Tensor i's rank. */
/** Dim `axis` of tensor i (0 when out of range). */
TG_API int64_t tg_checkpoint_dim(const tg_checkpoint *ck, size_t i, int axis);
/** Tensor i's number of elements. */
TG_API size_t tg_checkpoint_size(const tg_checkpoint *ck, size_t i);
/** The tensor's dtype as a tg_dtype; TG_ERR_UNSUPPORTED (message on ck, naming the tensor and
 * its dtype) for anything but F32/F64. */
TG_API tg_status tg_checkpoint_dtype(tg_checkpoint *ck, size_t i, tg_dtype *dt);
/** The values (float* or double*, host byte order, owned by ck), or NULL with the message set
 * for other dtypes. */
TG_API const void *tg_checkpoint_data(tg_checkpoint *ck, size_t i);
/** The values converted to double; n must equal tg_checkpoint_size(). */
TG_API tg_status tg_checkpoint_read(tg_checkpoint *ck, size_t i, double *dst, size_t n);

/** The number of metadata entries ("__metadata__" of the file). */
TG_API size_t tg_checkpoint_metadata_count(const tg_checkpoint *ck);
/** The key of metadata entry i. */
TG_API const char *tg_checkpoint_metadata_key(const tg_checkpoint *ck, size_t i);
/** The value of metadata entry i. */
TG_API const char *tg_checkpoint_metadata_value(const tg_checkpoint *ck, size_t i);
/** The value for key, or NULL. */
TG_API const char *tg_checkpoint_metadata_get(const tg_checkpoint *ck, const char *key);
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_CHECKPOINT_H */
