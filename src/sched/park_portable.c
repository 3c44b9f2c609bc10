/* Parking without futexes: waiters sleep on one of 64 mutex+condvar buckets hashed by address. */
#include "sched/park.h"

#include <pthread.h>
#include <time.h>

#define NBUCKETS 64

static struct bucket {
    pthread_mutex_t mu;
    pthread_cond_t cv;
} buckets[NBUCKETS] = {
    [0 ... NBUCKETS - 1] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER}};

static struct bucket *bucket_of(const void *addr)
{
    uintptr_t a = (uintptr_t)addr;
    return &buckets[(a >> 6 ^ a >> 12) % NBUCKETS];
}

void marble__park_wait(_Atomic uint32_t *addr, uint32_t expected, uint64_t timeout_ns)
{
    struct bucket *b = bucket_of(addr);
    pthread_mutex_lock(&b->mu);
    if (atomic_load(addr) == expected) {
        if (timeout_ns) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + timeout_ns;
            ts.tv_sec += (time_t)(ns / 1000000000u);
            ts.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        } else {
            pthread_cond_wait(&b->cv, &b->mu);
        }
    }
    pthread_mutex_unlock(&b->mu);
}

void marble__park_wake(_Atomic uint32_t *addr, int n)
{
    struct bucket *b = bucket_of(addr);
    (void)n;
    /* The waker changed *addr before calling; taking the lock orders that change with a waiter's
     * check, and broadcast covers other addresses sharing the bucket. */
    pthread_mutex_lock(&b->mu);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}
