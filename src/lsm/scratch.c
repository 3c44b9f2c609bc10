/* Per-thread scratch buffers of the state store's hot paths (see db_internal.h). */
#include <pthread.h>
#include <stdlib.h>

#include "lsm/scratch.h"

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_key_ok;

static void scratch_free(void *p)
{
    marble__scratch *s = p;
    for (int i = 0; i < MARBLE__SCRATCH_SLOTS; i++)
        marble__bytes_free(&s->b[i]);
    free(s);
}

static void make_key(void)
{
    g_key_ok = pthread_key_create(&g_key, scratch_free) == 0;
}

marble__scratch *marble__scratch_get(void)
{
    pthread_once(&g_once, make_key);
    if (!g_key_ok) return NULL;
    marble__scratch *s = pthread_getspecific(g_key);
    if (s) return s;
    s = calloc(1, sizeof *s);
    if (s && pthread_setspecific(g_key, s) != 0) {
        free(s);
        s = NULL;
    }
    return s;
}

void marble__scratch_trim(marble__bytes *b, size_t keep)
{
    if (b->cap > keep) marble__bytes_free(b);
    b->len = 0;
}
