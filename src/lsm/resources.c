/* The database's registry of live resources: every object a call hands out that outlives the
 * call (snapshots, scan streams, key-value iterators, scan sources) and every long job running
 * in a caller's thread (manual compactions, ingests, index rebuilds) is in it while it lives, so
 * that marble_db_close can refuse with a list of what is still open instead of freeing memory
 * they use. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lsm/db_internal.h"

void marble__db_res_init(marble_db *db)
{
    pthread_mutex_init(&db->res_mu, NULL);
    db->res_head.next = db->res_head.prev = &db->res_head;
}

void marble__db_res_destroy(marble_db *db)
{
    pthread_mutex_destroy(&db->res_mu);
}

void marble__db_res_add(marble_db *db, marble__res *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->what, sizeof r->what, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&db->res_mu);
    r->next = &db->res_head;
    r->prev = db->res_head.prev;
    r->prev->next = r;
    db->res_head.prev = r;
    pthread_mutex_unlock(&db->res_mu);
}

void marble__db_res_remove(marble_db *db, marble__res *r)
{
    pthread_mutex_lock(&db->res_mu);
    if (!r->next) { /* never registered (a failed open) or removed already */
        pthread_mutex_unlock(&db->res_mu);
        return;
    }
    r->prev->next = r->next;
    r->next->prev = r->prev;
    r->next = r->prev = NULL;
    pthread_mutex_unlock(&db->res_mu);
}

size_t marble__db_res_describe(marble_db *db, char *buf, size_t cap)
{
    size_t n = 0, used = 0, shown = 0;
    if (cap) buf[0] = 0;
    pthread_mutex_lock(&db->res_mu);
    for (marble__res *r = db->res_head.next; r != &db->res_head; r = r->next, n++) {
        if (shown == 4 || !cap) continue;
        int w = snprintf(buf + used, cap - used, "%s%s", shown ? "; " : "", r->what);
        if (w < 0 || (size_t)w >= cap - used) {
            shown = 4;
            continue;
        }
        used += (size_t)w;
        shown++;
    }
    pthread_mutex_unlock(&db->res_mu);
    if (n > shown && cap > used)
        snprintf(buf + used, cap - used, "; and %zu more", n - shown);
    return n;
}
