/* Tests of the handle pool: reuse, LRU eviction, the open limit under threads, timeouts, evict. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "marble/base.h"
#include "marble/vfs.h"
#include "marble_test.h"
#include "vfs_test.h"

#define OK(expr)                                                                                   \
    do {                                                                                           \
        marble_error e_;                                                                           \
        marble_error_clear(&e_);                                                                   \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s -> %s: %s", #expr, marble_status_name(rc_), e_.message);    \
    } while (0)

#define NFILES 32
#define FILE_SIZE 4096

static const char *uri_of(int i)
{
    static __thread char buf[4][64];
    static __thread int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "mem://pool/f%02d", i);
    return b;
}

static unsigned char byte_of(int file, size_t off)
{
    return (unsigned char)(file * 31 + off * 7 + (off >> 8));
}

static marble_fs *fs_with_files(void)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    OK(marble_fs_mkdir(fs, "mem://pool", 1, &e_));
    unsigned char data[FILE_SIZE];
    for (int i = 0; i < NFILES; i++) {
        for (size_t k = 0; k < FILE_SIZE; k++)
            data[k] = byte_of(i, k);
        OK(marble_fs_write_all(fs, uri_of(i), data, FILE_SIZE, 0, &e_));
    }
    return fs;
}

static marble_handle_pool *new_pool(marble_fs *fs, size_t max_open, uint32_t timeout_ms)
{
    marble_handle_pool_options o = {max_open, timeout_ms};
    marble_handle_pool *p;
    OK(marble_handle_pool_create(fs, &o, &p, &e_));
    return p;
}

static marble_handle_pool_stats stats(marble_handle_pool *p)
{
    marble_handle_pool_stats s;
    marble_handle_pool_get_stats(p, &s);
    return s;
}

static uint64_t fs_open_files(marble_fs *fs)
{
    marble_fs_stats s;
    marble_fs_get_stats(fs, &s);
    return s.open_files;
}

static marble_file *acq(marble_handle_pool *p, int i)
{
    marble_file *f = NULL;
    OK(marble_handle_pool_acquire(p, uri_of(i), MARBLE_OPEN_READ, &f, &e_));
    ASSERT_NOT_NULL(f);
    ASSERT_EQ_STR(marble_file_uri(f), uri_of(i));
    return f;
}

static int content_ok(marble_file *f, int i, uint64_t seed)
{
    size_t off = (size_t)(seed % (FILE_SIZE - 64));
    unsigned char buf[64];
    if (marble_file_read_exact(f, off, buf, sizeof buf, NULL) != MARBLE_OK) return 0;
    for (size_t k = 0; k < sizeof buf; k++)
        if (buf[k] != byte_of(i, off + k)) return 0;
    return 1;
}

TEST(pool_hits_and_misses)
{
    marble_fs *fs = fs_with_files();
    marble_handle_pool *p = new_pool(fs, 4, 0);
    marble_file *a = acq(p, 0);
    ASSERT_EQ_U64(stats(p).misses, 1);
    marble_handle_pool_release(p, a);
    marble_file *a2 = acq(p, 0);
    ASSERT_EQ_PTR(a2, a);
    ASSERT_EQ_U64(stats(p).hits, 1);
    /* A second user of the same URI gets a handle of its own. */
    marble_file *a3 = acq(p, 0);
    ASSERT_TRUE(a3 != a2);
    ASSERT_EQ_U64(stats(p).misses, 2);
    ASSERT_EQ_INT(stats(p).in_use, 2);
    ASSERT_TRUE(content_ok(a2, 0, 1) && content_ok(a3, 0, 2));
    marble_handle_pool_release(p, a2);
    marble_handle_pool_release(p, a3);
    /* Other flags are another key. */
    marble_file *w = NULL;
    OK(marble_handle_pool_acquire(p, uri_of(0), MARBLE_OPEN_READ | MARBLE_OPEN_WRITE, &w, &e_));
    ASSERT_TRUE(w != a2 && w != a3);
    marble_handle_pool_release(p, w);
    marble_handle_pool_stats s = stats(p);
    ASSERT_EQ_U64(s.hits, 1);
    ASSERT_EQ_U64(s.misses, 3);
    ASSERT_EQ_U64(s.evictions, 0);
    ASSERT_EQ_INT(s.open, 3);
    ASSERT_EQ_INT(s.in_use, 0);
    ASSERT_EQ_INT(s.max_open, 4);
    ASSERT_EQ_U64(fs_open_files(fs), 3);
    /* An open failure is returned and frees its slot. */
    marble_error err;
    marble_file *f = NULL;
    ASSERT_EQ_INT(marble_handle_pool_acquire(p, "mem://pool/nope", MARBLE_OPEN_READ, &f, &err),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_CONTAINS(err.message, "pool/nope");
    ASSERT_NULL(f);
    ASSERT_EQ_INT(stats(p).open, 3);
    ASSERT_EQ_INT(stats(p).in_use, 0);
    OK(marble_handle_pool_destroy(p, &e_));
    ASSERT_EQ_U64(fs_open_files(fs), 0);
    close_fs(fs);
}

TEST(pool_lru_eviction_order)
{
    marble_fs *fs = fs_with_files();
    marble_handle_pool *p = new_pool(fs, 4, 0);
    marble_file *f[4];
    for (int i = 0; i < 4; i++)
        f[i] = acq(p, i);
    for (int i = 0; i < 4; i++)
        marble_handle_pool_release(p, f[i]);
    /* Idle from most to least recently used: 3 2 1 0. Touch 0 and 1: 1 0 3 2. */
    marble_handle_pool_release(p, acq(p, 0));
    marble_handle_pool_release(p, acq(p, 1));
    ASSERT_EQ_U64(stats(p).hits, 2);
    /* Two new files evict 2, then 3. */
    marble_handle_pool_release(p, acq(p, 4));
    ASSERT_EQ_U64(stats(p).evictions, 1);
    marble_handle_pool_release(p, acq(p, 5));
    ASSERT_EQ_U64(stats(p).evictions, 2);
    ASSERT_EQ_INT(stats(p).open, 4);
    ASSERT_EQ_U64(fs_open_files(fs), 4);
    /* 0, 1, 4, 5 are still open (hits); 2 and 3 are not (misses). */
    marble_handle_pool_stats before = stats(p);
    int open_ones[4] = {0, 1, 4, 5};
    for (int i = 0; i < 4; i++)
        marble_handle_pool_release(p, acq(p, open_ones[i]));
    ASSERT_EQ_U64(stats(p).hits, before.hits + 4);
    ASSERT_EQ_U64(stats(p).misses, before.misses);
    /* Now idle order is 5 4 1 0: 2 evicts 0, 3 evicts 1. */
    marble_handle_pool_release(p, acq(p, 2));
    marble_handle_pool_release(p, acq(p, 3));
    before = stats(p);
    marble_handle_pool_release(p, acq(p, 4));
    marble_handle_pool_release(p, acq(p, 5));
    ASSERT_EQ_U64(stats(p).hits, before.hits + 2);
    marble_handle_pool_release(p, acq(p, 0));
    ASSERT_EQ_U64(stats(p).misses, before.misses + 1);
    ASSERT_EQ_U64(stats(p).evictions, 5);
    ASSERT_EQ_U64(fs_open_files(fs), 4);
    OK(marble_handle_pool_destroy(p, &e_));
    ASSERT_EQ_U64(fs_open_files(fs), 0);
    close_fs(fs);
}

TEST(pool_timeout_when_all_in_use)
{
    marble_fs *fs = fs_with_files();
    marble_handle_pool *p = new_pool(fs, 2, 100);
    marble_file *a = acq(p, 0), *b = acq(p, 1);
    marble_error err;
    marble_file *c = NULL;
    uint64_t t0 = marble_now_ns();
    ASSERT_EQ_INT(marble_handle_pool_acquire(p, uri_of(2), MARBLE_OPEN_READ, &c, &err),
                  MARBLE_ERR_TIMEOUT);
    ASSERT_GE_INT(marble_now_ns() - t0, 90 * 1000000ull);
    ASSERT_NULL(c);
    ASSERT_CONTAINS(err.message, uri_of(2));
    ASSERT_CONTAINS(err.message, "all 2 pooled handles");
    /* Even a URI already open waits: its handle is in use. */
    ASSERT_EQ_INT(marble_handle_pool_acquire(p, uri_of(0), MARBLE_OPEN_READ, &c, &err),
                  MARBLE_ERR_TIMEOUT);
    ASSERT_TRUE(content_ok(a, 0, 5) && content_ok(b, 1, 6));
    marble_handle_pool_release(p, a);
    marble_handle_pool_release(p, b);
    ASSERT_EQ_INT(stats(p).in_use, 0);
    OK(marble_handle_pool_destroy(p, &e_));
    close_fs(fs);
}

typedef struct waiter {
    marble_handle_pool *p;
    int rc;
    marble_file *f;
} waiter;

static void *waiter_thread(void *arg)
{
    waiter *w = arg;
    w->rc = marble_handle_pool_acquire(w->p, uri_of(7), MARBLE_OPEN_READ, &w->f, NULL);
    return NULL;
}

TEST(pool_waiter_wakes_on_release)
{
    marble_fs *fs = fs_with_files();
    marble_handle_pool *p = new_pool(fs, 1, 30000);
    marble_file *a = acq(p, 0);
    waiter w = {p, -1, NULL};
    pthread_t th;
    ASSERT_OK(pthread_create(&th, NULL, waiter_thread, &w));
    marble_sleep_ns(50 * 1000000ull);
    ASSERT_TRUE(content_ok(a, 0, 9));
    marble_handle_pool_release(p, a);
    pthread_join(th, NULL);
    ASSERT_EQ_INT(w.rc, MARBLE_OK);
    ASSERT_TRUE(content_ok(w.f, 7, 3));
    ASSERT_EQ_U64(stats(p).evictions, 1);
    ASSERT_EQ_U64(fs_open_files(fs), 1);
    marble_handle_pool_release(p, w.f);
    OK(marble_handle_pool_destroy(p, &e_));
    close_fs(fs);
}

TEST(pool_evict_uri)
{
    marble_fs *fs = fs_with_files();
    marble_handle_pool *p = new_pool(fs, 8, 0);
    marble_file *held = acq(p, 0), *idle = acq(p, 0), *other = acq(p, 1);
    marble_file *rw = NULL;
    OK(marble_handle_pool_acquire(p, uri_of(0), MARBLE_OPEN_READ | MARBLE_OPEN_WRITE, &rw, &e_));
    marble_handle_pool_release(p, idle);
    marble_handle_pool_release(p, other);
    marble_handle_pool_release(p, rw);
    ASSERT_EQ_U64(fs_open_files(fs), 4);
    marble_handle_pool_evict(p, uri_of(0));
    /* The two idle handles of the URI (both flags) are closed; the one in use stays usable. */
    ASSERT_EQ_U64(fs_open_files(fs), 2);
    ASSERT_EQ_INT(stats(p).open, 2);
    ASSERT_EQ_U64(stats(p).evictions, 2);
    ASSERT_TRUE(content_ok(held, 0, 11));
    marble_handle_pool_release(p, held);
    ASSERT_EQ_U64(fs_open_files(fs), 1);
    ASSERT_EQ_INT(stats(p).open, 1);
    ASSERT_EQ_U64(stats(p).evictions, 3);
    /* Then the file can be replaced and the next acquire sees the new one. */
    OK(marble_fs_write_all(fs, uri_of(0), "new", 3, 0, &e_));
    uint64_t misses = stats(p).misses;
    marble_file *f = acq(p, 0);
    ASSERT_EQ_U64(stats(p).misses, misses + 1);
    uint64_t size;
    OK(marble_file_size(f, &size, &e_));
    ASSERT_EQ_U64(size, 3);
    marble_handle_pool_release(p, f);
    /* Other URIs are untouched; an unknown URI is a no-op. */
    marble_handle_pool_evict(p, "mem://pool/unknown");
    marble_file *o = acq(p, 1);
    ASSERT_EQ_PTR(o, other);
    marble_handle_pool_release(p, o);
    OK(marble_handle_pool_destroy(p, &e_));
    ASSERT_EQ_U64(fs_open_files(fs), 0);
    close_fs(fs);
}

TEST(pool_destroy_reports_acquired)
{
    marble_fs *fs = fs_with_files();
    marble_handle_pool *p = new_pool(fs, 4, 0);
    marble_file *a = acq(p, 3);
    marble_handle_pool_release(p, acq(p, 4));
    (void)a;
    marble_error err;
    marble_log_level level = marble_log_get_level();
    marble_log_set_level(MARBLE_LOG_OFF);
    int rc = marble_handle_pool_destroy(p, &err);
    marble_log_set_level(level);
    ASSERT_EQ_INT(rc, MARBLE_ERR_BUSY);
    ASSERT_CONTAINS(err.message, "1 handle(s) still acquired");
    ASSERT_CONTAINS(err.message, uri_of(3));
    ASSERT_EQ_U64(fs_open_files(fs), 0);
    OK(marble_handle_pool_destroy(NULL, &e_));
    close_fs(fs);
}

TEST(pool_default_limit)
{
    marble_fs *fs = fs_with_files();
    marble_handle_pool *p;
    OK(marble_handle_pool_create(fs, NULL, &p, &e_));
    struct rlimit rl;
    ASSERT_OK(getrlimit(RLIMIT_NOFILE, &rl));
    size_t want = rl.rlim_cur == RLIM_INFINITY ? 0 : (size_t)rl.rlim_cur / 2;
    if (want && want < 16) want = 16;
    if (want && want <= ((size_t)1 << 21)) ASSERT_EQ_INT(stats(p).max_open, want);
    ASSERT_GE_INT(stats(p).max_open, 16);
    OK(marble_handle_pool_destroy(p, &e_));
    close_fs(fs);
}

/* Threads acquire, read and release random files among NFILES with a limit of 8 (sometimes
 * evicting), while a monitor checks that no more than 8 files are ever open. */
typedef struct stress {
    marble_fs *fs;
    marble_handle_pool *p;
    atomic_int stop;
    atomic_int bad;
    atomic_int over_limit;
    atomic_long ops;
} stress;

typedef struct stress_arg {
    stress *s;
    uint64_t seed;
} stress_arg;

static void *stress_thread(void *arg)
{
    stress_arg *a = arg;
    stress *s = a->s;
    uint64_t x = a->seed;
    while (!atomic_load(&s->stop)) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int i = (int)((x >> 33) % NFILES);
        marble_file *f = NULL;
        int rc = marble_handle_pool_acquire(s->p, uri_of(i), MARBLE_OPEN_READ, &f, NULL);
        if (rc != MARBLE_OK) {
            atomic_fetch_add(&s->bad, 1);
            continue;
        }
        for (int r = 0; r < 3; r++)
            if (!content_ok(f, i, x >> (r * 8))) atomic_fetch_add(&s->bad, 1);
        if (((x >> 20) & 63) == 0) marble_handle_pool_evict(s->p, uri_of(i));
        marble_handle_pool_release(s->p, f);
        atomic_fetch_add(&s->ops, 1);
    }
    return NULL;
}

static void *monitor_thread(void *arg)
{
    stress *s = arg;
    while (!atomic_load(&s->stop)) {
        if (fs_open_files(s->fs) > 8) atomic_fetch_add(&s->over_limit, 1);
        marble_handle_pool_stats st = stats(s->p);
        if (st.open > 8 || st.in_use > st.open) atomic_fetch_add(&s->over_limit, 1);
    }
    return NULL;
}

TEST(pool_threads_never_exceed_limit)
{
    marble_fs *fs = fs_with_files();
    stress s;
    memset(&s, 0, sizeof s);
    s.fs = fs;
    s.p = new_pool(fs, 8, 30000);
    enum { N = 12 };
    pthread_t th[N], mon;
    stress_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (stress_arg){&s, (uint64_t)i * 7919 + 1};
        ASSERT_OK(pthread_create(&th[i], NULL, stress_thread, &args[i]));
    }
    ASSERT_OK(pthread_create(&mon, NULL, monitor_thread, &s));
    marble_sleep_ns(400 * 1000000ull);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    pthread_join(mon, NULL);
    ASSERT_EQ_INT(atomic_load(&s.bad), 0);
    ASSERT_EQ_INT(atomic_load(&s.over_limit), 0);
    ASSERT_GT_INT(atomic_load(&s.ops), 0);
    marble_handle_pool_stats st = stats(s.p);
    ASSERT_EQ_INT(st.in_use, 0);
    ASSERT_LE_INT(st.open, 8);
    ASSERT_EQ_U64(st.hits + st.misses, (uint64_t)atomic_load(&s.ops));
    ASSERT_GT_INT(st.evictions, 0);
    OK(marble_handle_pool_destroy(s.p, &e_));
    ASSERT_EQ_U64(fs_open_files(fs), 0);
    close_fs(fs);
}

/* ---- an open in flight while the URI is evicted ------------------------------------------- */

/* A backend over "mem" whose open, once armed, opens the file and then waits for the test to let
 * it return: the window in which a pooled open runs unlocked. */
typedef struct gate {
    marble_vfs base;
    marble_vfs *mem;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int armed, inside, go;
} gate;

static int gate_open(marble_vfs *v, const char *path, int flags, marble_file **out,
                     marble_error *err)
{
    gate *g = v->data;
    int rc = g->mem->open(g->mem, path, flags, out, err);
    pthread_mutex_lock(&g->mu);
    if (g->armed) {
        g->armed = 0;
        g->inside = 1;
        pthread_cond_broadcast(&g->cond);
        while (!g->go)
            pthread_cond_wait(&g->cond, &g->mu);
        g->inside = 0;
        g->go = 0;
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

static int gate_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    gate *g = v->data;
    return g->mem->stat(g->mem, path, out, err);
}

static int gate_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud,
                     marble_error *err)
{
    gate *g = v->data;
    return g->mem->list(g->mem, dir, fn, ud, err);
}

static int gate_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    gate *g = v->data;
    return g->mem->mkdir(g->mem, path, err);
}

static int gate_remove(marble_vfs *v, const char *path, marble_error *err)
{
    gate *g = v->data;
    return g->mem->remove(g->mem, path, err);
}

static int gate_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    gate *g = v->data;
    return g->mem->rename(g->mem, from, to, err);
}

static int gate_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    gate *g = v->data;
    return g->mem->sync_dir(g->mem, path, err);
}

static int gate_control(marble_vfs *v, int op, void *arg)
{
    gate *g = v->data;
    return g->mem->control(g->mem, op, arg);
}

static void gate_destroy(marble_vfs *v)
{
    gate *g = v->data;
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static gate *gate_register(marble_fs *fs)
{
    gate *g = calloc(1, sizeof *g);
    ASSERT_NOT_NULL(g);
    g->mem = marble_fs_backend(fs, "mem");
    ASSERT_NOT_NULL(g->mem);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->base = (marble_vfs){
        .version = MARBLE_VFS_VERSION,
        .name = "gate",
        .caps = g->mem->caps,
        .data = g,
        .open = gate_open,
        .stat = gate_stat,
        .list = gate_list,
        .mkdir = gate_mkdir,
        .remove = gate_remove,
        .rename = gate_rename,
        .sync_dir = gate_sync_dir,
        .control = gate_control,
        .destroy = gate_destroy,
    };
    OK(marble_fs_register(fs, "gate", &g->base, &e_));
    return g;
}

static void gate_arm(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->armed = 1;
    pthread_mutex_unlock(&g->mu);
}

static void gate_wait_inside(gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->inside)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_release(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->go = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}

typedef struct opener {
    marble_handle_pool *p;
    const char *uri;
    marble_file *f;
    int rc;
} opener;

static void *opener_thread(void *arg)
{
    opener *o = arg;
    o->rc = marble_handle_pool_acquire(o->p, o->uri, MARBLE_OPEN_READ, &o->f, NULL);
    return NULL;
}

static void expect_text(marble_file *f, const char *text)
{
    char buf[32] = {0};
    size_t got = 0;
    OK(marble_file_read(f, 0, buf, sizeof buf - 1, &got, &e_));
    ASSERT_EQ_STR(buf, text);
}

static void replace_text(marble_fs *fs, const char *uri, const char *text)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", uri);
    OK(marble_fs_write_all(fs, tmp, text, strlen(text), 0, &e_));
    OK(marble_fs_rename(fs, tmp, uri, 0, &e_));
}

TEST(pool_evict_during_open)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    gate *g = gate_register(fs);
    OK(marble_fs_mkdir(fs, "gate://g", 1, &e_));
    OK(marble_fs_write_all(fs, "gate://g/f", "old", 3, 0, &e_));
    OK(marble_fs_write_all(fs, "gate://g/other", "other", 5, 0, &e_));
    marble_handle_pool *p = new_pool(fs, 4, 0);

    /* The open of the old file is under way when the file is replaced and the URI evicted: the
     * handle it returns serves its caller, and is closed on release instead of being reused. */
    gate_arm(g);
    opener o = {p, "gate://g/f", NULL, -1};
    pthread_t th;
    ASSERT_OK(pthread_create(&th, NULL, opener_thread, &o));
    gate_wait_inside(g);
    replace_text(fs, "gate://g/f", "new");
    marble_handle_pool_evict(p, "gate://g/f");
    gate_release(g);
    pthread_join(th, NULL);
    OK(o.rc);
    expect_text(o.f, "old");
    marble_handle_pool_release(p, o.f);
    ASSERT_EQ_INT(stats(p).open, 0);
    ASSERT_EQ_U64(fs_open_files(fs), 0);
    ASSERT_EQ_U64(stats(p).evictions, 1);
    uint64_t misses = stats(p).misses;
    marble_file *f = NULL;
    OK(marble_handle_pool_acquire(p, "gate://g/f", MARBLE_OPEN_READ, &f, &e_));
    ASSERT_EQ_U64(stats(p).misses, misses + 1);
    expect_text(f, "new");
    marble_handle_pool_release(p, f);

    /* Evicting another URI meanwhile leaves the new handle reusable. */
    gate_arm(g);
    o = (opener){p, "gate://g/other", NULL, -1};
    ASSERT_OK(pthread_create(&th, NULL, opener_thread, &o));
    gate_wait_inside(g);
    marble_handle_pool_evict(p, "gate://g/f");
    gate_release(g);
    pthread_join(th, NULL);
    OK(o.rc);
    marble_file *first = o.f;
    marble_handle_pool_release(p, first);
    OK(marble_handle_pool_acquire(p, "gate://g/other", MARBLE_OPEN_READ, &f, &e_));
    ASSERT_EQ_PTR(f, first);
    expect_text(f, "other");
    marble_handle_pool_release(p, f);

    /* A failed open in flight while its URI is evicted leaves nothing behind. */
    gate_arm(g);
    o = (opener){p, "gate://g/missing", NULL, -1};
    ASSERT_OK(pthread_create(&th, NULL, opener_thread, &o));
    gate_wait_inside(g);
    marble_handle_pool_evict(p, "gate://g/missing");
    gate_release(g);
    pthread_join(th, NULL);
    ASSERT_EQ_INT(o.rc, MARBLE_ERR_NOT_FOUND);
    ASSERT_NULL(o.f);
    ASSERT_EQ_INT(stats(p).in_use, 0);
    ASSERT_EQ_INT(stats(p).open, 1);

    OK(marble_handle_pool_destroy(p, &e_));
    ASSERT_EQ_U64(fs_open_files(fs), 0);
    close_fs(fs);
}
