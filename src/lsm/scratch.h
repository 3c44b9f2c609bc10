/* Per-thread scratch buffers of the state store (private to src/lsm/). */
#ifndef MARBLE_LSM_SCRATCH_H
#define MARBLE_LSM_SCRATCH_H

#include "lsm/keyenc.h"

/* Per-thread scratch buffers for the hot paths (writes, gets, SSTable lookups), freed when the
 * thread exits (a pthread key destructor) so short-lived threads leak nothing. Each slot has one
 * user; a caller never holds a slot across a call that uses the same slot. NULL when out of
 * memory. */
enum {
    MARBLE__SCRATCH_WPAYLOAD,
    MARBLE__SCRATCH_WKEY,
    MARBLE__SCRATCH_WVAL,
    MARBLE__SCRATCH_GKEY,
    MARBLE__SCRATCH_GVAL,
    MARBLE__SCRATCH_SST,
    MARBLE__SCRATCH_SST_RAW,
    MARBLE__SCRATCH_ITER_RAW,
    MARBLE__SCRATCH_SLOTS
};
typedef struct marble__scratch {
    marble__bytes b[MARBLE__SCRATCH_SLOTS];
} marble__scratch;
marble__scratch *marble__scratch_get(void);
/* Frees b's memory when it grew past `keep` bytes (after an unusually large operation). */
void marble__scratch_trim(marble__bytes *b, size_t keep);

#endif
