/*
 * Data-parallel training over MPI: parameter broadcast, gradient allreduce, error agreement,
 * rank-0 checkpoints. Built into libtapegrad-mpi on top of libtapegrad's public API, so the
 * core library never depends on MPI.
 *
 * Every collective call starts with agree(): one MPI_Allreduce(MAX) of five integers,
 *
 *     { failed?, n, -n, dtype, -dtype }   ->   any failure, max n, -min n, max/min dtype
 *
 * so that in the common case one tiny message tells every rank that every other rank is fine
 * and is about to send the same number of values of the same type. Only when it is not (the
 * result is the same on every rank, so every rank takes the same branch) do the ranks spend
 * a few more collectives finding the lowest failing rank and broadcasting its message.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/mpi.h>

#define ERRMSG_SIZE 768
#define REMOTE_MSG_SIZE 512 /* bytes of a failing rank's message that travel */
#define MAX_IN_FLIGHT 64    /* bucketed allreduces outstanding at once */

struct tg_mpi {
    MPI_Comm comm; /* our duplicate, MPI_ERRORS_RETURN; MPI_COMM_NULL if tg_mpi_new failed */
    int rank, size;
    size_t bucket_bytes;
    tg_status status;
    char errmsg[ERRMSG_SIZE];
    tg_mpi_stats stats;
    MPI_Request requests[MAX_IN_FLIGHT];
};

static tg_status
fail(tg_mpi *m, tg_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->errmsg, sizeof m->errmsg, fmt, ap);
    va_end(ap);
    m->status = s;
    return s;
}

static tg_status
succeed(tg_mpi *m)
{
    m->status = TG_OK;
    m->errmsg[0] = '\0';
    return TG_OK;
}

/* A failed MPI call (the communicator returns errors instead of aborting). */
static tg_status
fail_mpi(tg_mpi *m, const char *what, const char *call, int rc)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", rc);
    return fail(m, TG_ERR_IO, "%s: rank %d of %d: %s failed: %s", what, m->rank, m->size, call,
                text);
}

/* The handle is unusable (NULL, or tg_mpi_new failed): nothing can be communicated. */
static bool
unusable(tg_mpi *m, const char *what)
{
    if (!m)
        return true;
    if (m->comm == MPI_COMM_NULL) {
        fail(m, TG_ERR_ARG, "%s: this tg_mpi has no communicator (tg_mpi_new failed)", what);
        return true;
    }
    return false;
}

/* ---------------------------------------------------------------------------------------
 * Agreement. `local` and `local_msg` are this rank's verdict; p (may be NULL) the parameters
 * about to be communicated, whose count and dtype must match on every rank. Returns the same
 * status on every rank (unless MPI itself fails).
 */
enum { A_FAILED, A_N, A_NEG_N, A_DT, A_NEG_DT, A_COUNT };

static tg_status
agree_slow(tg_mpi *m, const char *what, tg_status local, const char *local_msg, int64_t n,
           int64_t dt, const int64_t *v)
{
    int rc;
    if (v[A_FAILED]) {
        /* The lowest failing rank speaks. */
        int mine = local != TG_OK ? m->rank : INT_MAX, first = INT_MAX;
        rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, m->comm);
        if (rc != MPI_SUCCESS)
            return fail_mpi(m, what, "MPI_Allreduce", rc);
        int status = (int)local;
        char msg[REMOTE_MSG_SIZE] = {0};
        if (m->rank == first)
            snprintf(msg, sizeof msg, "%s", local_msg ? local_msg : tg_status_string(local));
        rc = MPI_Bcast(&status, 1, MPI_INT, first, m->comm);
        if (rc == MPI_SUCCESS)
            rc = MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, m->comm);
        if (rc != MPI_SUCCESS)
            return fail_mpi(m, what, "MPI_Bcast", rc);
        msg[sizeof msg - 1] = '\0';
        return fail(m, (tg_status)status, "%s: rank %d of %d: %s", what, first, m->size, msg);
    }
    /* Everyone is fine but the ranks hold different parameters: name one rank at each end. */
    bool by_count = v[A_N] != -v[A_NEG_N];
    int64_t lo = by_count ? -v[A_NEG_N] : -v[A_NEG_DT], hi = by_count ? v[A_N] : v[A_DT];
    int64_t key = by_count ? n : dt;
    int ends[2] = {key == lo ? m->rank : INT_MAX, key == hi ? m->rank : INT_MAX}, who[2];
    rc = MPI_Allreduce(ends, who, 2, MPI_INT, MPI_MIN, m->comm);
    if (rc != MPI_SUCCESS)
        return fail_mpi(m, what, "MPI_Allreduce", rc);
    if (by_count)
        return fail(m, TG_ERR_SHAPE,
                    "%s: ranks hold different parameters: rank %d has %lld values, rank %d has "
                    "%lld",
                    what, who[0], (long long)lo, who[1], (long long)hi);
    return fail(m, TG_ERR_DTYPE,
                "%s: ranks hold different parameters: rank %d has %s values, rank %d has %s",
                what, who[0], tg_dtype_name((tg_dtype)lo), who[1], tg_dtype_name((tg_dtype)hi));
}

static tg_status
agree(tg_mpi *m, const char *what, tg_status local, const char *local_msg, tg_params *p)
{
    double t0 = MPI_Wtime();
    int64_t n = p ? (int64_t)tg_params_size(p) : 0, dt = p ? (int64_t)tg_params_dtype(p) : 0;
    int64_t v[A_COUNT] = {local != TG_OK, n, -n, dt, -dt};
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, A_COUNT, MPI_INT64_T, MPI_MAX, m->comm);
    tg_status s;
    if (rc != MPI_SUCCESS)
        s = fail_mpi(m, what, "MPI_Allreduce", rc);
    else if (!v[A_FAILED] && v[A_N] == -v[A_NEG_N] && v[A_DT] == -v[A_NEG_DT])
        s = succeed(m);
    else
        s = agree_slow(m, what, local, local_msg, n, dt, v);
    m->stats.check_seconds += MPI_Wtime() - t0;
    return s;
}

tg_status
tg_mpi_check(tg_mpi *m, tg_status local, const char *local_msg)
{
    if (unusable(m, "check"))
        return TG_ERR_ARG;
    return agree(m, "check", local, local_msg, NULL);
}

/* ---------------------------------------------------------------------------------------
 * Handle.
 */
tg_mpi *
tg_mpi_new(MPI_Comm comm, const tg_mpi_options *opt)
{
    tg_mpi *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->comm = MPI_COMM_NULL;
    m->rank = -1;
    m->bucket_bytes = opt ? opt->bucket_bytes : 0;
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (!up || down) {
        fail(m, TG_ERR_ARG, "mpi_new: MPI is %s (the caller owns MPI_Init/MPI_Finalize)",
             down ? "already finalized" : "not initialized");
        return m;
    }
    if (comm == MPI_COMM_NULL) {
        fail(m, TG_ERR_ARG, "mpi_new: the communicator is MPI_COMM_NULL");
        return m;
    }
    MPI_Comm dup;
    int rc = MPI_Comm_dup(comm, &dup);
    if (rc != MPI_SUCCESS) {
        fail_mpi(m, "mpi_new", "MPI_Comm_dup", rc);
        return m;
    }
    rc = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_rank(dup, &m->rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(dup, &m->size);
    if (rc != MPI_SUCCESS) {
        fail_mpi(m, "mpi_new", "MPI_Comm_set_errhandler/rank/size", rc);
        MPI_Comm_free(&dup);
        m->rank = -1;
        m->size = 0;
        return m;
    }
    m->comm = dup;
    succeed(m);
    return m;
}

void
tg_mpi_free(tg_mpi *m)
{
    if (!m)
        return;
    int down = 0;
    MPI_Finalized(&down);
    if (m->comm != MPI_COMM_NULL && !down)
        MPI_Comm_free(&m->comm);
    free(m);
}

tg_status
tg_mpi_status(const tg_mpi *m)
{
    return m ? m->status : TG_ERR_ARG;
}

const char *
tg_mpi_error(const tg_mpi *m)
{
    if (!m)
        return "mpi: the tg_mpi handle is NULL";
    return m->status == TG_OK ? NULL : m->errmsg;
}

int
tg_mpi_rank(const tg_mpi *m)
{
    return m ? m->rank : -1;
}

int
tg_mpi_size(const tg_mpi *m)
{
    return m ? m->size : 0;
}

/* ---------------------------------------------------------------------------------------
 * Moving values. MPI counts are int: longer buffers go in INT_MAX-element pieces.
 */
static MPI_Datatype
mpi_type(tg_dtype dt)
{
    return dt == TG_F32 ? MPI_FLOAT : MPI_DOUBLE;
}

tg_status
tg_mpi_broadcast_params(tg_mpi *m, tg_params *p)
{
    const char *what = "broadcast_params";
    if (unusable(m, what))
        return TG_ERR_ARG;
    tg_status s = agree(m, what, p ? TG_OK : TG_ERR_ARG, "params is NULL", p);
    if (s != TG_OK)
        return s;
    double t0 = MPI_Wtime();
    size_t n = tg_params_size(p), esz = tg_dtype_size(tg_params_dtype(p));
    char *v = tg_params_values(p);
    int rc = MPI_SUCCESS;
    for (size_t off = 0; off < n && rc == MPI_SUCCESS; off += (size_t)INT_MAX) {
        size_t cnt = n - off < (size_t)INT_MAX ? n - off : (size_t)INT_MAX;
        rc = MPI_Bcast(v + off * esz, (int)cnt, mpi_type(tg_params_dtype(p)), 0, m->comm);
    }
    m->stats.other_seconds += MPI_Wtime() - t0;
    return rc == MPI_SUCCESS ? TG_OK : fail_mpi(m, what, "MPI_Bcast", rc);
}

/*
 * g ← Σ_r g_r, then g ← g / P when averaging. Every element's sum is formed from the same P
 * values whatever the bucketing, so buckets change latency, not results. The division (not a
 * multiplication by a rounded 1/P) makes the mean the correctly rounded quotient of the sum.
 */
static tg_status
reduce_grads(tg_mpi *m, tg_params *p, const tg_tape *tape, bool average, const char *what)
{
    if (unusable(m, what))
        return TG_ERR_ARG;
    tg_status local = TG_OK;
    const char *msg = NULL;
    if (!p) {
        local = TG_ERR_ARG;
        msg = "params is NULL";
    } else if (tape && tg_tape_status(tape) != TG_OK) {
        local = tg_tape_status(tape);
        msg = tg_tape_error(tape);
    }
    tg_status s = agree(m, what, local, msg, p);
    if (s != TG_OK)
        return s;

    double t0 = MPI_Wtime();
    tg_dtype dt = tg_params_dtype(p);
    size_t n = tg_params_size(p), esz = tg_dtype_size(dt);
    char *g = tg_params_grads(p);
    size_t piece = (size_t)INT_MAX;
    if (m->bucket_bytes > 0 && m->bucket_bytes / esz < piece)
        piece = m->bucket_bytes / esz > 0 ? m->bucket_bytes / esz : 1;
    int rc = MPI_SUCCESS, in_flight = 0;
    uint64_t messages = 0;
    for (size_t off = 0; off < n && rc == MPI_SUCCESS; off += piece) {
        int cnt = (int)(n - off < piece ? n - off : piece);
        if (m->bucket_bytes == 0) {
            rc = MPI_Allreduce(MPI_IN_PLACE, g + off * esz, cnt, mpi_type(dt), MPI_SUM, m->comm);
        } else {
            if (in_flight == MAX_IN_FLIGHT) {
                rc = MPI_Waitall(in_flight, m->requests, MPI_STATUSES_IGNORE);
                in_flight = 0;
                if (rc != MPI_SUCCESS)
                    break;
            }
            rc = MPI_Iallreduce(MPI_IN_PLACE, g + off * esz, cnt, mpi_type(dt), MPI_SUM,
                                m->comm, &m->requests[in_flight]);
            if (rc == MPI_SUCCESS)
                in_flight++;
        }
        messages++;
    }
    if (in_flight > 0) {
        int rc2 = MPI_Waitall(in_flight, m->requests, MPI_STATUSES_IGNORE);
        if (rc == MPI_SUCCESS)
            rc = rc2;
    }
    if (rc != MPI_SUCCESS) {
        m->stats.reduce_seconds += MPI_Wtime() - t0;
        return fail_mpi(m, what, m->bucket_bytes ? "MPI_Iallreduce" : "MPI_Allreduce", rc);
    }
    if (average && m->size > 1) {
        if (dt == TG_F32) {
            float *gf = (float *)(void *)g, pf = (float)m->size;
            for (size_t i = 0; i < n; i++)
                gf[i] /= pf;
        } else {
            double *gd = (double *)(void *)g, pd = (double)m->size;
            for (size_t i = 0; i < n; i++)
                gd[i] /= pd;
        }
    }
    m->stats.reduce_seconds += MPI_Wtime() - t0;
    m->stats.reductions++;
    m->stats.messages += messages;
    m->stats.bytes += (double)(n * esz);
    return TG_OK;
}

tg_status
tg_mpi_average_grads(tg_mpi *m, tg_params *p, const tg_tape *tape)
{
    return reduce_grads(m, p, tape, true, "average_grads");
}

tg_status
tg_mpi_sum_grads(tg_mpi *m, tg_params *p, const tg_tape *tape)
{
    return reduce_grads(m, p, tape, false, "sum_grads");
}

/* FNV-1a, 64-bit, over the value bytes. */
static uint64_t
checksum(const unsigned char *b, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

tg_status
tg_mpi_verify_params(tg_mpi *m, tg_params *p)
{
    const char *what = "verify_params";
    if (unusable(m, what))
        return TG_ERR_ARG;
    tg_status s = agree(m, what, p ? TG_OK : TG_ERR_ARG, "params is NULL", p);
    if (s != TG_OK)
        return s;
    double t0 = MPI_Wtime();
    size_t bytes = tg_params_size(p) * tg_dtype_size(tg_params_dtype(p));
    uint64_t mine = checksum(tg_params_values(p), bytes), root = mine;
    int rc = MPI_Bcast(&root, 1, MPI_UINT64_T, 0, m->comm);
    int differs = mine != root ? m->rank : INT_MAX, first = INT_MAX;
    if (rc == MPI_SUCCESS)
        rc = MPI_Allreduce(&differs, &first, 1, MPI_INT, MPI_MIN, m->comm);
    m->stats.other_seconds += MPI_Wtime() - t0;
    if (rc != MPI_SUCCESS)
        return fail_mpi(m, what, "MPI_Bcast/MPI_Allreduce", rc);
    if (first != INT_MAX)
        return fail(m, TG_ERR_CHECK,
                    "%s: the parameter values of rank %d (and maybe others) differ from rank "
                    "0's (checksums differ)",
                    what, first);
    return TG_OK;
}

tg_status
tg_mpi_shard_range(size_t n, int rank, int size, size_t *begin, size_t *end)
{
    if (begin)
        *begin = 0;
    if (end)
        *end = 0;
    if (size < 1 || rank < 0 || rank >= size || !begin || !end)
        return TG_ERR_ARG;
    size_t q = n / (size_t)size, r = n % (size_t)size, k = (size_t)rank;
    *begin = k * q + (k < r ? k : r);
    *end = *begin + q + (k < r ? 1 : 0);
    return TG_OK;
}

/* ---------------------------------------------------------------------------------------
 * Checkpoints. Arguments are agreed on before rank 0 touches the file, the outcome after.
 */
tg_status
tg_mpi_save_params(tg_mpi *m, tg_params *p, const char *path)
{
    const char *what = "save_params";
    if (unusable(m, what))
        return TG_ERR_ARG;
    tg_status s = agree(m, what, p && path ? TG_OK : TG_ERR_ARG, "params or path is NULL", p);
    if (s != TG_OK)
        return s;
    double t0 = MPI_Wtime();
    char err[REMOTE_MSG_SIZE] = {0};
    if (m->rank == 0)
        s = tg_checkpoint_save_params(p, path, err, sizeof err);
    m->stats.other_seconds += MPI_Wtime() - t0;
    return agree(m, what, s, err, NULL);
}

tg_status
tg_mpi_load_params(tg_mpi *m, tg_params *p, const char *path)
{
    const char *what = "load_params";
    if (unusable(m, what))
        return TG_ERR_ARG;
    bool ok = p && (m->rank != 0 || path);
    tg_status s = agree(m, what, ok ? TG_OK : TG_ERR_ARG, "params or path is NULL", p);
    if (s != TG_OK)
        return s;
    char err[REMOTE_MSG_SIZE] = {0};
    if (m->rank == 0)
        s = tg_checkpoint_load_params(p, path, err, sizeof err);
    s = agree(m, what, s, err, NULL);
    if (s != TG_OK)
        return s;
    return tg_mpi_broadcast_params(m, p);
}

tg_status
tg_mpi_save_state_dict(tg_mpi *m, tg_state_dict *sd, const char *path)
{
    const char *what = "save_state_dict";
    if (unusable(m, what))
        return TG_ERR_ARG;
    tg_status s = agree(m, what, sd && path ? TG_OK : TG_ERR_ARG, "state dict or path is NULL",
                        NULL);
    if (s != TG_OK)
        return s;
    if (m->rank == 0)
        s = tg_state_dict_save(sd, path);
    return agree(m, what, s, s != TG_OK ? tg_state_dict_error(sd) : NULL, NULL);
}

tg_status
tg_mpi_load_state_dict(tg_mpi *m, tg_state_dict *sd, const char *path, unsigned flags)
{
    const char *what = "load_state_dict";
    if (unusable(m, what))
        return TG_ERR_ARG;
    tg_status s = agree(m, what, sd && path ? TG_OK : TG_ERR_ARG, "state dict or path is NULL",
                        NULL);
    if (s != TG_OK)
        return s;
    s = tg_state_dict_load(sd, path, flags);
    return agree(m, what, s, s != TG_OK ? tg_state_dict_error(sd) : NULL, NULL);
}

/* ---------------------------------------------------------------------------------------
 * Statistics.
 */
tg_status
tg_mpi_get_stats(const tg_mpi *m, tg_mpi_stats *out)
{
    if (!m || !out)
        return TG_ERR_ARG;
    *out = m->stats;
    return TG_OK;
}

void
tg_mpi_reset_stats(tg_mpi *m)
{
    if (m)
        memset(&m->stats, 0, sizeof m->stats);
}
