/*
 * The thread pool behind every threaded kernel (lib/kernels/pool.c): each part runs exactly
 * once for any thread and part count; parts run on more than one thread when the pool has
 * workers; a call made from inside a part, or from several user threads at once, still runs
 * every part once (serially when the pool is busy); shutdown and restart; a forked child can
 * use the pool. Run under ThreadSanitizer by tools/ci/sanitizers.sh (suite 'threads').
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "../../lib/kernels/kernels.h"
#include "../common.h"

enum { MAX_PARTS = 64 };

struct tally {
    atomic_int runs[MAX_PARTS];
    atomic_int in_job; /* parts that saw tg__pool_in_job() true */
};

static void
count_part(size_t part, void *ctx)
{
    struct tally *t = ctx;
    atomic_fetch_add(&t->runs[part], 1);
    if (tg__pool_in_job())
        atomic_fetch_add(&t->in_job, 1);
}

static void
assert_each_once(struct tally *t, size_t parts)
{
    for (size_t p = 0; p < MAX_PARTS; p++)
        ck_assert_msg(atomic_load(&t->runs[p]) == (p < parts ? 1 : 0),
                      "part %zu of %zu ran %d times", p, parts, atomic_load(&t->runs[p]));
}

START_TEST(every_part_runs_once)
{
    for (int threads = 1; threads <= 4; threads++)
        for (size_t parts = 0; parts <= 33; parts++) {
            struct tally t = {0};
            tg__pool_run(threads, parts, count_part, &t);
            assert_each_once(&t, parts);
            /* in a pool job exactly when one was run: threads > 1 and parts > 1 */
            int expect = threads > 1 && parts > 1 ? (int)parts : 0;
            int in_job = atomic_load(&t.in_job);
            ck_assert_msg(in_job == expect, "threads %d, parts %zu: %d parts in a pool job",
                          threads, parts, in_job);
        }
    ck_assert(!tg__pool_in_job());
}
END_TEST

/* Each part waits (up to 2 s) until some other thread has run a part, so the parts cannot all
 * run on the caller: fails if the workers never join. */
struct meet {
    atomic_int started;
    pthread_t first;
    atomic_bool first_set, met;
};

static void
meet_part(size_t part, void *ctx)
{
    (void)part;
    struct meet *m = ctx;
    bool expected = false;
    if (atomic_compare_exchange_strong(&m->first_set, &expected, true)) {
        m->first = pthread_self();
        atomic_store(&m->started, 1);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            if (atomic_load(&m->met))
                return;
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (t.tv_sec - t0.tv_sec > 2)
                return;
            sched_yield();
        }
    }
    while (!atomic_load(&m->started))
        sched_yield();
    if (!pthread_equal(m->first, pthread_self()))
        atomic_store(&m->met, true);
}

START_TEST(workers_take_parts)
{
    struct meet m = {0};
    tg__pool_run(2, 2, meet_part, &m);
    ck_assert_msg(atomic_load(&m.met), "both parts ran on one thread");
}
END_TEST

/* A part that itself calls the pool: the inner call finds the pool busy and runs serially,
 * outside the job (tg__pool_in_job false inside, true again after). Failures are counted, not
 * asserted: a part may run on a worker thread. */
struct nested {
    struct tally inner[3]; /* one per outer part */
    atomic_int wrong_in_job;
};

static void
nested_part(size_t part, void *ctx)
{
    struct nested *n = ctx;
    if (!tg__pool_in_job())
        atomic_fetch_add(&n->wrong_in_job, 1);
    tg__pool_run(4, 7, count_part, &n->inner[part]);
    if (!tg__pool_in_job())
        atomic_fetch_add(&n->wrong_in_job, 1);
}

START_TEST(nested_call_runs_serially)
{
    struct nested n = {0};
    tg__pool_run(2, 3, nested_part, &n);
    int wrong = atomic_load(&n.wrong_in_job);
    ck_assert_msg(wrong == 0, "%d outer parts saw tg__pool_in_job() false", wrong);
    for (int p = 0; p < 3; p++) {
        assert_each_once(&n.inner[p], 7);
        int inner_in_job = atomic_load(&n.inner[p].in_job);
        ck_assert_msg(inner_in_job == 0, "%d inner parts ran as pool parts", inner_in_job);
    }
}
END_TEST

static void *
hammer(void *arg)
{
    (void)arg;
    for (int rep = 0; rep < 300; rep++) {
        struct tally t = {0};
        size_t parts = (size_t)(rep % 9) + 1;
        tg__pool_run(3, parts, count_part, &t);
        for (size_t p = 0; p < MAX_PARTS; p++)
            if (atomic_load(&t.runs[p]) != (p < parts ? 1 : 0))
                return (void *)1;
    }
    return NULL;
}

START_TEST(concurrent_callers)
{
    enum { CALLERS = 4 };
    pthread_t th[CALLERS];
    for (int i = 0; i < CALLERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < CALLERS; i++) {
        void *ret;
        ck_assert_int_eq(pthread_join(th[i], &ret), 0);
        ck_assert_msg(ret == NULL, "caller %d: a part ran twice or not at all", i);
    }
}
END_TEST

START_TEST(shutdown_and_restart)
{
    for (int round = 0; round < 3; round++) {
        struct tally t = {0};
        tg__pool_run(3, 20, count_part, &t);
        assert_each_once(&t, 20);
        tg__pool_shutdown();
    }
    tg__pool_shutdown(); /* twice in a row, and with no workers: harmless */
}
END_TEST

/* The child of a fork has none of the parent's workers; its calls must still finish. The
 * parent gives it 20 s (SIGALRM kills a hung child) and checks its exit status. Not under
 * ThreadSanitizer, which stops a child of a multi-threaded process that starts threads. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

START_TEST(usable_after_fork)
{
#ifdef UNDER_TSAN
    return;
#endif
    struct tally t = {0};
    tg__pool_run(2, 8, count_part, &t); /* workers exist in the parent */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);
        for (int rep = 0; rep < 50; rep++) {
            struct tally c = {0};
            tg__pool_run(2, 8, count_part, &c);
            for (size_t p = 0; p < 8; p++)
                if (atomic_load(&c.runs[p]) != 1) {
                    fprintf(stderr, "child, call %d: part %zu ran %d times\n", rep, p,
                            atomic_load(&c.runs[p]));
                    _exit(1);
                }
        }
        tg__pool_shutdown(); /* _exit skips the atexit hook that joins the workers */
        _exit(0);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child: %s %d", WIFEXITED(status) ? "exit" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_part_runs_once);
    tcase_add_test(tc, workers_take_parts);
    tcase_add_test(tc, nested_call_runs_serially);
    tcase_add_test(tc, concurrent_callers);
    tcase_add_test(tc, shutdown_and_restart);
    tcase_add_test(tc, usable_after_fork);
    suite_add_tcase(s, tc);
    int status = run_suite(s);
    tg__pool_shutdown(); /* join the workers, so leak checkers see a clean end */
    return status;
}
