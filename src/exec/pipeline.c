/* Pipelines: sources, operators, morsel-driven parallel execution. (skeleton) */
#include "exec/exec_internal.h"

#define NYI(err) marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "pipelines: not built yet")

int marble_mem_budget_create(uint64_t limit, marble_mem_budget **out, marble_error *err)
{ (void)limit; (void)out; return NYI(err); }
void marble_mem_budget_destroy(marble_mem_budget *b) { (void)b; }
int marble_mem_budget_reserve(marble_mem_budget *b, uint64_t bytes, const char *what, marble_error *err)
{ (void)b; (void)bytes; (void)what; return NYI(err); }
void marble_mem_budget_release(marble_mem_budget *b, uint64_t bytes) { (void)b; (void)bytes; }
uint64_t marble_mem_budget_used(const marble_mem_budget *b) { (void)b; return 0; }
uint64_t marble_mem_budget_limit(const marble_mem_budget *b) { (void)b; return 0; }
uint64_t marble_mem_budget_peak(const marble_mem_budget *b) { (void)b; return 0; }
int marble_source_from_batches(struct ArrowSchema *schema, struct ArrowArray *batches, size_t n,
                               marble_source *out, marble_error *err)
{ (void)schema; (void)batches; (void)n; (void)out; return NYI(err); }
int marble_source_from_stream(struct ArrowArrayStream *stream, marble_source *out, marble_error *err)
{ (void)stream; (void)out; return NYI(err); }
int marble_pipeline_create(marble_source *source, marble_pipeline **out, marble_error *err)
{ (void)out; if (source && source->release) source->release(source->ud); return NYI(err); }
void marble_pipeline_destroy(marble_pipeline *p) { (void)p; }
int marble_pipeline_filter(marble_pipeline *p, const marble_expr *predicate, marble_error *err)
{ (void)p; (void)predicate; return NYI(err); }
int marble_pipeline_project(marble_pipeline *p, const marble_expr *const *exprs,
                            const char *const *names, size_t n, marble_error *err)
{ (void)p; (void)exprs; (void)names; (void)n; return NYI(err); }
int marble_pipeline_aggregate(marble_pipeline *p, const marble_expr *const *groups,
                              const char *const *group_names, size_t n_groups,
                              const marble_agg_spec *aggs, size_t n_aggs, marble_error *err)
{ (void)p; (void)groups; (void)group_names; (void)n_groups; (void)aggs; (void)n_aggs; return NYI(err); }
int marble_pipeline_sort(marble_pipeline *p, const marble_sort_key *keys, size_t n, int64_t limit,
                         marble_error *err)
{ (void)p; (void)keys; (void)n; (void)limit; return NYI(err); }
int marble_pipeline_limit(marble_pipeline *p, int64_t offset, int64_t limit, marble_error *err)
{ (void)p; (void)offset; (void)limit; return NYI(err); }
int marble_pipeline_schema(const marble_pipeline *p, struct ArrowSchema *out, marble_error *err)
{ (void)p; (void)out; return NYI(err); }
void marble_exec_options_init(marble_exec_options *o) { (void)o; }
int marble_pipeline_execute(marble_pipeline *p, const marble_exec_options *opts,
                            struct ArrowArrayStream *out, marble_error *err)
{ (void)p; (void)opts; (void)out; return NYI(err); }
int marble_stream_last_code(struct ArrowArrayStream *stream) { (void)stream; return 0; }
int marble_merge_streams(struct ArrowArrayStream *inputs, size_t n, const marble_sort_key *keys,
                         size_t n_keys, struct ArrowArrayStream *out, marble_error *err)
{ (void)inputs; (void)n; (void)keys; (void)n_keys; (void)out; return NYI(err); }
