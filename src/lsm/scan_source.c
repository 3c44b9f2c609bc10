/* Table scans as pipeline sources, with pruning by key range, zone maps and bloom filters.
 * (skeleton) */
#include "lsm/db_internal.h"

int marble_db_scan_source(marble_db *db, const char *table, const marble_scan_spec *spec,
                          marble_source *out, marble_error *err)
{
    (void)db; (void)table; (void)spec; (void)out;
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "scan sources: not built yet");
}

marble_sched *marble_db_sched(marble_db *db) { return db ? db->sched : NULL; }
