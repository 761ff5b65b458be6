/*
 * The parallel engine: every multithreaded kernel runs through fe_run().
 *
 * Why not OpenMP.  An OpenMP parallel region ends in a barrier that waits for
 * every thread of the team, and a static split gives each thread a fixed
 * share.  On a machine where anything else runs, one descheduled team thread
 * holds the caller until the scheduler runs it again, with its whole share
 * still to do.  Measured on main with libgomp (2 cores, float32, T=200000,
 * d=128, B=65536): with one busy-loop process beside it, the default two
 * threads ran gather at 0.65x and scatter_add at 0.52x of one thread; under
 * two build jobs, gather ran at 0.002x-0.05x; four processes at the default
 * thread count on a 16-core server made 26 calls/s where 4 threads each made
 * 491 (a 19x collapse).  A work-stealing runtime (oneTBB) avoids the static
 * split, but a thread that stole a range still holds it, and it would add a
 * C++ runtime and a shared library to every wheel.
 *
 * How a job runs.  The caller cuts the work into chunks of a few tens of
 * kilobytes, publishes (fn, ctx, nchunks), wakes at most nthreads - 1 sleeping
 * workers, and then claims chunks itself, one at a time, with an atomic
 * counter.  A worker that wakes claims the same way; one that wakes late finds
 * nothing left and goes back to sleep.  The caller returns when every chunk is
 * done: it never waits for a worker that has not started, only for a chunk
 * that a worker claimed and is still running, and while it waits it sleeps, so
 * that the scheduler can move that worker onto the core it leaves idle.
 *
 * How many threads a job gets is the caller's plan (_kernels.pyx, _plan and
 * _scatter_plan): none beyond one below 256 KiB of rows, and no more than the
 * CPUs that no other task is waiting for (fe_runnable_others_recent).  The
 * claim loop bounds what a descheduled helper costs, but does not remove it:
 * beside one busy-loop process on 2 CPUs a 2-thread gather still ran at
 * 0.89-0.94x of one thread, so it now runs on one there.
 *
 * Which thread runs which chunk is left to chance; the kernels make the bits
 * independent of it (each chunk writes its own rows or its own columns, or,
 * in a scatter-add split by position, leaves a row that an earlier chunk also
 * writes to the thread that follows it once every earlier chunk is done, or
 * to a second job, run after the first).  No chunk waits for another chunk of
 * its job that no thread may yet have claimed.
 *
 * One job at a time: a caller that finds the pool busy (another Python thread
 * is in a parallel call) runs its job alone.  Workers start on first use, are
 * never more than FE_MAX_THREADS - 1, block every signal (Ctrl-C goes to the
 * Python thread), and do not survive fork(): the child's pool starts empty and
 * grows again when it is needed.
 *
 * A worker may be descheduled between any two of its steps, so nothing it
 * reads may mislead it later.  A claim is a compare-and-swap of (generation,
 * next chunk) in one word: it fails once the job it belongs to is over.  Job
 * g's fields (fn, ctx, nchunks, seats) live in slots[g & 1], which only job
 * g + 2 rewrites, and job g + 2 is published after job g + 1 has moved the
 * claim word on: a worker that reads g's fields either claims a chunk of g
 * while g runs, or claims nothing.
 */
#ifndef FE_ENGINE_H
#define FE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define FE_MAX_THREADS 256

typedef void (*fe_task_fn)(void *ctx, ptrdiff_t chunk);

/* ---- the thread count ------------------------------------------------- */
/* What num_threads=None means, and which setting decided it.  _runtime.py
   resolves the start value (CPU affinity and cgroup quota, then
   OMP_NUM_THREADS and FASTEMBED_EXT_NUM_THREADS); set_num_threads() and
   threadpoolctl change it later, through the two exported functions below. */
enum {
    FE_SOURCE_CPUS = 0,            /* affinity mask and cgroup CPU quota */
    FE_SOURCE_OMP_NUM_THREADS = 1,
    FE_SOURCE_ENV = 2,             /* FASTEMBED_EXT_NUM_THREADS */
    FE_SOURCE_SET = 3,             /* set_num_threads() */
    FE_SOURCE_THREADPOOLCTL = 4
};
static int fe_default_threads = 1;
static int fe_cpu_budget = 1;      /* the CPUs this process may use (affinity, quota) */
static int fe_threads_source = FE_SOURCE_CPUS;
/* the setting a threadpoolctl limit replaced, restored when it sets that value back */
static int fe_limited_from = 0;
static int fe_limited_source = 0;

static void fe_set_default_threads(int n, int source)
{
    fe_default_threads = n < 1 ? 1 : (n > FE_MAX_THREADS ? FE_MAX_THREADS : n);
    fe_threads_source = source;
    fe_limited_from = 0;
}

#if defined(__GNUC__) || defined(__clang__)
#define FE_EXPORT __attribute__((visibility("default")))
#else
#define FE_EXPORT
#endif

/* threadpoolctl's controller (registered by _runtime.py) reads and limits the
   pool through these, as it does omp_get_max_threads / omp_set_num_threads */
FE_EXPORT int fastembed_ext_get_num_threads(void) { return fe_default_threads; }
FE_EXPORT void fastembed_ext_set_num_threads(int n)
{
    n = n < 1 ? 1 : (n > FE_MAX_THREADS ? FE_MAX_THREADS : n);
    if (fe_limited_from > 0) {
        if (n == fe_limited_from) {
            /* the end of a threadpool_limits block: the setting it replaced */
            fe_threads_source = fe_limited_source;
            fe_limited_from = 0;
        }
        fe_default_threads = n;
        return;
    }
    if (n == fe_default_threads) {
        return;   /* threadpoolctl restoring a value it never changed */
    }
    fe_limited_from = fe_default_threads;
    fe_limited_source = fe_threads_source;
    fe_default_threads = n;
    fe_threads_source = FE_SOURCE_THREADPOOLCTL;
}

/* ---- atomics for the kernels' own hand-offs (a scatter lane) ------------ */
#if defined(__GNUC__) || defined(__clang__)
static inline ptrdiff_t fe_load_acquire(ptrdiff_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void fe_store_release(ptrdiff_t *p, ptrdiff_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void fe_add_release(ptrdiff_t *p, ptrdiff_t v) { __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline int fe_try_take(int *flag)
{
    int expected = 0;
    return __atomic_compare_exchange_n(flag, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
static inline void fe_release(int *flag) { __atomic_store_n(flag, 0, __ATOMIC_RELEASE); }
#else  /* MSVC builds the serial engine: one thread, plain accesses suffice */
static inline ptrdiff_t fe_load_acquire(ptrdiff_t *p) { return *p; }
static inline void fe_store_release(ptrdiff_t *p, ptrdiff_t v) { *p = v; }
static inline void fe_add_release(ptrdiff_t *p, ptrdiff_t v) { *p += v; }
static inline int fe_try_take(int *flag) { if (*flag) return 0; *flag = 1; return 1; }
static inline void fe_release(int *flag) { *flag = 0; }
#endif

#if defined(FE_SERIAL_ENGINE) || defined(_WIN32)
/* ---- the serial engine: every chunk on the calling thread ------------- */
#define FE_ENGINE_NAME "serial"
static void fe_run(fe_task_fn fn, void *ctx, ptrdiff_t nchunks, int nthreads)
{
    ptrdiff_t c;
    (void)nthreads;
    for (c = 0; c < nchunks; c++) {
        fn(ctx, c);
    }
}
static void fe_run_check(fe_task_fn fn, void *ctx, ptrdiff_t nchunks, int nthreads)
{
    fe_run(fn, ctx, nchunks, nthreads);
}
static void fe_pause_or_yield(ptrdiff_t spins) { (void)spins; }
static int fe_runnable_others(void) { return 0; }
static int fe_runnable_others_recent(void) { return 0; }
static int fe_runnable_others_now(void) { return 0; }
static int fe_engine_parallel(void) { return 0; }
static int fe_engine_workers(void) { return 0; }
static void fe_engine_init(void) {}
static long fe_engine_jobs(void) { return 0; }
static long fe_engine_jobs_alone(void) { return 0; }
static long fe_engine_check_jobs(void) { return 0; }
static int fe_engine_helper_share(void) { return 0; }

#else
/* ---- the pthread engine ------------------------------------------------ */
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#if defined(__linux__) && !defined(FE_ENGINE_NO_FUTEX)
#define FE_ENGINE_NAME "pthreads+futex"
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
/* sleep while *word == expected (returns at once otherwise); 1 if a fe_wake
   woke this thread, and so counted it in what it returned */
static int fe_wait(_Atomic uint32_t *word, uint32_t expected)
{
    return syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0) == 0;
}
/* wake up to n sleepers; how many it woke */
static int fe_wake(_Atomic uint32_t *word, int n)
{
    long woken = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    return woken > 0 ? (int)woken : 0;
}
/* a futex is only a word: nothing to prepare for fork() */
static void fe_wait_before_fork(void) {}
static void fe_wait_after_fork(int child) { (void)child; }
#else
#define FE_ENGINE_NAME "pthreads"
/* the same contract with a mutex and a condition variable, for other POSIX systems */
static pthread_mutex_t fe_wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fe_wait_cond = PTHREAD_COND_INITIALIZER;
static int fe_wait(_Atomic uint32_t *word, uint32_t expected)
{
    pthread_mutex_lock(&fe_wait_lock);
    while (atomic_load_explicit(word, memory_order_acquire) == expected) {
        pthread_cond_wait(&fe_wait_cond, &fe_wait_lock);
    }
    pthread_mutex_unlock(&fe_wait_lock);
    return 0;   /* a broadcast does not say whom it woke: the thread counts itself */
}
static int fe_wake(_Atomic uint32_t *word, int n)
{
    (void)word;
    (void)n;
    pthread_mutex_lock(&fe_wait_lock);
    pthread_cond_broadcast(&fe_wait_cond);
    pthread_mutex_unlock(&fe_wait_lock);
    return 0;
}
/* fork() with workers asleep in pthread_cond_wait: hold the lock across it,
   and give the child a fresh condition variable (its waiters are gone) */
static void fe_wait_before_fork(void) { pthread_mutex_lock(&fe_wait_lock); }
static void fe_wait_after_fork(int child)
{
    if (child) {
        pthread_cond_init(&fe_wait_cond, NULL);
    }
    pthread_mutex_unlock(&fe_wait_lock);
}
#endif

#if defined(__x86_64__) || defined(__i386__)
#define FE_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define FE_PAUSE() __asm__ __volatile__("yield")
#else
#define FE_PAUSE() ((void)0)
#endif

/* How long a thread spins before it sleeps: a worker waiting for the next job
   (the phases of one scatter follow each other by microseconds), the caller
   waiting for a claimed chunk.  Short, because on a loaded machine a spinning
   thread takes a core from someone with work. */
#define FE_WORKER_SPINS 2000
#define FE_CALLER_SPINS 2000

typedef struct {
    _Atomic(fe_task_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t nchunks;
    _Atomic int32_t helpers;       /* seats on offer: nthreads - 1 */
} fe_job;

static struct {
    _Atomic uint64_t claim;        /* generation << 32 | next chunk to claim */
    _Atomic uint64_t seats;        /* generation << 32 | workers seated in the job */
    fe_job slots[2];               /* job g's fields are in slots[g & 1] */
    _Atomic uint32_t done;         /* chunks finished; the caller sleeps on it */
    _Atomic uint32_t helped;       /* of those, chunks the workers ran */
    /* Whether workers get CPU time: the share of each job's chunks that workers
       ran, per mille, as a moving average over jobs (quiet, 2 threads: about
       500; with the other core busy it falls).  Work that a descheduled helper
       would hold up (a scatter-add part) asks for it before it starts threads. */
    _Atomic int helper_share;
    _Atomic uint32_t gen;          /* the current job; workers sleep on it */
    _Atomic int busy;              /* a job is running */
    _Atomic long jobs;             /* kernels' jobs run on the pool */
    _Atomic long check_jobs;       /* input checks' jobs run on the pool (fe_run_check) */
    _Atomic long alone;            /* jobs that ran alone because the pool was busy */
    /* Workers not asleep in fe_wait.  A worker that fe_run wakes counts as
       awake from that moment, not from when it first runs: a woken worker is
       runnable before it runs (tens of microseconds on a VM), and until it
       counts, fe_runnable_others takes it for another task, and the next
       10 ms of calls run on one thread.  2 threads, 3000 T=1M d=16 float32
       gathers back to back (about 85 readings): counted from when it ran, 15
       readings saw a neighbour that was not there; counted from the wake, 3. */
    _Atomic int awake;
    int nworkers;                  /* under start_lock */
    pthread_mutex_t start_lock;
} fe_pool = {.start_lock = PTHREAD_MUTEX_INITIALIZER, .helper_share = 500};

/* claim and run chunks of job g until none is left */
static void fe_claim_loop(uint32_t g, fe_task_fn fn, void *ctx, int64_t n, int worker)
{
    uint64_t w = atomic_load_explicit(&fe_pool.claim, memory_order_acquire);
    for (;;) {
        int64_t c = (int64_t)(w & 0xffffffffu);
        if ((uint32_t)(w >> 32) != g || c >= n) {
            return;
        }
        if (atomic_compare_exchange_weak_explicit(&fe_pool.claim, &w, w + 1,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            fn(ctx, (ptrdiff_t)c);
            if (worker) {
                atomic_fetch_add_explicit(&fe_pool.helped, 1, memory_order_relaxed);
            }
            /* release: the chunk's writes happen before the caller sees it done */
            if ((int64_t)atomic_fetch_add_explicit(&fe_pool.done, 1, memory_order_acq_rel) + 1 == n) {
                fe_wake(&fe_pool.done, 1);
            }
            w = atomic_load_explicit(&fe_pool.claim, memory_order_acquire);
        }
    }
}

/* a worker joins job g if a seat is free */
static void fe_help(uint32_t g)
{
    fe_job *job = &fe_pool.slots[g & 1];
    uint64_t s = atomic_load_explicit(&fe_pool.seats, memory_order_acquire);
    fe_task_fn fn;
    void *ctx;
    int64_t n;
    for (;;) {
        if ((uint32_t)(s >> 32) != g) {
            return;   /* a later job: its own wake-up will bring this worker */
        }
        if ((int32_t)(s & 0xffffffffu) >= atomic_load_explicit(&job->helpers, memory_order_acquire)) {
            return;   /* the job has the helpers it asked for */
        }
        if (atomic_compare_exchange_weak_explicit(&fe_pool.seats, &s, s + 1,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            break;
        }
    }
    fn = atomic_load_explicit(&job->fn, memory_order_acquire);
    ctx = atomic_load_explicit(&job->ctx, memory_order_acquire);
    n = atomic_load_explicit(&job->nchunks, memory_order_acquire);
    fe_claim_loop(g, fn, ctx, n, 1);
}

static void *fe_worker(void *arg)
{
    uint32_t seen = (uint32_t)(uintptr_t)arg;   /* the job before the one that started it */
    for (;;) {
        uint32_t g = atomic_load_explicit(&fe_pool.gen, memory_order_acquire);
        int spins = 0;
        while (g == seen && spins < FE_WORKER_SPINS) {
            FE_PAUSE();
            spins++;
            g = atomic_load_explicit(&fe_pool.gen, memory_order_acquire);
        }
        if (g == seen) {
            atomic_fetch_sub_explicit(&fe_pool.awake, 1, memory_order_relaxed);
            if (!fe_wait(&fe_pool.gen, seen)) {
                /* not woken by fe_run (the job came first, or a broadcast) */
                atomic_fetch_add_explicit(&fe_pool.awake, 1, memory_order_relaxed);
            }
            continue;
        }
        seen = g;
        fe_help(g);
    }
    return NULL;
}

/* start workers until there are `want` (or as many as the system gives) */
static int fe_start_workers(int want, uint32_t before_gen)
{
    pthread_attr_t attr;
    sigset_t all, old;
    int have;
    pthread_mutex_lock(&fe_pool.start_lock);
    if (fe_pool.nworkers < want) {
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        /* workers inherit this mask: every signal stays with the Python threads */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        while (fe_pool.nworkers < want) {
            pthread_t t;
            atomic_fetch_add_explicit(&fe_pool.awake, 1, memory_order_relaxed);
            if (pthread_create(&t, &attr, fe_worker, (void *)(uintptr_t)before_gen) != 0) {
                atomic_fetch_sub_explicit(&fe_pool.awake, 1, memory_order_relaxed);
                break;
            }
            fe_pool.nworkers++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    have = fe_pool.nworkers;
    pthread_mutex_unlock(&fe_pool.start_lock);
    return have;
}

/* Runs fn(ctx, c) for every c in [0, nchunks), on the calling thread and on
   up to nthreads - 1 workers; returns when every chunk has run.  A check's
   job (fe_run_check) runs alike and is counted apart from the kernels'. */
static void fe_run_counted(fe_task_fn fn, void *ctx, ptrdiff_t nchunks, int nthreads,
                           _Atomic long *counter)
{
    int expected = 0;
    int helpers = nthreads - 1;
    uint32_t g, cur;
    fe_job *job;
    int spins;
    ptrdiff_t c;
    if (nchunks <= 0) {
        return;
    }
    if (helpers > nchunks - 1) {
        helpers = (int)(nchunks - 1);
    }
    if (helpers > FE_MAX_THREADS - 1) {
        helpers = FE_MAX_THREADS - 1;
    }
    if (nchunks > 0x7fffffff || helpers <= 0
            || !atomic_compare_exchange_strong(&fe_pool.busy, &expected, 1)) {
        if (helpers > 0) {
            atomic_fetch_add_explicit(&fe_pool.alone, 1, memory_order_relaxed);
        }
        for (c = 0; c < nchunks; c++) {
            fn(ctx, c);
        }
        return;
    }
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
    g = atomic_load_explicit(&fe_pool.gen, memory_order_relaxed) + 1;
    if (fe_pool.nworkers < helpers) {
        int have = fe_start_workers(helpers, g - 1);
        if (helpers > have) {
            helpers = have;
        }
    }
    job = &fe_pool.slots[g & 1];
    atomic_store_explicit(&job->fn, fn, memory_order_release);
    atomic_store_explicit(&job->ctx, ctx, memory_order_release);
    atomic_store_explicit(&job->nchunks, (int64_t)nchunks, memory_order_release);
    atomic_store_explicit(&job->helpers, helpers, memory_order_release);
    atomic_store_explicit(&fe_pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&fe_pool.helped, 0, memory_order_relaxed);
    atomic_store_explicit(&fe_pool.seats, (uint64_t)g << 32, memory_order_release);
    atomic_store_explicit(&fe_pool.claim, (uint64_t)g << 32, memory_order_release);
    atomic_store_explicit(&fe_pool.gen, g, memory_order_release);
    if (helpers > 0) {
        atomic_fetch_add_explicit(&fe_pool.awake, fe_wake(&fe_pool.gen, helpers),
                                  memory_order_relaxed);
    }
    fe_claim_loop(g, fn, ctx, (int64_t)nchunks, 0);
    /* every chunk is claimed; wait for the ones still running elsewhere */
    spins = 0;
    while ((cur = atomic_load_explicit(&fe_pool.done, memory_order_acquire)) < (uint32_t)nchunks) {
        if (spins < FE_CALLER_SPINS) {
            FE_PAUSE();
            spins++;
        } else {
            fe_wait(&fe_pool.done, cur);
        }
    }
    if (nchunks >= 2 * (ptrdiff_t)(helpers + 1)) {
        /* only jobs with chunks to share say something about the helpers */
        int share = (int)(1000 * (int64_t)atomic_load_explicit(&fe_pool.helped, memory_order_relaxed)
                          / nchunks);
        int old = atomic_load_explicit(&fe_pool.helper_share, memory_order_relaxed);
        atomic_store_explicit(&fe_pool.helper_share, (3 * old + share) / 4, memory_order_relaxed);
    }
    atomic_store_explicit(&fe_pool.busy, 0, memory_order_release);
}
static void fe_run(fe_task_fn fn, void *ctx, ptrdiff_t nchunks, int nthreads)
{
    fe_run_counted(fn, ctx, nchunks, nthreads, &fe_pool.jobs);
}
static void fe_run_check(fe_task_fn fn, void *ctx, ptrdiff_t nchunks, int nthreads)
{
    fe_run_counted(fn, ctx, nchunks, nthreads, &fe_pool.check_jobs);
}

/* How many tasks other than this process's runnable ones want a CPU now:
   the kernel's count of runnable tasks (/proc/loadavg), less the calling
   thread and the engine's workers that are awake.  0 where it cannot tell. */
#if defined(__linux__)
#include <fcntl.h>
static int fe_runnable_others(void)
{
    char buf[128];
    ssize_t got;
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC), spaces = 0, running = 0;
    char *p;
    if (fd < 0) {
        return 0;
    }
    got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0) {
        return 0;
    }
    buf[got] = 0;
    /* "0.82 0.94 0.97 3/78 24453": the fourth field is runnable/total */
    for (p = buf; *p && spaces < 3; p++) {
        spaces += *p == ' ';
    }
    while (*p >= '0' && *p <= '9') {
        running = 10 * running + (*p++ - '0');
    }
    running -= 1 + atomic_load_explicit(&fe_pool.awake, memory_order_relaxed);
    return running > 0 ? running : 0;
}
#else
static int fe_runnable_others(void) { return 0; }
#endif

/* fe_runnable_others() read at most every 10 ms: reading /proc costs about
   6 us, and a call just above the parallel threshold takes tens of them */
static _Atomic int64_t fe_others_read_at = 0;   /* 0: never read */
static atomic_int fe_others_last;
static int fe_runnable_others_recent(void)
{
    struct timespec t;
    int64_t now, at;
    int others;
    clock_gettime(CLOCK_MONOTONIC, &t);
    now = (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
    at = atomic_load_explicit(&fe_others_read_at, memory_order_relaxed);
    if (at != 0 && now - at < 10000000) {
        return atomic_load_explicit(&fe_others_last, memory_order_relaxed);
    }
    others = fe_runnable_others();
    if (others > 0) {
        /* a task seen once may be passing: a worker between leaving the count
           of the awake and falling asleep, a kernel thread.  A second reading
           keeps what both saw; a busy neighbour is in both.  2 threads, T=1M
           d=16 float32 gathers back to back: calls sent to one thread 2.6-5%,
           from 11-13% with one reading (each wrong reading costs 10 ms). */
        int again = fe_runnable_others();
        others = again < others ? again : others;
    }
    atomic_store_explicit(&fe_others_last, others, memory_order_relaxed);
    atomic_store_explicit(&fe_others_read_at, now, memory_order_relaxed);
    return others;
}

/* a fresh reading, which the next calls within 10 ms then use */
static int fe_runnable_others_now(void)
{
    atomic_store_explicit(&fe_others_read_at, 0, memory_order_relaxed);
    return fe_runnable_others_recent();
}

/* a thread with nothing to take: pause a while, then give the core away */
static void fe_pause_or_yield(ptrdiff_t spins)
{
    if (spins < 256) {
        FE_PAUSE();
    } else {
        sched_yield();
    }
}

static int fe_engine_parallel(void) { return 1; }
static int fe_engine_workers(void) { return fe_pool.nworkers; }
static long fe_engine_jobs(void)
{
    return atomic_load_explicit(&fe_pool.jobs, memory_order_relaxed);
}
static long fe_engine_check_jobs(void)
{
    return atomic_load_explicit(&fe_pool.check_jobs, memory_order_relaxed);
}
static long fe_engine_jobs_alone(void)
{
    return atomic_load_explicit(&fe_pool.alone, memory_order_relaxed);
}
static int fe_engine_helper_share(void)
{
    return atomic_load_explicit(&fe_pool.helper_share, memory_order_relaxed);
}

/* fork(): the child has only the forking thread; its pool starts empty */
static void fe_before_fork(void)
{
    pthread_mutex_lock(&fe_pool.start_lock);
    fe_wait_before_fork();
}
static void fe_after_fork_parent(void)
{
    fe_wait_after_fork(0);
    pthread_mutex_unlock(&fe_pool.start_lock);
}
static void fe_after_fork_child(void)
{
    fe_pool.nworkers = 0;
    atomic_store(&fe_pool.awake, 0);
    atomic_store(&fe_pool.busy, 0);
    fe_wait_after_fork(1);
    pthread_mutex_unlock(&fe_pool.start_lock);
}

static void fe_engine_init(void)
{
    pthread_atfork(fe_before_fork, fe_after_fork_parent, fe_after_fork_child);
}
#endif

#endif /* FE_ENGINE_H */
