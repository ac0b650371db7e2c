/* The native thread pool every multi-threaded call runs on (quantize,
 * dequantize, mul_mat; run_rows in kt_kernels.pxi).
 *
 * Why: a GEMV takes about a millisecond, and handing work to Python threads
 * costs ~0.1 ms per call, which caps 2-thread scaling well below 2x.  These
 * workers are plain OS threads (pthreads / Win32), started once and woken per
 * call without the GIL; no OpenMP runtime is needed (macOS has none).
 *
 * iqkt_pool_run(nparts, fn, ctx) calls fn(ctx, i) for i in [0, nparts): part 0
 * on the calling thread, the others on workers, and returns when all are done.
 * Callers split work by output rows only, so results never depend on the
 * number of parts.  If the pool is busy (another thread is inside a run) or
 * cannot start threads, every part runs on the calling thread instead.
 * After fork() the child starts a fresh pool (the parent's workers do not
 * exist there).
 */
#ifndef IQKT_KT_POOL_H
#define IQKT_KT_POOL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IQKT_POOL_MAX 64          /* most threads (parts) of one call */

typedef void (*iqkt_pool_fn)(void *ctx, int part);

#if defined(_WIN32)
#  define WIN32_LEAN_AND_MEAN
#  include <windows.h>
typedef SRWLOCK iqkt_mutex;
typedef CONDITION_VARIABLE iqkt_cond;
#  define iqkt_mutex_init(m) InitializeSRWLock(m)
#  define iqkt_mutex_lock(m) AcquireSRWLockExclusive(m)
#  define iqkt_mutex_trylock(m) (TryAcquireSRWLockExclusive(m) ? 0 : 1)
#  define iqkt_mutex_unlock(m) ReleaseSRWLockExclusive(m)
#  define iqkt_cond_init(c) InitializeConditionVariable(c)
#  define iqkt_cond_wait(c, m) SleepConditionVariableSRW(c, m, INFINITE, 0)
#  define iqkt_cond_broadcast(c) WakeAllConditionVariable(c)
#  define iqkt_getpid() ((long)GetCurrentProcessId())
#else
#  include <pthread.h>
#  include <unistd.h>
typedef pthread_mutex_t iqkt_mutex;
typedef pthread_cond_t iqkt_cond;
#  define iqkt_mutex_init(m) pthread_mutex_init(m, NULL)
#  define iqkt_mutex_lock(m) pthread_mutex_lock(m)
#  define iqkt_mutex_trylock(m) pthread_mutex_trylock(m)
#  define iqkt_mutex_unlock(m) pthread_mutex_unlock(m)
#  define iqkt_cond_init(c) pthread_cond_init(c, NULL)
#  define iqkt_cond_wait(c, m) pthread_cond_wait(c, m)
#  define iqkt_cond_broadcast(c) pthread_cond_broadcast(c)
#  define iqkt_getpid() ((long)getpid())
#endif

/* Atomic fetch-and-add for work counters shared by the parts of one run
 * (relaxed: the pool's mutex/condvar hand-off orders everything else). */
static inline int64_t iqkt_atomic_fetch_add(int64_t *p, int64_t v) {
#if defined(_MSC_VER)
    return InterlockedExchangeAdd64((volatile LONG64 *)p, v);
#else
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

typedef struct {
    iqkt_mutex run;          /* held by the one caller inside iqkt_pool_run */
    iqkt_mutex mu;           /* guards everything below */
    iqkt_cond wake, done;
    int started;             /* workers running */
    uint64_t gen;            /* bumped per run */
    int nparts, pending;
    iqkt_pool_fn fn;
    void *ctx;
    long pid;
} iqkt_pool_t;

typedef struct { iqkt_pool_t *pool; int index; uint64_t gen0; } iqkt_worker_arg;

static iqkt_pool_t *iqkt_pool_ptr = NULL;      /* the process's pool (created lazily) */
static iqkt_worker_arg iqkt_worker_args[IQKT_POOL_MAX];

static void iqkt_pool_worker_loop(iqkt_pool_t *p, int index, uint64_t seen) {
    /* seen = the generation when this worker was spawned (not when it first
     * runs: a run may already have started by then, and must not be missed) */
    iqkt_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen) iqkt_cond_wait(&p->wake, &p->mu);
        seen = p->gen;
        if (index >= p->nparts) continue;     /* not needed in this run */
        iqkt_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        iqkt_mutex_unlock(&p->mu);
        fn(ctx, index);
        iqkt_mutex_lock(&p->mu);
        if (--p->pending == 0) iqkt_cond_broadcast(&p->done);
    }
}

#if defined(_WIN32)
static DWORD WINAPI iqkt_pool_thread(LPVOID a) {
    iqkt_worker_arg *w = (iqkt_worker_arg *)a;
    iqkt_pool_worker_loop(w->pool, w->index, w->gen0);
    return 0;
}
static int iqkt_pool_spawn(iqkt_worker_arg *a) {
    HANDLE h = CreateThread(NULL, 0, iqkt_pool_thread, a, 0, NULL);
    if (h == NULL) return -1;
    CloseHandle(h);
    return 0;
}
#else
static void *iqkt_pool_thread(void *a) {
    iqkt_worker_arg *w = (iqkt_worker_arg *)a;
    iqkt_pool_worker_loop(w->pool, w->index, w->gen0);
    return NULL;
}
static int iqkt_pool_spawn(iqkt_worker_arg *a) {
    pthread_t t;
    pthread_attr_t attr;
    int rc;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&t, &attr, iqkt_pool_thread, a);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}
#endif

/* The pool, created on first use and again in a forked child.  Called with
 * the GIL held (from iqkt_pool_prepare), so creation needs no extra lock. */
static iqkt_pool_t *iqkt_pool_get(void) {
    iqkt_pool_t *p = iqkt_pool_ptr;
    if (p != NULL && p->pid == iqkt_getpid()) return p;
    /* first use, or a forked child: the old pool (if any) is abandoned, its
     * workers do not exist in this process */
    p = (iqkt_pool_t *)calloc(1, sizeof(iqkt_pool_t));
    if (p == NULL) return NULL;
    iqkt_mutex_init(&p->run);
    iqkt_mutex_init(&p->mu);
    iqkt_cond_init(&p->wake);
    iqkt_cond_init(&p->done);
    p->pid = iqkt_getpid();
    iqkt_pool_ptr = p;
    return p;
}

/* Make sure nworkers workers exist (call with the GIL held). */
static void iqkt_pool_prepare(int nworkers) {
    iqkt_pool_t *p = iqkt_pool_get();
    if (p == NULL) return;
    if (nworkers > IQKT_POOL_MAX - 1) nworkers = IQKT_POOL_MAX - 1;
    iqkt_mutex_lock(&p->mu);
    while (p->started < nworkers) {
        int idx = p->started + 1;
        iqkt_worker_args[idx].pool = p;
        iqkt_worker_args[idx].index = idx;
        iqkt_worker_args[idx].gen0 = p->gen;
        if (iqkt_pool_spawn(&iqkt_worker_args[idx]) != 0) break;
        p->started++;
    }
    iqkt_mutex_unlock(&p->mu);
}

static void iqkt_pool_run(int nparts, iqkt_pool_fn fn, void *ctx) {
    iqkt_pool_t *p = iqkt_pool_ptr;
    int i;
    if (nparts <= 1 || p == NULL || p->pid != iqkt_getpid() || iqkt_mutex_trylock(&p->run) != 0) {
        for (i = 0; i < nparts; i++) fn(ctx, i);
        return;
    }
    iqkt_mutex_lock(&p->mu);
    int nw = nparts - 1 <= p->started ? nparts - 1 : p->started;
    p->fn = fn;
    p->ctx = ctx;
    p->nparts = nw + 1;
    p->pending = nw;
    p->gen++;
    iqkt_cond_broadcast(&p->wake);
    iqkt_mutex_unlock(&p->mu);
    fn(ctx, 0);
    for (i = nw + 1; i < nparts; i++) fn(ctx, i);   /* parts without a worker */
    iqkt_mutex_lock(&p->mu);
    while (p->pending > 0) iqkt_cond_wait(&p->done, &p->mu);
    iqkt_mutex_unlock(&p->mu);
    iqkt_mutex_unlock(&p->run);
}

#endif /* IQKT_KT_POOL_H */
