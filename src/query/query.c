/* Queries: the structured query, the SELECT parser, the planner. (skeleton) */
#include "marble/query.h"

#include <stdlib.h>

#define NYI(err) marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "queries: not built yet")

int marble_query_create(const char *table, marble_query **out, marble_error *err)
{ (void)table; (void)out; return NYI(err); }
void marble_query_destroy(marble_query *q) { (void)q; }
int marble_query_select_all(marble_query *q, marble_error *err) { (void)q; return NYI(err); }
int marble_query_select(marble_query *q, const marble_expr *e, const char *alias, marble_error *err)
{ (void)q; (void)e; (void)alias; return NYI(err); }
int marble_query_select_agg(marble_query *q, marble_agg_fn fn, const marble_expr *arg,
                            const char *alias, marble_error *err)
{ (void)q; (void)fn; (void)arg; (void)alias; return NYI(err); }
int marble_query_where(marble_query *q, const marble_expr *pred, marble_error *err)
{ (void)q; (void)pred; return NYI(err); }
int marble_query_group_by(marble_query *q, const marble_expr *e, marble_error *err)
{ (void)q; (void)e; return NYI(err); }
int marble_query_order_by(marble_query *q, const char *name, int position, int descending,
                          marble_error *err)
{ (void)q; (void)name; (void)position; (void)descending; return NYI(err); }
int marble_query_limit(marble_query *q, int64_t limit, int64_t offset, marble_error *err)
{ (void)q; (void)limit; (void)offset; return NYI(err); }
int marble_query_parse(const char *sql, marble_query **out, marble_error *err)
{ (void)sql; (void)out; return NYI(err); }
char *marble_query_to_sql(const marble_query *q) { (void)q; return NULL; }
void marble_query_options_init(marble_query_options *o) { (void)o; }
int marble_db_query(marble_db *db, const marble_query *q, const marble_query_options *opts,
                    struct ArrowArrayStream *out, marble_query_stats *stats, marble_error *err)
{ (void)db; (void)q; (void)opts; (void)out; (void)stats; return NYI(err); }
int marble_db_query_sql(marble_db *db, const char *sql, const marble_query_options *opts,
                        struct ArrowArrayStream *out, marble_query_stats *stats, marble_error *err)
{ (void)db; (void)sql; (void)opts; (void)out; (void)stats; return NYI(err); }
int marble_db_explain(marble_db *db, const marble_query *q, char **text, marble_error *err)
{ (void)db; (void)q; (void)text; return NYI(err); }
