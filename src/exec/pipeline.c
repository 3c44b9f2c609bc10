/* Pipelines: building (operators checked against the schema at their point), and morsel-driven
 * execution on the scheduler. The operator chain is cut into runs at blocking operators: a run
 * is a source, filter/project operators fused inside worker tasks, then either a blocking sink
 * (aggregate, sort) whose per-worker states are merged into in-memory batches that feed the next
 * run, or streaming delivery through a bounded window of morsels in flight and a reorder buffer,
 * with limits and the operators after them applied in morsel order by the reading thread. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec/pipeline_internal.h"

enum { OP_FILTER = 1, OP_PROJECT, OP_AGG, OP_SORT, OP_LIMIT };

typedef struct op {
    int kind;
    const struct ArrowSchema *in; /* schema before the operator */
    struct ArrowSchema out;       /* schema after it */
    marble__bound *pred;          /* FILTER */
    size_t n;                     /* PROJECT */
    marble__bound **exprs;
    marble__agg_def agg;   /* AGG */
    marble_sort_key *keys; /* SORT */
    size_t n_keys;
    int64_t limit;              /* SORT (top-N when >= 0), LIMIT */
    int64_t offset;             /* LIMIT */
    int64_t rem_skip, rem_take; /* LIMIT, while executing */
} op;

struct marble_pipeline {
    marble_source src;
    struct ArrowSchema src_schema;
    op **ops;
    size_t n_ops, cap;
};

/* ---- building -------------------------------------------------------------------------------- */

static void op_free(op *o)
{
    if (!o) return;
    marble_arrow_schema_release(&o->out);
    marble__bound_free(o->pred);
    for (size_t i = 0; o->exprs && i < o->n; i++)
        marble__bound_free(o->exprs[i]);
    free(o->exprs);
    for (size_t i = 0; o->agg.groups && i < o->agg.n_groups; i++)
        marble__bound_free(o->agg.groups[i]);
    for (size_t i = 0; o->agg.args && i < o->agg.n_aggs; i++)
        marble__bound_free(o->agg.args[i]);
    free(o->agg.groups);
    free(o->agg.args);
    free(o->agg.fns);
    free(o->keys);
    free(o);
}

void marble_pipeline_destroy(marble_pipeline *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_ops; i++)
        op_free(p->ops[i]);
    free(p->ops);
    marble_arrow_schema_release(&p->src_schema);
    if (p->src.release) p->src.release(p->src.ud);
    free(p);
}

int marble_pipeline_create(marble_source *source, marble_pipeline **out, marble_error *err)
{
    int rc;
    marble_pipeline *p = NULL;
    if (!source || !out) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "pipeline: source or out is NULL");
        goto fail;
    }
    if (!source->get_schema || !source->open || !source->next || !source->close ||
        source->n_morsels < 0) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "pipeline: source has missing callbacks or a negative morsel count");
        goto fail;
    }
    p = calloc(1, sizeof *p);
    if (!p) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "pipeline: out of memory");
        goto fail;
    }
    p->src = *source;
    source->release = NULL;
    rc = p->src.get_schema(p->src.ud, &p->src_schema, err);
    if (rc != MARBLE_OK) goto fail;
    if (!p->src_schema.release || strcmp(p->src_schema.format, "+s") != 0) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "pipeline: the source's schema is not a struct ('+s')");
        goto fail;
    }
    *out = p;
    return MARBLE_OK;
fail:
    if (p)
        marble_pipeline_destroy(p);
    else if (source && source->release)
        source->release(source->ud);
    if (source) source->release = NULL;
    return rc;
}

static const struct ArrowSchema *cur_schema(const marble_pipeline *p)
{
    return p->n_ops ? &p->ops[p->n_ops - 1]->out : &p->src_schema;
}

static int push_op(marble_pipeline *p, op *o, marble_error *err)
{
    if (p->n_ops == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        op **n = realloc(p->ops, cap * sizeof *n);
        if (!n) {
            op_free(o);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "pipeline: out of memory");
        }
        p->ops = n;
        p->cap = cap;
    }
    p->ops[p->n_ops++] = o;
    return MARBLE_OK;
}

static op *new_op(marble_pipeline *p, int kind, marble_error *err)
{
    op *o = calloc(1, sizeof *o);
    if (!o) {
        marble_error_set(err, MARBLE_ERR_NO_MEMORY, "pipeline: out of memory");
        return NULL;
    }
    o->kind = kind;
    o->in = cur_schema(p);
    return o;
}

static int bind(const marble_expr *e, const struct ArrowSchema *schema, const char *what,
                marble__bound **out, marble_error *err)
{
    if (!e)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s: expression is NULL", what);
    marble_error e2;
    marble_error_clear(&e2);
    int rc = marble__expr_bind(e, schema, out, &e2);
    if (rc != MARBLE_OK) return marble_error_set(err, rc, "%s: %s", what, e2.message);
    return MARBLE_OK;
}

int marble_pipeline_filter(marble_pipeline *p, const marble_expr *predicate, marble_error *err)
{
    if (!p) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "filter: pipeline is NULL");
    op *o = new_op(p, OP_FILTER, err);
    if (!o) return MARBLE_ERR_NO_MEMORY;
    int rc = bind(predicate, o->in, "filter", &o->pred, err);
    if (rc == MARBLE_OK && marble__bound_kind(o->pred) != MARBLE_DATUM_BOOL) {
        char text[128];
        marble_expr_to_string(predicate, text, sizeof text);
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "filter: predicate %s is of type '%s', not boolean", text,
                              marble__bound_format(o->pred));
    }
    if (rc == MARBLE_OK) rc = marble_arrow_schema_copy(o->in, &o->out, err);
    if (rc != MARBLE_OK) {
        op_free(o);
        return rc;
    }
    return push_op(p, o, err);
}

/* The default output name of an expression (malloc'd). */
static char *expr_name(const marble_expr *e)
{
    if (marble_expr_get_kind(e) == MARBLE_EXPR_COLUMN && marble_expr_get_column(e))
        return strdup(marble_expr_get_column(e));
    size_t n = marble_expr_to_string(e, NULL, 0);
    char *s = malloc(n + 1);
    if (s) marble_expr_to_string(e, s, n + 1);
    return s;
}

static int make_schema(struct ArrowSchema *out, marble_field_spec *f, size_t n, marble_error *err)
{
    return marble_arrow_schema_make(out, f, n, NULL, NULL, 0, err);
}

static int field_nullable(const struct ArrowSchema *in, const marble__bound *b)
{
    int c = marble__bound_column(b);
    if (c >= 0 && c < in->n_children) return (in->children[c]->flags & ARROW_FLAG_NULLABLE) != 0;
    return 1;
}

int marble_pipeline_project(marble_pipeline *p, const marble_expr *const *exprs,
                            const char *const *names, size_t n, marble_error *err)
{
    if (!p || (n && !exprs) || n == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "project: pipeline or expressions missing (need at least one)");
    op *o = new_op(p, OP_PROJECT, err);
    if (!o) return MARBLE_ERR_NO_MEMORY;
    marble_field_spec *f = calloc(n, sizeof *f);
    char **own = calloc(n, sizeof *own);
    o->exprs = calloc(n, sizeof *o->exprs);
    int rc = MARBLE_OK;
    if (!f || !own || !o->exprs)
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "project: out of memory");
    for (size_t i = 0; rc == MARBLE_OK && i < n; i++) {
        char what[48];
        snprintf(what, sizeof what, "project column %zu", i);
        rc = bind(exprs[i], o->in, what, &o->exprs[i], err);
        if (rc != MARBLE_OK) break;
        o->n = i + 1;
        if (names && names[i]) {
            f[i].name = names[i];
        } else {
            own[i] = expr_name(exprs[i]);
            if (!own[i]) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "project: out of memory");
                break;
            }
            f[i].name = own[i];
        }
        f[i].format = marble__bound_format(o->exprs[i]);
        f[i].nullable = field_nullable(o->in, o->exprs[i]);
    }
    if (rc == MARBLE_OK) rc = make_schema(&o->out, f, n, err);
    for (size_t i = 0; own && i < n; i++)
        free(own[i]);
    free(own);
    free(f);
    if (rc != MARBLE_OK) {
        op_free(o);
        return rc;
    }
    return push_op(p, o, err);
}

const char *marble_agg_fn_name(marble_agg_fn fn)
{
    switch (fn) {
    case MARBLE_AGG_COUNT_STAR:
    case MARBLE_AGG_COUNT:
        return "count";
    case MARBLE_AGG_SUM:
        return "sum";
    case MARBLE_AGG_MIN:
        return "min";
    case MARBLE_AGG_MAX:
        return "max";
    case MARBLE_AGG_AVG:
        return "avg";
    }
    return "?";
}

static const char *kind_format(marble_datum_kind k)
{
    switch (k) {
    case MARBLE_DATUM_DOUBLE:
        return "g";
    case MARBLE_DATUM_BOOL:
        return "b";
    case MARBLE_DATUM_STRING:
        return "u";
    default:
        return "l";
    }
}

int marble_pipeline_aggregate(marble_pipeline *p, const marble_expr *const *groups,
                              const char *const *group_names, size_t n_groups,
                              const marble_agg_spec *aggs, size_t n_aggs, marble_error *err)
{
    if (!p || (n_groups && !groups) || (n_aggs && !aggs) || n_groups + n_aggs == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "aggregate: pipeline, group keys or aggregates missing");
    op *o = new_op(p, OP_AGG, err);
    if (!o) return MARBLE_ERR_NO_MEMORY;
    size_t nf = n_groups + n_aggs;
    marble_field_spec *f = calloc(nf, sizeof *f);
    char **own = calloc(nf, sizeof *own);
    o->agg.groups = calloc(n_groups + 1, sizeof *o->agg.groups);
    o->agg.args = calloc(n_aggs + 1, sizeof *o->agg.args);
    o->agg.fns = calloc(n_aggs + 1, sizeof *o->agg.fns);
    o->agg.out = &o->out;
    int rc = MARBLE_OK;
    if (!f || !own || !o->agg.groups || !o->agg.args || !o->agg.fns)
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
    for (size_t i = 0; rc == MARBLE_OK && i < n_groups; i++) {
        char what[48];
        snprintf(what, sizeof what, "aggregate group key %zu", i);
        rc = bind(groups[i], o->in, what, &o->agg.groups[i], err);
        if (rc != MARBLE_OK) break;
        o->agg.n_groups = i + 1;
        if (group_names && group_names[i]) {
            f[i].name = group_names[i];
        } else if (!(f[i].name = own[i] = expr_name(groups[i]))) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
            break;
        }
        f[i].format = marble__bound_format(o->agg.groups[i]);
        f[i].nullable = 1;
    }
    for (size_t a = 0; rc == MARBLE_OK && a < n_aggs; a++) {
        marble_agg_fn fn = aggs[a].fn;
        o->agg.fns[a] = fn;
        o->agg.n_aggs = a + 1;
        if (fn < MARBLE_AGG_COUNT_STAR || fn > MARBLE_AGG_AVG) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "aggregate %zu: unknown function %d", a, (int)fn);
            break;
        }
        char what[64];
        snprintf(what, sizeof what, "aggregate %zu (%s)", a, marble_agg_fn_name(fn));
        marble_datum_kind k = MARBLE_DATUM_INT;
        if (fn != MARBLE_AGG_COUNT_STAR) {
            rc = bind(aggs[a].arg, o->in, what, &o->agg.args[a], err);
            if (rc != MARBLE_OK) break;
            k = marble__bound_kind(o->agg.args[a]);
            if ((fn == MARBLE_AGG_SUM || fn == MARBLE_AGG_AVG) && k != MARBLE_DATUM_INT &&
                k != MARBLE_DATUM_DOUBLE) {
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "%s: argument of type '%s' is not a number", what,
                                      marble__bound_format(o->agg.args[a]));
                break;
            }
        }
        size_t i = n_groups + a;
        if (aggs[a].name) {
            f[i].name = aggs[a].name;
        } else {
            char *arg = fn == MARBLE_AGG_COUNT_STAR ? strdup("*") : expr_name(aggs[a].arg);
            size_t len = arg ? strlen(arg) + 16 : 0;
            own[i] = arg ? malloc(len) : NULL;
            if (own[i]) snprintf(own[i], len, "%s(%s)", marble_agg_fn_name(fn), arg);
            free(arg);
            if (!own[i]) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
                break;
            }
            f[i].name = own[i];
        }
        f[i].nullable = 1;
        switch (fn) {
        case MARBLE_AGG_COUNT_STAR:
        case MARBLE_AGG_COUNT:
            f[i].format = "l";
            f[i].nullable = 0;
            break;
        case MARBLE_AGG_AVG:
            f[i].format = "g";
            break;
        default:
            f[i].format = kind_format(k);
        }
    }
    if (rc == MARBLE_OK) rc = make_schema(&o->out, f, nf, err);
    for (size_t i = 0; own && i < nf; i++)
        free(own[i]);
    free(own);
    free(f);
    if (rc != MARBLE_OK) {
        op_free(o);
        return rc;
    }
    return push_op(p, o, err);
}

int marble_pipeline_sort(marble_pipeline *p, const marble_sort_key *keys, size_t n, int64_t limit,
                         marble_error *err)
{
    if (!p || !keys || n == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "sort: pipeline or keys missing (need at least one key)");
    const struct ArrowSchema *s = cur_schema(p);
    for (size_t i = 0; i < n; i++) {
        if (keys[i].column < 0 || keys[i].column >= s->n_children)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "sort key %zu: column %d out of range (%lld columns)", i,
                                    keys[i].column, (long long)s->n_children);
        char what[64];
        snprintf(what, sizeof what, "sort key %zu", i);
        MARBLE_RETURN_NOT_OK(marble__colview_check(s->children[keys[i].column], what, err));
    }
    op *o = new_op(p, OP_SORT, err);
    if (!o) return MARBLE_ERR_NO_MEMORY;
    o->keys = malloc(n * sizeof *o->keys);
    int rc = o->keys ? marble_arrow_schema_copy(o->in, &o->out, err)
                     : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sort: out of memory");
    if (rc != MARBLE_OK) {
        op_free(o);
        return rc;
    }
    memcpy(o->keys, keys, n * sizeof *keys);
    o->n_keys = n;
    o->limit = limit < 0 ? -1 : limit;
    return push_op(p, o, err);
}

int marble_pipeline_limit(marble_pipeline *p, int64_t offset, int64_t limit, marble_error *err)
{
    if (!p || offset < 0 || limit < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "limit: offset %lld and limit %lld must not be negative",
                                (long long)offset, (long long)limit);
    op *o = new_op(p, OP_LIMIT, err);
    if (!o) return MARBLE_ERR_NO_MEMORY;
    int rc = marble_arrow_schema_copy(o->in, &o->out, err);
    if (rc != MARBLE_OK) {
        op_free(o);
        return rc;
    }
    o->offset = offset;
    o->limit = limit;
    return push_op(p, o, err);
}

int marble_pipeline_schema(const marble_pipeline *p, struct ArrowSchema *out, marble_error *err)
{
    if (!p || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "pipeline schema: NULL argument");
    return marble_arrow_schema_copy(cur_schema(p), out, err);
}

void marble_exec_options_init(marble_exec_options *o)
{
    if (o) memset(o, 0, sizeof *o);
}

/* ---- batches through fused operators --------------------------------------------------------- */

typedef struct scratch {
    uint32_t *sel;
    size_t cap;
    marble__vec vec;
} scratch;

static void scratch_init(scratch *s)
{
    memset(s, 0, sizeof *s);
    marble__vec_init(&s->vec);
}

static void scratch_free(scratch *s)
{
    free(s->sel);
    marble__vec_free(&s->vec);
    s->sel = NULL;
    s->cap = 0;
}

static int project(const op *o, struct ArrowArray *cur, const uint32_t *sel, int64_t n, scratch *sc,
                   struct ArrowArray *out, marble_error *err)
{
    marble__shared *sh = NULL;
    int rc = marble__batch_alloc(out, (int64_t)o->n, n, err);
    if (rc == MARBLE_OK && !sel && !(sh = marble__shared_new(cur)))
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "project: out of memory");
    const struct ArrowArray *b = sh ? marble__shared_batch(sh) : cur;
    for (size_t i = 0; rc == MARBLE_OK && i < o->n; i++) {
        int c = marble__bound_column(o->exprs[i]);
        if (c >= 0 && sh)
            rc = marble__column_view(sh, c, 0, n, out->children[i], err);
        else if (c >= 0)
            rc = marble__gather(o->in->children[c], &b, c, NULL, sel, n, out->children[i], err);
        else if ((rc = marble__expr_eval(o->exprs[i], b, sel, n, &sc->vec, err)) == MARBLE_OK)
            rc = marble__vec_to_arrow(&sc->vec, out->children[i], err);
    }
    if (sh)
        marble__shared_unref(sh);
    else
        marble_arrow_array_release(cur);
    if (rc != MARBLE_OK) marble_arrow_array_release(out);
    return rc;
}

/* Runs filter/project operators over rows *sel[0..*n) (*sel NULL: all) of `cur` (owned;
 * replaced by projections), updating *sel and *n to the rows of *cur that survive. */
static int apply_ops(op *const *ops, size_t n_ops, struct ArrowArray *cur, scratch *sc,
                     const uint32_t **sel, int64_t *n, marble_error *err)
{
    for (size_t i = 0; i<n_ops && * n> 0; i++) {
        const op *o = ops[i];
        if (o->kind == OP_FILTER) {
            if ((size_t)cur->length > sc->cap) {
                uint32_t *ns = realloc(sc->sel, (size_t)cur->length * sizeof *ns);
                if (!ns)
                    return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "filter: out of memory");
                sc->sel = ns;
                sc->cap = (size_t)cur->length;
            }
            int64_t m = 0;
            MARBLE_RETURN_NOT_OK(marble__expr_select(o->pred, cur, *sel, *n, sc->sel, &m, err));
            *sel = sc->sel;
            *n = m;
        } else if (o->kind == OP_PROJECT) {
            struct ArrowArray nb;
            int rc = project(o, cur, *sel, *n, sc, &nb, err);
            if (rc != MARBLE_OK) return rc;
            marble_arrow_array_move(&nb, cur);
            *sel = NULL;
            *n = cur->length;
        }
    }
    return MARBLE_OK;
}

/* Turns (cur, sel, n) into a batch of its own (out->release NULL when no rows remain). */
static int materialize(const struct ArrowSchema *schema, struct ArrowArray *cur,
                       const uint32_t *sel, int64_t n, struct ArrowArray *out, marble_error *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0) {
        marble_arrow_array_release(cur);
        return MARBLE_OK;
    }
    if (!sel) {
        marble_arrow_array_move(cur, out);
        return MARBLE_OK;
    }
    const struct ArrowArray *b = cur;
    int rc = marble__gather_batch(schema, &b, NULL, sel, n, out, err);
    marble_arrow_array_release(cur);
    return rc;
}

static int check_batch(const struct ArrowSchema *schema, const struct ArrowArray *b, int64_t morsel,
                       marble_error *err)
{
    if (b->n_children != schema->n_children || b->length < 0 || b->length > UINT32_MAX)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "source morsel %lld gave a batch of %lld columns and %lld rows "
                                "for a schema of %lld columns",
                                (long long)morsel, (long long)b->n_children, (long long)b->length,
                                (long long)schema->n_children);
    for (int64_t c = 0; c < b->n_children; c++) {
        const struct ArrowArray *col = b->children[c];
        if (!col || !col->release || col->length < b->offset + b->length || col->offset < 0)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "source morsel %lld gave a batch whose column '%s' is shorter "
                                    "than the batch",
                                    (long long)morsel,
                                    schema->children[c]->name ? schema->children[c]->name : "");
    }
    return MARBLE_OK;
}

/* ---- execution state ------------------------------------------------------------------------- */

typedef struct run {
    const struct ArrowSchema *in;
    op **par; /* filter/project, in the workers */
    size_t n_par;
    op **tail; /* from the first limit on, in the reading thread */
    size_t n_tail;
    op *sink; /* AGG or SORT */
    const struct ArrowSchema *par_out;
} run;

typedef struct oslot {
    int64_t morsel; /* the morsel it holds, -1 none */
    int done;
    struct ArrowArray *q;
    size_t qhead, qn, qcap;
} oslot;

struct exec;

typedef struct wtask {
    struct exec *x;
    int running;
    int64_t morsel;
    void *cursor;
    scratch sc;
} wtask;

/* The state behind a result stream.
 * Thread safety: the stream is used by one reading thread; worker tasks of a streaming run share
 * n, next_claim, head, window, slots, scode/smsg, stop and each wtask's `running` with it under
 * mu (cv signals new output, finished morsels and errors). A wtask's other fields belong to the
 * task that runs it. group_live, r, src and the tasks array change only while no task runs.
 * Invariants: morsels in [head, next_claim) are claimed and each sits in slots[m % window];
 * next_claim < head + window; a slot's queue holds its morsel's batches in order. */
typedef struct exec {
    marble_pipeline *p;
    marble_exec_options o;
    marble_source src;
    const struct ArrowSchema *src_schema;
    struct ArrowSchema out_schema;
    int first_run;
    size_t next_op;
    int started, ended;
    int code;
    char msg[MARBLE_ERROR_MESSAGE_SIZE];
    _Atomic int64_t done_morsels;
    int64_t total_morsels;
    /* the streaming run (shared with workers under mu) */
    run r;
    int parallel;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t n, next_claim, head, window;
    oslot *slots;
    wtask *tasks;
    int n_tasks;
    marble_group g;
    int group_live;
    int scode;
    char smsg[MARBLE_ERROR_MESSAGE_SIZE];
    int stop;
    /* inline streaming and the reading thread's tail */
    int64_t icur_morsel;
    void *icursor;
    scratch isc, tsc;
} exec;

static int budget_of(const exec *x)
{
    return x->o.batch_budget > 0 ? x->o.batch_budget : 16;
}

static int parallelism(const exec *x)
{
    if (!x->o.sched) return 1;
    int t = marble_sched_threads(x->o.sched);
    if (x->o.max_parallel > 0 && x->o.max_parallel < t) t = x->o.max_parallel;
    return t < 1 ? 1 : t;
}

static void morsel_done(exec *x)
{
    if (!x->first_run) return;
    int64_t d = atomic_fetch_add_explicit(&x->done_morsels, 1, memory_order_relaxed) + 1;
    if (x->o.progress) x->o.progress(x->o.progress_ud, d, x->total_morsels);
}

static size_t plan_run(exec *x, run *r)
{
    marble_pipeline *p = x->p;
    memset(r, 0, sizeof *r);
    r->in = x->src_schema;
    size_t i = x->next_op;
    r->par = p->ops + i;
    while (i < p->n_ops && (p->ops[i]->kind == OP_FILTER || p->ops[i]->kind == OP_PROJECT)) {
        r->n_par++;
        i++;
    }
    r->tail = p->ops + i;
    while (i < p->n_ops && p->ops[i]->kind != OP_AGG && p->ops[i]->kind != OP_SORT) {
        r->n_tail++;
        i++;
    }
    if (!r->n_tail && i < p->n_ops) r->sink = p->ops[i++];
    r->par_out = r->n_par ? &r->par[r->n_par - 1]->out : r->in;
    return i;
}

/* ---- blocking runs --------------------------------------------------------------------------- */

typedef struct btask {
    exec *x;
    run *r;
    _Atomic int64_t *next;
    int64_t morsel;
    void *cursor;
    int64_t seq;
    scratch sc;
    marble__agg_local *agg;
    marble__sort_local *sort;
} btask;

static void btask_close(btask *t)
{
    if (t->cursor) t->x->src.close(t->x->src.ud, t->cursor);
    t->cursor = NULL;
    t->morsel = -1;
}

/* Processes up to `budget` batches; *finished when no morsel is left. */
static int bstep(btask *t, int budget, const marble_task_ctx *ctx, int *finished, marble_error *err)
{
    exec *x = t->x;
    run *r = t->r;
    *finished = 0;
    for (int done = 0; done < budget;) {
        if (ctx ? marble_task_cancelled(ctx) : marble_cancel_token_is_cancelled(x->o.cancel)) {
            btask_close(t);
            *finished = 1;
            return ctx ? MARBLE_OK
                       : marble_error_set(err, MARBLE_ERR_CANCELLED, "pipeline cancelled");
        }
        if (t->morsel < 0) {
            /* relaxed: the counter only hands out distinct indexes. */
            int64_t m = atomic_fetch_add_explicit(t->next, 1, memory_order_relaxed);
            if (m >= x->src.n_morsels) {
                *finished = 1;
                return MARBLE_OK;
            }
            int orc = x->src.open(x->src.ud, m, &t->cursor, err);
            if (orc != MARBLE_OK) {
                t->cursor = NULL;
                return orc;
            }
            t->morsel = m;
            t->seq = 0;
        }
        struct ArrowArray b;
        memset(&b, 0, sizeof b);
        int rc = x->src.next(x->src.ud, t->cursor, &b, err);
        if (rc == MARBLE_ERR_NOT_FOUND) {
            btask_close(t);
            morsel_done(x);
            continue;
        }
        if (rc != MARBLE_OK) return rc;
        done++;
        if ((rc = check_batch(r->in, &b, t->morsel, err)) != MARBLE_OK) {
            marble_arrow_array_release(&b);
            return rc;
        }
        const uint32_t *sel = NULL;
        int64_t n = b.length;
        rc = apply_ops(r->par, r->n_par, &b, &t->sc, &sel, &n, err);
        if (rc == MARBLE_OK && t->agg) rc = marble__agg_consume(t->agg, &b, sel, n, err);
        if (rc == MARBLE_OK && t->sort)
            rc = marble__sort_consume(t->sort, &b, sel, n, t->morsel, &t->seq, err);
        marble_arrow_array_release(&b);
        if (rc != MARBLE_OK) return rc;
    }
    return MARBLE_OK;
}

static int ctx_cancelled(void *ctx)
{
    return marble_task_cancelled(ctx);
}

static marble_task_status btask_fn(marble_task_ctx *ctx, void *arg)
{
    btask *t = arg;
    marble_error e;
    marble_error_clear(&e);
    int finished;
    int rc = bstep(t, budget_of(t->x), ctx, &finished, &e);
    if (rc != MARBLE_OK) {
        btask_close(t);
        return marble_task_fail(ctx, rc, "%s", e.message);
    }
    if (!finished) return MARBLE_TASK_YIELD;
    /* the worker sorts its own run, so the runs are sorted in parallel before the merge */
    if (t->sort && !marble_task_cancelled(ctx)) {
        rc = marble__sort_local_sort(t->sort, ctx_cancelled, ctx, &e);
        if (rc != MARBLE_OK && rc != MARBLE_ERR_CANCELLED)
            return marble_task_fail(ctx, rc, "%s", e.message);
    }
    return MARBLE_TASK_DONE;
}

static int run_blocking(exec *x, run *r, struct ArrowArray **batches, size_t *nb, marble_error *err)
{
    int par = parallelism(x);
    if (par > x->src.n_morsels) par = x->src.n_morsels > 0 ? (int)x->src.n_morsels : 1;
    _Atomic int64_t next;
    atomic_init(&next, 0);
    btask *t = calloc((size_t)par, sizeof *t);
    if (!t) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "pipeline: out of memory");
    int rc = MARBLE_OK;
    for (int i = 0; i < par && rc == MARBLE_OK; i++) {
        t[i].x = x;
        t[i].r = r;
        t[i].next = &next;
        t[i].morsel = -1;
        scratch_init(&t[i].sc);
        if (r->sink->kind == OP_AGG)
            rc = marble__agg_local_create(&r->sink->agg, x->o.memory, &t[i].agg, err);
        else
            rc = marble__sort_local_create(r->par_out, r->sink->keys, r->sink->n_keys,
                                           r->sink->limit, x->o.memory, &t[i].sort, err);
    }
    if (rc == MARBLE_OK && x->o.sched) {
        marble_group g;
        marble_group_init(&g, x->o.sched, x->o.cancel);
        for (int i = 0; i < par && rc == MARBLE_OK; i++)
            rc = marble_group_spawn(&g, btask_fn, &t[i]);
        if (rc != MARBLE_OK) {
            marble_group_cancel(&g);
            marble_error_set(err, rc, "pipeline: spawning tasks failed");
        }
        int wrc = marble_group_wait(&g, err);
        if (rc == MARBLE_OK) rc = wrc;
        if (rc == MARBLE_ERR_CANCELLED) marble_error_set(err, rc, "pipeline cancelled");
        marble_group_destroy(&g);
    } else if (rc == MARBLE_OK) {
        int finished = 0;
        while (rc == MARBLE_OK && !finished)
            rc = bstep(&t[0], budget_of(x), NULL, &finished, err);
    }
    for (int i = 0; i < par; i++)
        btask_close(&t[i]);
    if (rc == MARBLE_OK && r->sink->kind == OP_AGG) {
        for (int i = 1; i < par && rc == MARBLE_OK; i++) {
            rc = marble__agg_merge(t[0].agg, t[i].agg, err);
            marble__agg_local_destroy(t[i].agg);
            t[i].agg = NULL;
        }
        if (rc == MARBLE_OK) rc = marble__agg_finish(t[0].agg, batches, nb, err);
    } else if (rc == MARBLE_OK) {
        marble__sort_local **ls = malloc((size_t)par * sizeof *ls);
        if (!ls) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "pipeline: out of memory");
        } else {
            for (int i = 0; i < par; i++)
                ls[i] = t[i].sort;
            rc = marble__sort_finish(ls, (size_t)par, x->o.cancel, batches, nb, err);
            free(ls);
        }
    }
    for (int i = 0; i < par; i++) {
        marble__agg_local_destroy(t[i].agg);
        marble__sort_local_destroy(t[i].sort);
        scratch_free(&t[i].sc);
    }
    free(t);
    return rc;
}

/* ---- streaming runs -------------------------------------------------------------------------- */

static void set_serr(exec *x, int code, const char *msg)
{
    if (!x->scode) {
        x->scode = code;
        snprintf(x->smsg, sizeof x->smsg, "%s", msg);
    }
    x->stop = 1;
    if (x->group_live) marble_group_cancel(&x->g);
    pthread_cond_broadcast(&x->cv);
}

static void wtask_close(wtask *w)
{
    if (w->cursor) w->x->src.close(w->x->src.ud, w->cursor);
    w->cursor = NULL;
    w->morsel = -1;
}

static int push_out(oslot *s, struct ArrowArray *b)
{
    if (s->qn == s->qcap) {
        size_t cap = s->qcap ? s->qcap * 2 : 4;
        struct ArrowArray *nq = realloc(s->q, cap * sizeof *nq);
        if (!nq) return MARBLE_ERR_NO_MEMORY;
        s->q = nq;
        s->qcap = cap;
    }
    marble_arrow_array_move(b, &s->q[s->qn++]);
    return MARBLE_OK;
}

static marble_task_status stream_task(marble_task_ctx *ctx, void *arg);

/* Under mu: starts idle workers for morsels that may be claimed. */
static void spawn_idle(exec *x)
{
    int64_t claimable = (x->n < x->head + x->window ? x->n : x->head + x->window) - x->next_claim;
    for (int i = 0; i < x->n_tasks && claimable > 0 && !x->stop; i++) {
        wtask *w = &x->tasks[i];
        if (w->running) continue;
        w->running = 1;
        claimable--;
        int rc = marble_group_spawn(&x->g, stream_task, w);
        if (rc != MARBLE_OK) {
            w->running = 0;
            set_serr(x, rc, "pipeline: spawning a task failed");
        }
    }
}

static marble_task_status stream_task(marble_task_ctx *ctx, void *arg)
{
    wtask *w = arg;
    exec *x = w->x;
    marble_error e;
    marble_error_clear(&e);
    int rc = MARBLE_OK;
    for (int done = 0; done < budget_of(x);) {
        if (marble_task_cancelled(ctx)) {
            rc = marble_error_set(&e, MARBLE_ERR_CANCELLED, "pipeline cancelled");
            break;
        }
        if (w->morsel < 0) {
            pthread_mutex_lock(&x->mu);
            if (x->stop || x->next_claim >= x->n || x->next_claim >= x->head + x->window) {
                w->running = 0;
                pthread_mutex_unlock(&x->mu);
                return MARBLE_TASK_DONE;
            }
            int64_t m = x->next_claim++;
            oslot *s = &x->slots[m % x->window];
            s->morsel = m;
            s->done = 0;
            s->qhead = s->qn = 0;
            pthread_mutex_unlock(&x->mu);
            w->morsel = m;
            if ((rc = x->src.open(x->src.ud, m, &w->cursor, &e)) != MARBLE_OK) {
                w->cursor = NULL;
                break;
            }
        }
        struct ArrowArray b;
        memset(&b, 0, sizeof b);
        rc = x->src.next(x->src.ud, w->cursor, &b, &e);
        if (rc == MARBLE_ERR_NOT_FOUND) {
            int64_t m = w->morsel;
            wtask_close(w);
            morsel_done(x);
            pthread_mutex_lock(&x->mu);
            x->slots[m % x->window].done = 1;
            pthread_cond_broadcast(&x->cv);
            pthread_mutex_unlock(&x->mu);
            rc = MARBLE_OK;
            continue;
        }
        if (rc != MARBLE_OK) break;
        done++;
        if ((rc = check_batch(x->r.in, &b, w->morsel, &e)) != MARBLE_OK) {
            marble_arrow_array_release(&b);
            break;
        }
        const uint32_t *sel = NULL;
        int64_t n = b.length;
        struct ArrowArray ob;
        rc = apply_ops(x->r.par, x->r.n_par, &b, &w->sc, &sel, &n, &e);
        if (rc == MARBLE_OK) rc = materialize(x->r.par_out, &b, sel, n, &ob, &e);
        marble_arrow_array_release(&b);
        if (rc != MARBLE_OK) break;
        if (!ob.release) continue;
        pthread_mutex_lock(&x->mu);
        rc = push_out(&x->slots[w->morsel % x->window], &ob);
        if (rc == MARBLE_OK) pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
        if (rc != MARBLE_OK) {
            marble_arrow_array_release(&ob);
            marble_error_set(&e, rc, "pipeline: out of memory");
            break;
        }
    }
    if (rc == MARBLE_OK) return MARBLE_TASK_YIELD;
    wtask_close(w);
    pthread_mutex_lock(&x->mu);
    set_serr(x, rc, e.message);
    w->running = 0;
    pthread_mutex_unlock(&x->mu);
    return MARBLE_TASK_DONE;
}

static int stream_start(exec *x, marble_error *err)
{
    x->n = x->src.n_morsels;
    x->icur_morsel = -1;
    x->parallel = x->o.sched && x->n > 0 && (x->r.n_par > 0 || x->n > 1) &&
                  marble_sched_worker_index(x->o.sched) < 0;
    if (!x->parallel) return MARBLE_OK;
    x->n_tasks = parallelism(x);
    x->window = 2 * (int64_t)x->n_tasks;
    x->slots = calloc((size_t)x->window, sizeof *x->slots);
    x->tasks = calloc((size_t)x->n_tasks, sizeof *x->tasks);
    if (!x->slots || !x->tasks)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "pipeline: out of memory");
    for (int64_t i = 0; i < x->window; i++)
        x->slots[i].morsel = -1;
    for (int i = 0; i < x->n_tasks; i++) {
        x->tasks[i].x = x;
        x->tasks[i].morsel = -1;
        scratch_init(&x->tasks[i].sc);
    }
    marble_group_init(&x->g, x->o.sched, x->o.cancel);
    x->group_live = 1;
    pthread_mutex_lock(&x->mu);
    spawn_idle(x);
    pthread_mutex_unlock(&x->mu);
    return MARBLE_OK;
}

static void stream_stop(exec *x)
{
    if (x->group_live) {
        pthread_mutex_lock(&x->mu);
        x->stop = 1;
        pthread_mutex_unlock(&x->mu);
        marble_group_cancel(&x->g);
        marble_group_wait(&x->g, NULL);
        marble_group_destroy(&x->g);
        x->group_live = 0;
    }
    for (int64_t i = 0; x->slots && i < x->window; i++) {
        oslot *s = &x->slots[i];
        for (size_t k = s->qhead; k < s->qn; k++)
            marble_arrow_array_release(&s->q[k]);
        free(s->q);
    }
    free(x->slots);
    x->slots = NULL;
    for (int i = 0; x->tasks && i < x->n_tasks; i++) {
        wtask_close(&x->tasks[i]);
        scratch_free(&x->tasks[i].sc);
    }
    free(x->tasks);
    x->tasks = NULL;
    if (x->icursor) x->src.close(x->src.ud, x->icursor);
    x->icursor = NULL;
    x->icur_morsel = -1;
}

/* The next batch of the streaming part, before the tail (out->release NULL at the end). */
static int stream_pull(exec *x, struct ArrowArray *out, marble_error *err)
{
    memset(out, 0, sizeof *out);
    if (!x->parallel) {
        for (;;) {
            if (marble_cancel_token_is_cancelled(x->o.cancel))
                return marble_error_set(err, MARBLE_ERR_CANCELLED, "pipeline cancelled");
            if (x->icur_morsel < 0) {
                if (x->next_claim >= x->n) return MARBLE_OK;
                int64_t m = x->next_claim++;
                int orc = x->src.open(x->src.ud, m, &x->icursor, err);
                if (orc != MARBLE_OK) {
                    x->icursor = NULL;
                    return orc;
                }
                x->icur_morsel = m;
            }
            struct ArrowArray b;
            memset(&b, 0, sizeof b);
            int rc = x->src.next(x->src.ud, x->icursor, &b, err);
            if (rc == MARBLE_ERR_NOT_FOUND) {
                x->src.close(x->src.ud, x->icursor);
                x->icursor = NULL;
                x->icur_morsel = -1;
                morsel_done(x);
                continue;
            }
            if (rc != MARBLE_OK) return rc;
            if ((rc = check_batch(x->r.in, &b, x->icur_morsel, err)) != MARBLE_OK) {
                marble_arrow_array_release(&b);
                return rc;
            }
            const uint32_t *sel = NULL;
            int64_t n = b.length;
            rc = apply_ops(x->r.par, x->r.n_par, &b, &x->isc, &sel, &n, err);
            if (rc == MARBLE_OK) rc = materialize(x->r.par_out, &b, sel, n, out, err);
            marble_arrow_array_release(&b);
            if (rc != MARBLE_OK || out->release) return rc;
        }
    }
    pthread_mutex_lock(&x->mu);
    int rc = MARBLE_OK;
    for (;;) {
        if (x->scode) {
            rc = marble_error_set(err, x->scode, "%s", x->smsg);
            break;
        }
        if (x->head >= x->n) break;
        oslot *s = &x->slots[x->head % x->window];
        if (s->morsel == x->head && s->qhead < s->qn) {
            marble_arrow_array_move(&s->q[s->qhead++], out);
            break;
        }
        if (s->morsel == x->head && s->done) {
            x->head++;
            spawn_idle(x);
            continue;
        }
        spawn_idle(x);
        if (marble_cancel_token_is_cancelled(x->o.cancel)) {
            set_serr(x, MARBLE_ERR_CANCELLED, "pipeline cancelled");
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&x->cv, &x->mu, &ts);
    }
    pthread_mutex_unlock(&x->mu);
    return rc;
}

/* Applies the tail (limits and what follows them) to `b` (owned). *exhausted when no later row
 * can pass. */
static int apply_tail(exec *x, struct ArrowArray *b, struct ArrowArray *out, int *exhausted,
                      marble_error *err)
{
    const struct ArrowSchema *schema = x->r.par_out;
    const uint32_t *sel = NULL;
    int64_t n = b->length;
    int rc = MARBLE_OK;
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < x->r.n_tail && rc == MARBLE_OK && n > 0; i++) {
        op *o = x->r.tail[i];
        if (o->kind != OP_LIMIT) {
            rc = apply_ops(&x->r.tail[i], 1, b, &x->tsc, &sel, &n, err);
            schema = &o->out;
            continue;
        }
        struct ArrowArray m;
        if ((rc = materialize(schema, b, sel, n, &m, err)) != MARBLE_OK) return rc;
        sel = NULL;
        int64_t skip = o->rem_skip < n ? o->rem_skip : n;
        o->rem_skip -= skip;
        int64_t take = o->rem_take < n - skip ? o->rem_take : n - skip;
        o->rem_take -= take;
        if (o->rem_take == 0) *exhausted = 1;
        if (take == 0) {
            marble_arrow_array_release(&m);
            return MARBLE_OK;
        }
        if (take == n) {
            marble_arrow_array_move(&m, b);
            continue;
        }
        marble__shared *sh = marble__shared_new(&m);
        if (!sh) {
            marble_arrow_array_release(&m);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "limit: out of memory");
        }
        rc = marble__batch_slice(sh, skip, take, b, err);
        marble__shared_unref(sh);
        if (rc != MARBLE_OK) return rc;
        n = take;
    }
    if (rc != MARBLE_OK) return rc;
    return materialize(schema, b, sel, n, out, err);
}

static int stream_next(exec *x, struct ArrowArray *out, marble_error *err)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < x->r.n_tail; i++)
        if (x->r.tail[i]->kind == OP_LIMIT && x->r.tail[i]->rem_take == 0) x->ended = 1;
    for (;;) {
        if (x->ended) return MARBLE_OK;
        struct ArrowArray b;
        MARBLE_RETURN_NOT_OK(stream_pull(x, &b, err));
        if (!b.release) {
            x->ended = 1;
            return MARBLE_OK;
        }
        int exhausted = 0;
        int rc = apply_tail(x, &b, out, &exhausted, err);
        marble_arrow_array_release(&b);
        if (exhausted) {
            x->ended = 1;
            if (x->group_live) {
                pthread_mutex_lock(&x->mu);
                x->stop = 1;
                pthread_mutex_unlock(&x->mu);
                marble_group_cancel(&x->g);
            }
        }
        if (rc != MARBLE_OK || out->release) return rc;
    }
}

/* ---- the stream ------------------------------------------------------------------------------ */

static int replace_source(exec *x, const struct ArrowSchema *schema, struct ArrowArray *batches,
                          size_t nb, marble_error *err)
{
    if (x->src.release) x->src.release(x->src.ud);
    memset(&x->src, 0, sizeof x->src);
    x->first_run = 0;
    struct ArrowSchema s;
    int rc = marble_arrow_schema_copy(schema, &s, err);
    if (rc != MARBLE_OK) {
        for (size_t i = 0; i < nb; i++)
            marble_arrow_array_release(&batches[i]);
        free(batches);
        return rc;
    }
    rc = marble_source_from_batches(&s, batches, nb, &x->src, err);
    free(batches);
    x->src_schema = schema;
    return rc;
}

static int prepare(exec *x, marble_error *err)
{
    for (;;) {
        run r;
        size_t next = plan_run(x, &r);
        if (r.sink) {
            struct ArrowArray *batches = NULL;
            size_t nb = 0;
            MARBLE_RETURN_NOT_OK(run_blocking(x, &r, &batches, &nb, err));
            MARBLE_RETURN_NOT_OK(replace_source(x, &r.sink->out, batches, nb, err));
            x->next_op = next;
            continue;
        }
        x->r = r;
        MARBLE_RETURN_NOT_OK(stream_start(x, err));
        if (next == x->p->n_ops) return MARBLE_OK;
        /* a limit feeds a blocking operator: collect this run */
        struct ArrowArray *batches = NULL;
        size_t nb = 0, cap = 0;
        int rc = MARBLE_OK;
        for (;;) {
            struct ArrowArray b;
            if ((rc = stream_next(x, &b, err)) != MARBLE_OK || !b.release) break;
            if (nb == cap) {
                cap = cap ? cap * 2 : 16;
                struct ArrowArray *n2 = realloc(batches, cap * sizeof *n2);
                if (!n2) {
                    marble_arrow_array_release(&b);
                    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "pipeline: out of memory");
                    break;
                }
                batches = n2;
            }
            marble_arrow_array_move(&b, &batches[nb++]);
        }
        stream_stop(x);
        x->ended = 0;
        x->stop = 0;
        x->scode = 0;
        x->head = x->next_claim = 0;
        const struct ArrowSchema *s = &x->p->ops[next - 1]->out;
        if (rc != MARBLE_OK) {
            for (size_t i = 0; i < nb; i++)
                marble_arrow_array_release(&batches[i]);
            free(batches);
            return rc;
        }
        MARBLE_RETURN_NOT_OK(replace_source(x, s, batches, nb, err));
        x->next_op = next;
    }
}

static int es_get_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    exec *x = st->private_data;
    marble_error e;
    marble_error_clear(&e);
    int rc = marble_arrow_schema_copy(&x->out_schema, out, &e);
    if (rc != MARBLE_OK) {
        x->code = rc;
        snprintf(x->msg, sizeof x->msg, "%s", e.message);
    }
    return marble_error_to_errno(rc);
}

static int es_get_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    exec *x = st->private_data;
    memset(out, 0, sizeof *out);
    if (x->code) return marble_error_to_errno(x->code);
    marble_error e;
    marble_error_clear(&e);
    int rc = MARBLE_OK;
    if (!x->started) {
        x->started = 1;
        rc = prepare(x, &e);
    }
    if (rc == MARBLE_OK) rc = stream_next(x, out, &e);
    if (rc != MARBLE_OK) {
        x->code = rc;
        snprintf(x->msg, sizeof x->msg, "%s", e.message[0] ? e.message : marble_strerror(rc));
        stream_stop(x);
    }
    return marble_error_to_errno(rc);
}

static const char *es_last_error(struct ArrowArrayStream *st)
{
    exec *x = st->private_data;
    return x->code ? x->msg : NULL;
}

static void es_release(struct ArrowArrayStream *st)
{
    exec *x = st->private_data;
    if (!x) return;
    stream_stop(x);
    scratch_free(&x->isc);
    scratch_free(&x->tsc);
    if (x->src.release) x->src.release(x->src.ud);
    marble_pipeline_destroy(x->p);
    marble_arrow_schema_release(&x->out_schema);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    free(x);
    st->release = NULL;
    st->private_data = NULL;
}

int marble_pipeline_execute(marble_pipeline *p, const marble_exec_options *opts,
                            struct ArrowArrayStream *out, marble_error *err)
{
    if (!p || !out) {
        marble_pipeline_destroy(p);
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "pipeline execute: pipeline or out is NULL");
    }
    exec *x = calloc(1, sizeof *x);
    if (!x) {
        marble_pipeline_destroy(p);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "pipeline: out of memory");
    }
    if (opts) x->o = *opts;
    x->p = p;
    x->src = p->src;
    p->src.release = NULL;
    x->src_schema = &p->src_schema;
    x->first_run = 1;
    x->total_morsels = x->src.n_morsels;
    atomic_init(&x->done_morsels, 0);
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    scratch_init(&x->isc);
    scratch_init(&x->tsc);
    for (size_t i = 0; i < p->n_ops; i++) {
        p->ops[i]->rem_skip = p->ops[i]->offset;
        p->ops[i]->rem_take = p->ops[i]->limit;
    }
    memset(out, 0, sizeof *out);
    out->private_data = x;
    out->release = es_release;
    int rc = marble_arrow_schema_copy(cur_schema(p), &x->out_schema, err);
    if (rc != MARBLE_OK) {
        es_release(out);
        return rc;
    }
    out->get_schema = es_get_schema;
    out->get_next = es_get_next;
    out->get_last_error = es_last_error;
    return MARBLE_OK;
}

int marble_stream_last_code(struct ArrowArrayStream *stream)
{
    int code;
    if (marble__merge_stream_code(stream, &code)) return code;
    if (!stream || !stream->release || stream->get_next != es_get_next || !stream->private_data)
        return MARBLE_OK;
    return ((exec *)stream->private_data)->code;
}
