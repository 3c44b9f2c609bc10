/* Binding of expressions to a batch schema and their vectorized evaluation: each node computes a
 * dense vector over the selected rows with one tight loop per operator, kind and operand shape
 * (vector or literal), and predicates turn straight into selection vectors where they can
 * (column-vs-literal comparisons read the column's buffer directly; AND narrows the selection
 * step by step). Temporary vectors come from a per-thread pool that keeps its capacity. */
#include "arrow/arrow_internal.h"
#include "exec/exec_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 1000
#define SMALL_IN 16
#define POOL_KEEP_BYTES ((size_t)64 << 20)

typedef enum bop {
    B_COL,
    B_LIT,
    B_CAST, /* int64 -> double */
    B_NOT,
    B_NEG,
    B_ISNULL,
    B_NOTNULL,
    B_AND,
    B_OR,
    B_CMP,
    B_ARITH,
    B_IN
} bop;

/* A hash set of 64-bit keys (ints, or normalized double bits) for long IN lists. */
typedef struct hset {
    uint64_t *keys;
    uint8_t *used;
    uint64_t mask;
    int shift;
} hset;

/* An IN list: x matches an int literal exactly and a double literal as a double (as '=' does). */
typedef struct in_set {
    int64_t n_int, n_dbl, n_str;
    int has_null, has_true, has_false;
    int64_t *ints;     /* distinct, sorted */
    double *dbls;      /* no NaN */
    marble__str *strs; /* sorted, pointing into arena */
    char *arena;
    hset hi, hd; /* when the list is long */
} in_set;

typedef struct bnode {
    bop op;
    marble_expr_op xop;
    marble_datum_kind kind;
    int depth;
    struct bnode *a, *b;
    int col;
    int n_buffers;
    marble_arrow_type type;
    char *format;     /* COL */
    char *name;       /* COL */
    marble_datum lit; /* LIT: kind NULL for NULL (then `kind` is the adopted kind) */
    char *str;        /* LIT: owned copy of a string */
    int negated;      /* IN */
    in_set in;
    char *text; /* ARITH, NEG, COL of uint64: the expression for messages */
} bnode;

struct marble__bound {
    bnode *root;
};

/* ---- binding --------------------------------------------------------------------------------- */

static void in_free(in_set *s)
{
    free(s->ints);
    free(s->dbls);
    free(s->strs);
    free(s->arena);
    free(s->hi.keys);
    free(s->hi.used);
    free(s->hd.keys);
    free(s->hd.used);
}

static void node_free(bnode *n)
{
    if (!n) return;
    node_free(n->a);
    node_free(n->b);
    free(n->format);
    free(n->name);
    free(n->str);
    free(n->text);
    in_free(&n->in);
    free(n);
}

void marble__bound_free(marble__bound *b)
{
    if (!b) return;
    node_free(b->root);
    free(b);
}

static const char *kind_name(marble_datum_kind k)
{
    switch (k) {
    case MARBLE_DATUM_INT:
        return "int64";
    case MARBLE_DATUM_DOUBLE:
        return "float64";
    case MARBLE_DATUM_BOOL:
        return "bool";
    case MARBLE_DATUM_STRING:
        return "utf8";
    default:
        return "null";
    }
}

static const char *type_name(const bnode *n, char *buf, size_t cap)
{
    if (n->op == B_COL) return marble_arrow_type_name(&n->type, buf, cap);
    if (n->op == B_LIT && n->lit.kind == MARBLE_DATUM_NULL) return "null";
    return kind_name(n->kind);
}

static char *expr_text(const marble_expr *e)
{
    size_t need = marble_expr_to_string(e, NULL, 0);
    char *s = malloc(need + 1);
    if (s) marble_expr_to_string(e, s, need + 1);
    return s;
}

static int oom(marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory binding an expression");
}

static int mismatch(const marble_expr *e, const char *op, const bnode *a, const bnode *b,
                    marble_error *err)
{
    char text[120], ta[80], tb[80];
    marble_expr_to_string(e, text, sizeof text);
    if (b)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "cannot apply '%s' to %s and %s in %s", op,
                                type_name(a, ta, sizeof ta), type_name(b, tb, sizeof tb), text);
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "cannot apply '%s' to %s in %s", op,
                            type_name(a, ta, sizeof ta), text);
}

static int bind_column(bnode *n, const char *name, const struct ArrowSchema *schema,
                       marble_error *err)
{
    int found = -1;
    for (int64_t i = 0; i < schema->n_children; i++)
        if (schema->children[i]->name && strcmp(schema->children[i]->name, name) == 0) {
            found = (int)i;
            break;
        }
    if (found < 0) {
        char list[160];
        size_t len = 0;
        list[0] = 0;
        for (int64_t i = 0; i < schema->n_children && len < sizeof list; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                    marble__arrow_field_name(schema->children[i]));
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "unknown column '%s' (columns: %s)", name, list);
    }
    const struct ArrowSchema *f = schema->children[found];
    MARBLE_RETURN_NOT_OK(marble__arrow_schema_type(f, &n->type, err));
    n->op = B_COL;
    n->col = found;
    switch (n->type.id) {
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64:
    case MARBLE_ARROW_DATE32:
    case MARBLE_ARROW_TIMESTAMP:
        n->kind = MARBLE_DATUM_INT;
        break;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        n->kind = MARBLE_DATUM_DOUBLE;
        break;
    case MARBLE_ARROW_BOOL:
        n->kind = MARBLE_DATUM_BOOL;
        break;
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_BINARY:
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        n->kind = MARBLE_DATUM_STRING;
        break;
    default: {
        char tb[80];
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "column '%s' has type %s, which expressions do not support", name,
                                marble_arrow_type_name(&n->type, tb, sizeof tb));
    }
    }
    n->n_buffers = marble__arrow_layout_of(&n->type).n_buffers;
    n->format = strdup(f->format);
    n->name = strdup(name);
    if (!n->format || !n->name) return oom(err);
    return MARBLE_OK;
}

static int numeric(marble_datum_kind k)
{
    return k == MARBLE_DATUM_INT || k == MARBLE_DATUM_DOUBLE;
}

static int is_null_lit(const bnode *n)
{
    return n->op == B_LIT && n->lit.kind == MARBLE_DATUM_NULL;
}

/* Makes *slot a double: literals are converted, anything else gets a cast node. */
static int to_double(bnode **slot, marble_error *err)
{
    bnode *x = *slot;
    if (x->kind == MARBLE_DATUM_DOUBLE) return MARBLE_OK;
    if (x->op == B_LIT) {
        if (x->lit.kind == MARBLE_DATUM_INT) {
            x->lit.d = (double)x->lit.i;
            x->lit.kind = MARBLE_DATUM_DOUBLE;
        }
        x->kind = MARBLE_DATUM_DOUBLE;
        return MARBLE_OK;
    }
    bnode *c = calloc(1, sizeof *c);
    if (!c) return oom(err);
    c->op = B_CAST;
    c->kind = MARBLE_DATUM_DOUBLE;
    c->a = x;
    c->depth = x->depth + 1;
    *slot = c;
    return MARBLE_OK;
}

static int lit_cmp(const void *a, const void *b);
static int build_in_set(bnode *n, const marble_expr *e, marble_error *err);

static int bind_node(const marble_expr *e, const struct ArrowSchema *schema, int depth, bnode **out,
                     marble_error *err);

static int bind_binary(bnode *n, const marble_expr *e, marble_error *err)
{
    marble_expr_op op = marble_expr_get_op(e);
    const char *opt = marble__expr_op_text(op);
    int logic = op == MARBLE_OP_AND || op == MARBLE_OP_OR;
    int cmp = op >= MARBLE_OP_EQ && op <= MARBLE_OP_GE;
    n->xop = op;
    if (is_null_lit(n->a) && is_null_lit(n->b))
        n->a->kind = n->b->kind = logic ? MARBLE_DATUM_BOOL : MARBLE_DATUM_INT;
    else if (is_null_lit(n->a))
        n->a->kind = n->b->kind;
    else if (is_null_lit(n->b))
        n->b->kind = n->a->kind;
    marble_datum_kind ka = n->a->kind, kb = n->b->kind;
    if (logic) {
        if (ka != MARBLE_DATUM_BOOL || kb != MARBLE_DATUM_BOOL)
            return mismatch(e, opt, n->a, n->b, err);
        n->op = op == MARBLE_OP_AND ? B_AND : B_OR;
        n->kind = MARBLE_DATUM_BOOL;
        return MARBLE_OK;
    }
    if (numeric(ka) && numeric(kb)) {
        if (ka != kb) {
            MARBLE_RETURN_NOT_OK(to_double(&n->a, err));
            MARBLE_RETURN_NOT_OK(to_double(&n->b, err));
        }
    } else if (!cmp || ka != kb || (ka != MARBLE_DATUM_STRING && ka != MARBLE_DATUM_BOOL)) {
        return mismatch(e, opt, n->a, n->b, err);
    }
    int swap = n->a->op == B_LIT && n->b->op != B_LIT;
    if (cmp) {
        n->op = B_CMP;
        n->kind = MARBLE_DATUM_BOOL;
        if (swap) {
            static const marble_expr_op flip[] = {
                [MARBLE_OP_EQ] = MARBLE_OP_EQ, [MARBLE_OP_NE] = MARBLE_OP_NE,
                [MARBLE_OP_LT] = MARBLE_OP_GT, [MARBLE_OP_LE] = MARBLE_OP_GE,
                [MARBLE_OP_GT] = MARBLE_OP_LT, [MARBLE_OP_GE] = MARBLE_OP_LE};
            n->xop = flip[op];
        }
    } else {
        n->op = B_ARITH;
        n->kind = n->a->kind;
        swap = swap && (op == MARBLE_OP_ADD || op == MARBLE_OP_MUL);
        if (!(n->text = expr_text(e))) return oom(err);
    }
    if (swap) {
        bnode *t = n->a;
        n->a = n->b;
        n->b = t;
    }
    return MARBLE_OK;
}

static int bind_node(const marble_expr *e, const struct ArrowSchema *schema, int depth, bnode **out,
                     marble_error *err)
{
    *out = NULL;
    if (!e) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "expression is NULL");
    if (depth > MAX_DEPTH)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "expression nested more than %d levels deep",
                                MAX_DEPTH);
    bnode *n = calloc(1, sizeof *n);
    if (!n) return oom(err);
    *out = n;
    size_t nk = marble_expr_num_children(e);
    if (nk >= 1 && marble_expr_get_kind(e) != MARBLE_EXPR_IN)
        MARBLE_RETURN_NOT_OK(bind_node(marble_expr_child(e, 0), schema, depth + 1, &n->a, err));
    if (nk >= 2 && marble_expr_get_kind(e) == MARBLE_EXPR_BINARY)
        MARBLE_RETURN_NOT_OK(bind_node(marble_expr_child(e, 1), schema, depth + 1, &n->b, err));
    switch (marble_expr_get_kind(e)) {
    case MARBLE_EXPR_COLUMN:
        return bind_column(n, marble_expr_get_column(e), schema, err);
    case MARBLE_EXPR_LITERAL: {
        const marble_datum *d = marble_expr_get_literal(e);
        n->op = B_LIT;
        n->lit = *d;
        n->kind = d->kind;
        if (d->kind == MARBLE_DATUM_STRING) {
            if (!(n->str = malloc(d->n + 1))) return oom(err);
            if (d->n) memcpy(n->str, d->s, d->n);
            n->str[d->n] = 0;
            n->lit.s = n->str;
        }
        return MARBLE_OK;
    }
    case MARBLE_EXPR_UNARY: {
        marble_expr_op op = marble_expr_get_op(e);
        n->xop = op;
        n->depth = n->a->depth + 1;
        if (op == MARBLE_OP_IS_NULL || op == MARBLE_OP_IS_NOT_NULL) {
            if (is_null_lit(n->a)) n->a->kind = MARBLE_DATUM_BOOL;
            n->op = op == MARBLE_OP_IS_NULL ? B_ISNULL : B_NOTNULL;
            n->kind = MARBLE_DATUM_BOOL;
        } else if (op == MARBLE_OP_NOT) {
            if (is_null_lit(n->a)) n->a->kind = MARBLE_DATUM_BOOL;
            if (n->a->kind != MARBLE_DATUM_BOOL) return mismatch(e, "NOT", n->a, NULL, err);
            n->op = B_NOT;
            n->kind = MARBLE_DATUM_BOOL;
        } else {
            if (is_null_lit(n->a)) n->a->kind = MARBLE_DATUM_INT;
            if (!numeric(n->a->kind)) return mismatch(e, "-", n->a, NULL, err);
            n->op = B_NEG;
            n->kind = n->a->kind;
            if (!(n->text = expr_text(e))) return oom(err);
        }
        return MARBLE_OK;
    }
    case MARBLE_EXPR_BINARY:
        n->depth = (n->a->depth > n->b->depth ? n->a->depth : n->b->depth) + 1;
        return bind_binary(n, e, err);
    case MARBLE_EXPR_IN:
        MARBLE_RETURN_NOT_OK(bind_node(marble_expr_child(e, 0), schema, depth + 1, &n->a, err));
        n->op = B_IN;
        n->kind = MARBLE_DATUM_BOOL;
        n->negated = marble_expr_in_negated(e);
        n->depth = n->a->depth + 1;
        return build_in_set(n, e, err);
    }
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "bad expression node");
}

static int str_cmp(marble__str a, marble__str b)
{
    int64_t m = a.n < b.n ? a.n : b.n;
    int c = m ? memcmp(a.p, b.p, (size_t)m) : 0;
    if (c) return c;
    return (a.n > b.n) - (a.n < b.n);
}

static inline int str_eq(marble__str a, marble__str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, (size_t)a.n) == 0);
}

static int lit_cmp(const void *a, const void *b)
{
    return str_cmp(*(const marble__str *)a, *(const marble__str *)b);
}

static int i64_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t dbl_key(double d)
{
    uint64_t u;
    if (d == 0) d = 0.0;
    memcpy(&u, &d, 8);
    return u;
}

static inline uint64_t hash_slot(uint64_t key, int shift)
{
    return (key * 0x9E3779B97F4A7C15ull) >> shift;
}

static int build_hash(hset *s, const uint64_t *keys, int64_t n, marble_error *err)
{
    int bits = 4;
    while (((int64_t)1 << bits) < 2 * n)
        bits++;
    uint64_t size = (uint64_t)1 << bits;
    s->keys = calloc(size, 8);
    s->used = calloc(size, 1);
    if (!s->keys || !s->used) return oom(err);
    s->mask = size - 1;
    s->shift = 64 - bits;
    for (int64_t j = 0; j < n; j++) {
        uint64_t h = hash_slot(keys[j], s->shift);
        while (s->used[h] && s->keys[h] != keys[j])
            h = (h + 1) & s->mask;
        s->used[h] = 1;
        s->keys[h] = keys[j];
    }
    return MARBLE_OK;
}

static int build_in_set(bnode *n, const marble_expr *e, marble_error *err)
{
    size_t count = marble_expr_num_children(e) - 1;
    in_set *s = &n->in;
    marble_datum_kind k = is_null_lit(n->a) ? MARBLE_DATUM_NULL : n->a->kind;
    for (size_t j = 0; j < count && k == MARBLE_DATUM_NULL; j++)
        k = marble_expr_get_literal(marble_expr_child(e, j + 1))->kind;
    if (k == MARBLE_DATUM_NULL) k = MARBLE_DATUM_INT;
    if (is_null_lit(n->a)) n->a->kind = k;
    if (count) {
        s->ints = malloc(count * sizeof *s->ints);
        s->dbls = malloc(count * sizeof *s->dbls);
        s->strs = malloc(count * sizeof *s->strs);
        if (!s->ints || !s->dbls || !s->strs) return oom(err);
    }
    size_t bytes = 0;
    for (size_t j = 0; j < count; j++) {
        const marble_datum *d = marble_expr_get_literal(marble_expr_child(e, j + 1));
        if (d->kind == MARBLE_DATUM_NULL) {
            s->has_null = 1;
            continue;
        }
        if (d->kind != k && !(numeric(k) && numeric(d->kind))) {
            bnode tmp = {.op = B_LIT, .lit = *d, .kind = d->kind};
            return mismatch(e, n->negated ? "NOT IN" : "IN", n->a, &tmp, err);
        }
        if (k == MARBLE_DATUM_BOOL) {
            if (d->i)
                s->has_true = 1;
            else
                s->has_false = 1;
        } else if (k == MARBLE_DATUM_STRING) {
            s->strs[s->n_str++] = (marble__str){d->s, (int64_t)d->n};
            bytes += d->n;
        } else if (d->kind == MARBLE_DATUM_INT && k == MARBLE_DATUM_INT) {
            s->ints[s->n_int++] = d->i;
        } else {
            double v = d->kind == MARBLE_DATUM_INT ? (double)d->i : d->d;
            if (!isnan(v)) s->dbls[s->n_dbl++] = v;
        }
    }
    if (s->n_str) {
        if (!(s->arena = malloc(bytes + 1))) return oom(err);
        size_t pos = 0;
        for (int64_t j = 0; j < s->n_str; j++) {
            if (s->strs[j].n) memcpy(s->arena + pos, s->strs[j].p, (size_t)s->strs[j].n);
            s->strs[j].p = s->arena + pos;
            pos += (size_t)s->strs[j].n;
        }
        qsort(s->strs, (size_t)s->n_str, sizeof *s->strs, lit_cmp);
    }
    if (s->n_int) {
        qsort(s->ints, (size_t)s->n_int, 8, i64_cmp);
        int64_t u = 0;
        for (int64_t j = 0; j < s->n_int; j++)
            if (u == 0 || s->ints[u - 1] != s->ints[j]) s->ints[u++] = s->ints[j];
        s->n_int = u;
        if (s->n_int > SMALL_IN)
            MARBLE_RETURN_NOT_OK(build_hash(&s->hi, (const uint64_t *)s->ints, s->n_int, err));
    }
    if (s->n_dbl > SMALL_IN) {
        uint64_t *keys = malloc((size_t)s->n_dbl * 8);
        if (!keys) return oom(err);
        for (int64_t j = 0; j < s->n_dbl; j++)
            keys[j] = dbl_key(s->dbls[j]);
        int rc = build_hash(&s->hd, keys, s->n_dbl, err);
        free(keys);
        return rc;
    }
    return MARBLE_OK;
}

int marble__expr_bind(const marble_expr *e, const struct ArrowSchema *schema, marble__bound **out,
                      marble_error *err)
{
    *out = NULL;
    if (!schema || !schema->format || strcmp(schema->format, "+s") != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "expressions bind to a struct (\"+s\") schema");
    marble__bound *b = calloc(1, sizeof *b);
    if (!b) return oom(err);
    int rc = bind_node(e, schema, 0, &b->root, err);
    if (rc == MARBLE_OK && is_null_lit(b->root)) b->root->kind = MARBLE_DATUM_INT;
    if (rc != MARBLE_OK) {
        marble__bound_free(b);
        return rc;
    }
    *out = b;
    return MARBLE_OK;
}

marble_datum_kind marble__bound_kind(const marble__bound *b)
{
    return b->root->kind;
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

const char *marble__bound_format(const marble__bound *b)
{
    return b->root->op == B_COL ? b->root->format : kind_format(b->root->kind);
}

int marble__bound_column(const marble__bound *b)
{
    return b->root->op == B_COL ? b->root->col : -1;
}

/* ---- per-thread scratch ---------------------------------------------------------------------- */

typedef struct scratch {
    marble__vec **v;
    int cap, top;
    uint8_t *ones;
    int64_t ones_n;
} scratch;

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_key_ok;

static void scratch_free(void *p)
{
    scratch *s = p;
    for (int i = 0; i < s->cap; i++) {
        marble__vec_free(s->v[i]);
        free(s->v[i]);
    }
    free(s->v);
    free(s->ones);
    free(s);
}

static void make_key(void)
{
    g_key_ok = pthread_key_create(&g_key, scratch_free) == 0;
}

static scratch *scratch_get(void)
{
    pthread_once(&g_once, make_key);
    if (!g_key_ok) return NULL;
    scratch *s = pthread_getspecific(g_key);
    if (s) return s;
    s = calloc(1, sizeof *s);
    if (s && pthread_setspecific(g_key, s) != 0) {
        free(s);
        s = NULL;
    }
    return s;
}

/* Frees the pooled vectors' storage when it adds up to much memory (after a huge batch). */
static void scratch_trim(scratch *s)
{
    size_t total = 0;
    for (int i = 0; i < s->cap; i++)
        total += s->v[i] ? s->v[i]->mem_cap : 0;
    if (total <= POOL_KEEP_BYTES) return;
    for (int i = 0; i < s->cap; i++)
        marble__vec_free(s->v[i]);
    free(s->ones);
    s->ones = NULL;
    s->ones_n = 0;
}

typedef struct ctx {
    const struct ArrowArray *batch;
    scratch *sc;
    marble_error *err;
} ctx;

static marble__vec *tmp_get(ctx *c)
{
    scratch *s = c->sc;
    if (s->top == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        marble__vec **v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) goto fail;
        memset(v + s->cap, 0, (size_t)(cap - s->cap) * sizeof *v);
        s->v = v;
        s->cap = cap;
    }
    if (!s->v[s->top]) {
        if (!(s->v[s->top] = malloc(sizeof(marble__vec)))) goto fail;
        marble__vec_init(s->v[s->top]);
    }
    return s->v[s->top++];
fail:
    marble_error_set(c->err, MARBLE_ERR_NO_MEMORY, "out of memory for expression scratch");
    return NULL;
}

static void tmp_put(ctx *c)
{
    c->sc->top--;
}

static const uint8_t *ones(ctx *c, int64_t n)
{
    scratch *s = c->sc;
    if (s->ones_n < n) {
        uint8_t *p = malloc((size_t)n);
        if (!p) return NULL;
        memset(p, 1, (size_t)n);
        free(s->ones);
        s->ones = p;
        s->ones_n = n;
    }
    return s->ones;
}

/* ---- columns --------------------------------------------------------------------------------- */

typedef struct colv {
    int64_t off;
    const uint8_t *bits; /* NULL: no nulls */
    int all_null;
    const void *values;
    const uint8_t *data;
} colv;

static int col_open(ctx *c, const bnode *nd, colv *cv)
{
    const struct ArrowArray *batch = c->batch;
    const struct ArrowArray *a =
        nd->col < batch->n_children && batch->children ? batch->children[nd->col] : NULL;
    if (!a || a->n_buffers != nd->n_buffers || !a->buffers)
        return marble_error_set(c->err, MARBLE_ERR_INVALID_ARGUMENT,
                                "column '%s': the batch's array does not match its type %s",
                                nd->name, nd->format);
    if (a->length < batch->offset + batch->length)
        return marble_error_set(c->err, MARBLE_ERR_INVALID_ARGUMENT,
                                "column '%s' has %lld rows, the batch %lld", nd->name,
                                (long long)a->length, (long long)(batch->offset + batch->length));
    cv->off = a->offset + batch->offset;
    cv->bits = NULL;
    cv->all_null = 0;
    if (a->null_count != 0) {
        cv->bits = a->buffers[0];
        cv->all_null = !cv->bits && a->null_count > 0;
        if (cv->all_null && a->null_count != a->length)
            return marble_error_set(c->err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "column '%s' has %lld nulls but no validity bitmap", nd->name,
                                    (long long)a->null_count);
    }
    cv->values = a->buffers[1];
    cv->data = nd->n_buffers == 3 && a->buffers[2] ? a->buffers[2] : (const uint8_t *)"";
    if (!cv->values && batch->length > 0)
        return marble_error_set(c->err, MARBLE_ERR_INVALID_ARGUMENT,
                                "column '%s': values buffer missing", nd->name);
    return MARBLE_OK;
}

static void gather_valid(const colv *cv, const uint32_t *sel, int64_t n, marble__vec *out)
{
    if (!cv->bits && !cv->all_null) return;
    uint8_t *v = marble__vec_valid(out);
    if (cv->all_null) {
        memset(v, 0, (size_t)n);
        return;
    }
    const uint8_t *bits = cv->bits;
    int64_t o = cv->off;
    if (sel)
        for (int64_t k = 0; k < n; k++)
            v[k] = (uint8_t)marble__arrow_bit_get(bits, o + sel[k]);
    else
        for (int64_t k = 0; k < n; k++)
            v[k] = (uint8_t)marble__arrow_bit_get(bits, o + k);
}

#define GATHER(DST, T)                                                                             \
    do {                                                                                           \
        const T *x_ = (const T *)cv.values + cv.off;                                               \
        if (sel)                                                                                   \
            for (int64_t k = 0; k < n; k++)                                                        \
                DST[k] = x_[sel[k]];                                                               \
        else                                                                                       \
            for (int64_t k = 0; k < n; k++)                                                        \
                DST[k] = x_[k];                                                                    \
    } while (0)

#define GATHER_STR(OT)                                                                             \
    do {                                                                                           \
        const OT *o_ = (const OT *)cv.values + cv.off;                                             \
        for (int64_t k = 0; k < n; k++) {                                                          \
            int64_t r_ = sel ? sel[k] : k;                                                         \
            out->s[k].p = (const char *)cv.data + o_[r_];                                          \
            out->s[k].n = (int64_t)(o_[r_ + 1] - o_[r_]);                                          \
        }                                                                                          \
    } while (0)

static int eval_col(ctx *c, const bnode *nd, const uint32_t *sel, int64_t n, marble__vec *out)
{
    colv cv;
    MARBLE_RETURN_NOT_OK(col_open(c, nd, &cv));
    MARBLE_RETURN_NOT_OK(marble__vec_reset(out, nd->kind, n, c->err));
    gather_valid(&cv, sel, n, out);
    switch (nd->type.id) {
    case MARBLE_ARROW_INT8:
        GATHER(out->i, int8_t);
        break;
    case MARBLE_ARROW_INT16:
        GATHER(out->i, int16_t);
        break;
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_DATE32:
        GATHER(out->i, int32_t);
        break;
    case MARBLE_ARROW_UINT8:
        GATHER(out->i, uint8_t);
        break;
    case MARBLE_ARROW_UINT16:
        GATHER(out->i, uint16_t);
        break;
    case MARBLE_ARROW_UINT32:
        GATHER(out->i, uint32_t);
        break;
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_TIMESTAMP:
        if (sel)
            GATHER(out->i, int64_t);
        else
            out->i = (int64_t *)((const int64_t *)cv.values + cv.off);
        break;
    case MARBLE_ARROW_UINT64: {
        GATHER(out->i, int64_t);
        const uint8_t *v = out->valid ? out->valid : ones(c, n);
        if (!v) return marble_error_set(c->err, MARBLE_ERR_NO_MEMORY, "out of memory");
        uint64_t bad = 0;
        for (int64_t k = 0; k < n; k++)
            bad |= ((uint64_t)out->i[k] >> 63) & v[k];
        if (bad)
            for (int64_t k = 0; k < n; k++)
                if (out->i[k] < 0 && v[k])
                    return marble_error_set(c->err, MARBLE_ERR_LIMIT,
                                            "column '%s': uint64 value %llu is out of int64 range",
                                            nd->name, (unsigned long long)(uint64_t)out->i[k]);
        break;
    }
    case MARBLE_ARROW_FLOAT32:
        GATHER(out->d, float);
        break;
    case MARBLE_ARROW_FLOAT64:
        if (sel)
            GATHER(out->d, double);
        else
            out->d = (double *)((const double *)cv.values + cv.off);
        break;
    case MARBLE_ARROW_BOOL: {
        const uint8_t *bits = cv.values;
        int64_t o = cv.off;
        if (sel)
            for (int64_t k = 0; k < n; k++)
                out->b[k] = (uint8_t)marble__arrow_bit_get(bits, o + sel[k]);
        else
            for (int64_t k = 0; k < n; k++)
                out->b[k] = (uint8_t)marble__arrow_bit_get(bits, o + k);
        break;
    }
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_BINARY:
        GATHER_STR(int32_t);
        break;
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_LARGE_BINARY:
        GATHER_STR(int64_t);
        break;
    default: {
        int64_t w = nd->type.byte_width;
        const char *base = (const char *)cv.values + cv.off * w;
        for (int64_t k = 0; k < n; k++) {
            out->s[k].p = base + (sel ? sel[k] : k) * w;
            out->s[k].n = w;
        }
        break;
    }
    }
    return MARBLE_OK;
}

/* ---- evaluation ------------------------------------------------------------------------------ */

static int eval_node(ctx *c, const bnode *nd, const uint32_t *sel, int64_t n, marble__vec *out);

static size_t value_width(marble_datum_kind k)
{
    return k == MARBLE_DATUM_STRING ? sizeof(marble__str) : k == MARBLE_DATUM_BOOL ? 1 : 8;
}

static void set_all_null(marble__vec *out, int64_t n)
{
    memset(out->mem, 0, (size_t)n * value_width(out->kind));
    memset(marble__vec_valid(out), 0, (size_t)n);
}

static int eval_lit(ctx *c, const bnode *nd, int64_t n, marble__vec *out)
{
    MARBLE_RETURN_NOT_OK(marble__vec_reset(out, nd->kind, n, c->err));
    if (nd->lit.kind == MARBLE_DATUM_NULL) {
        set_all_null(out, n);
        return MARBLE_OK;
    }
    switch (nd->kind) {
    case MARBLE_DATUM_INT:
        for (int64_t k = 0; k < n; k++)
            out->i[k] = nd->lit.i;
        break;
    case MARBLE_DATUM_DOUBLE:
        for (int64_t k = 0; k < n; k++)
            out->d[k] = nd->lit.d;
        break;
    case MARBLE_DATUM_BOOL:
        memset(out->b, nd->lit.i ? 1 : 0, (size_t)n);
        break;
    default:
        for (int64_t k = 0; k < n; k++)
            out->s[k] = (marble__str){nd->lit.s, (int64_t)nd->lit.n};
        break;
    }
    return MARBLE_OK;
}

static int copy_valid(marble__vec *out, const uint8_t *v, int64_t n)
{
    if (v) memcpy(marble__vec_valid(out), v, (size_t)n);
    return MARBLE_OK;
}

static int and_valid(ctx *c, marble__vec *out, const uint8_t *va, const uint8_t *vb, int64_t n)
{
    if (!va && !vb) return MARBLE_OK;
    uint8_t *v = marble__vec_valid(out);
    if (!vb)
        memcpy(v, va, (size_t)n);
    else if (!va)
        memcpy(v, vb, (size_t)n);
    else
        for (int64_t k = 0; k < n; k++)
            v[k] = va[k] & vb[k];
    return MARBLE_OK;
}

static int overflow(ctx *c, const bnode *nd)
{
    return marble_error_set(c->err, MARBLE_ERR_LIMIT, "integer overflow in %s", nd->text);
}

#define CMP_CASES(OPC, LOOP)                                                                       \
    switch (OPC) {                                                                                 \
    case MARBLE_OP_EQ:                                                                             \
        LOOP(==);                                                                                  \
        break;                                                                                     \
    case MARBLE_OP_NE:                                                                             \
        LOOP(!=);                                                                                  \
        break;                                                                                     \
    case MARBLE_OP_LT:                                                                             \
        LOOP(<);                                                                                   \
        break;                                                                                     \
    case MARBLE_OP_LE:                                                                             \
        LOOP(<=);                                                                                  \
        break;                                                                                     \
    case MARBLE_OP_GT:                                                                             \
        LOOP(>);                                                                                   \
        break;                                                                                     \
    default:                                                                                       \
        LOOP(>=);                                                                                  \
        break;                                                                                     \
    }

#define VV(OP)                                                                                     \
    for (int64_t k = 0; k < n; k++)                                                                \
    r[k] = x[k] OP y[k]
#define VS(OP)                                                                                     \
    for (int64_t k = 0; k < n; k++)                                                                \
    r[k] = x[k] OP s
#define SVV(OP)                                                                                    \
    for (int64_t k = 0; k < n; k++)                                                                \
    r[k] = str_cmp(x[k], y[k]) OP 0
#define SVS(OP)                                                                                    \
    for (int64_t k = 0; k < n; k++)                                                                \
    r[k] = str_cmp(x[k], s) OP 0

/* Compares ta with tb (or with the literal `lit` when tb is NULL) into out->b. */
static void cmp_kernel(const bnode *nd, const marble__vec *ta, const marble__vec *tb,
                       const bnode *lit, int64_t n, marble__vec *out)
{
    uint8_t *r = out->b;
    switch (ta->kind) {
    case MARBLE_DATUM_INT: {
        const int64_t *x = ta->i;
        if (tb) {
            const int64_t *y = tb->i;
            CMP_CASES(nd->xop, VV);
        } else {
            int64_t s = lit->lit.i;
            CMP_CASES(nd->xop, VS);
        }
        break;
    }
    case MARBLE_DATUM_DOUBLE: {
        const double *x = ta->d;
        if (tb) {
            const double *y = tb->d;
            CMP_CASES(nd->xop, VV);
        } else {
            double s = lit->lit.d;
            CMP_CASES(nd->xop, VS);
        }
        break;
    }
    case MARBLE_DATUM_BOOL: {
        const uint8_t *x = ta->b;
        if (tb) {
            const uint8_t *y = tb->b;
            CMP_CASES(nd->xop, VV);
        } else {
            uint8_t s = lit->lit.i != 0;
            CMP_CASES(nd->xop, VS);
        }
        break;
    }
    default: {
        const marble__str *x = ta->s;
        if (nd->xop == MARBLE_OP_EQ || nd->xop == MARBLE_OP_NE) {
            uint8_t ne = nd->xop == MARBLE_OP_NE;
            marble__str s = {lit ? lit->lit.s : NULL, lit ? (int64_t)lit->lit.n : 0};
            if (tb)
                for (int64_t k = 0; k < n; k++)
                    r[k] = (uint8_t)(str_eq(x[k], tb->s[k]) ^ ne);
            else
                for (int64_t k = 0; k < n; k++)
                    r[k] = (uint8_t)(str_eq(x[k], s) ^ ne);
            break;
        }
        if (tb) {
            const marble__str *y = tb->s;
            CMP_CASES(nd->xop, SVV);
        } else {
            marble__str s = {lit->lit.s, (int64_t)lit->lit.n};
            CMP_CASES(nd->xop, SVS);
        }
        break;
    }
    }
}

#define OVF_LOOP(FN, YV)                                                                           \
    do {                                                                                           \
        if (v)                                                                                     \
            for (int64_t k = 0; k < n; k++)                                                        \
                ovf |= FN(x[k], YV, &r[k]) & v[k];                                                 \
        else                                                                                       \
            for (int64_t k = 0; k < n; k++)                                                        \
                ovf |= FN(x[k], YV, &r[k]);                                                        \
    } while (0)

#define TWO53 ((int64_t)1 << 53)

/* 1 if every x[k] is in (-2^53, 2^53). */
static int small53(const int64_t *x, int64_t n)
{
    uint64_t bad = 0;
    for (int64_t k = 0; k < n; k++)
        bad |= ((uint64_t)x[k] + (uint64_t)TWO53 - 1) > (uint64_t)TWO53 * 2 - 2;
    return bad == 0;
}

/* r = -x (wrapping); returns whether a valid x was INT64_MIN. */
static int negate(const int64_t *x, int64_t *r, const uint8_t *v, int64_t n)
{
    int ovf = 0;
    for (int64_t k = 0; k < n; k++)
        r[k] = (int64_t)(0 - (uint64_t)x[k]);
    if (v)
        for (int64_t k = 0; k < n; k++)
            ovf |= (x[k] == INT64_MIN) & v[k];
    else
        for (int64_t k = 0; k < n; k++)
            ovf |= x[k] == INT64_MIN;
    return ovf;
}

static int arith_int(ctx *c, const bnode *nd, const int64_t *x, const int64_t *y, int64_t s,
                     int64_t n, marble__vec *out)
{
    int64_t *r = out->i;
    int ovf = 0;
    if (nd->xop == MARBLE_OP_ADD || nd->xop == MARBLE_OP_SUB || nd->xop == MARBLE_OP_MUL) {
        const uint8_t *v = out->valid;
        if (nd->xop == MARBLE_OP_ADD) {
            if (y)
                OVF_LOOP(__builtin_add_overflow, y[k]);
            else
                OVF_LOOP(__builtin_add_overflow, s);
        } else if (nd->xop == MARBLE_OP_SUB) {
            if (y)
                OVF_LOOP(__builtin_sub_overflow, y[k]);
            else
                OVF_LOOP(__builtin_sub_overflow, s);
        } else {
            if (y)
                OVF_LOOP(__builtin_mul_overflow, y[k]);
            else
                OVF_LOOP(__builtin_mul_overflow, s);
        }
        return ovf ? overflow(c, nd) : MARBLE_OK;
    }
    int div = nd->xop == MARBLE_OP_DIV;
    if (!y) {
        if (s == 0) {
            set_all_null(out, n);
        } else if (s == -1) {
            if (div)
                ovf = negate(x, r, out->valid, n);
            else
                memset(r, 0, (size_t)n * 8);
        } else if (small53(x, n) && s > -TWO53 && s < TWO53) {
            /* |x| < 2^53: the double quotient truncates to the exact integer one (its rounding
             * error is below the quotient's distance to the next integer); a double division is
             * several times faster than a 64-bit integer one on many CPUs */
            double ds = (double)s;
            if (div)
                for (int64_t k = 0; k < n; k++)
                    r[k] = (int64_t)((double)x[k] / ds);
            else
                for (int64_t k = 0; k < n; k++)
                    r[k] = x[k] - (int64_t)((double)x[k] / ds) * s;
        } else if (div) {
            for (int64_t k = 0; k < n; k++)
                r[k] = x[k] / s;
        } else {
            for (int64_t k = 0; k < n; k++)
                r[k] = x[k] % s;
        }
        return ovf ? overflow(c, nd) : MARBLE_OK;
    }
    uint8_t *v = out->valid;
    if (!v) memset(v = marble__vec_valid(out), 1, (size_t)n);
    for (int64_t k = 0; k < n; k++) {
        int64_t d = y[k];
        int z = d == 0, m1 = d == -1;
        int64_t dd = (z | m1) ? 1 : d;
        v[k] &= (uint8_t)!z;
        if (div) {
            ovf |= (x[k] == INT64_MIN) & m1 & v[k];
            r[k] = m1 ? (int64_t)(0 - (uint64_t)x[k]) : x[k] / dd;
        } else {
            r[k] = x[k] % dd;
        }
    }
    return ovf ? overflow(c, nd) : MARBLE_OK;
}

#define AVV(OP)                                                                                    \
    for (int64_t k = 0; k < n; k++)                                                                \
    r[k] = x[k] OP y[k]
#define AVS(OP)                                                                                    \
    for (int64_t k = 0; k < n; k++)                                                                \
    r[k] = x[k] OP s

static void arith_dbl(const bnode *nd, const double *x, const double *y, double s, int64_t n,
                      marble__vec *out)
{
    double *r = out->d;
    switch (nd->xop) {
    case MARBLE_OP_ADD:
        if (y)
            AVV(+);
        else
            AVS(+);
        break;
    case MARBLE_OP_SUB:
        if (y)
            AVV(-);
        else
            AVS(-);
        break;
    case MARBLE_OP_MUL:
        if (y)
            AVV(*);
        else
            AVS(*);
        break;
    case MARBLE_OP_DIV:
        if (y)
            AVV(/);
        else
            AVS(/);
        break;
    default: {
        if (!y && s == 0) {
            set_all_null(out, n);
            break;
        }
        if (!y) {
            for (int64_t k = 0; k < n; k++)
                r[k] = fmod(x[k], s);
            break;
        }
        uint8_t *v = out->valid;
        if (!v) memset(v = marble__vec_valid(out), 1, (size_t)n);
        for (int64_t k = 0; k < n; k++) {
            int z = y[k] == 0;
            v[k] &= (uint8_t)!z;
            r[k] = z ? 0 : fmod(x[k], y[k]);
        }
    }
    }
}

/* Evaluates a child into a pooled vector; the caller calls tmp_put when done. */
static int eval_tmp(ctx *c, const bnode *nd, const uint32_t *sel, int64_t n, marble__vec **out)
{
    if (!(*out = tmp_get(c))) return MARBLE_ERR_NO_MEMORY;
    int rc = eval_node(c, nd, sel, n, *out);
    if (rc != MARBLE_OK) tmp_put(c);
    return rc;
}

static int eval_binary(ctx *c, const bnode *nd, const uint32_t *sel, int64_t n, marble__vec *out)
{
    marble__vec *ta, *tb = NULL;
    int scalar = nd->b->op == B_LIT;
    MARBLE_RETURN_NOT_OK(eval_tmp(c, nd->a, sel, n, &ta));
    int rc = MARBLE_OK;
    if (!scalar && (rc = eval_tmp(c, nd->b, sel, n, &tb)) != MARBLE_OK) goto done;
    if ((rc = marble__vec_reset(out, nd->kind, n, c->err)) != MARBLE_OK) goto done;
    if (scalar && nd->b->lit.kind == MARBLE_DATUM_NULL) {
        set_all_null(out, n);
        goto done;
    }
    and_valid(c, out, ta->valid, tb ? tb->valid : NULL, n);
    if (nd->op == B_CMP)
        cmp_kernel(nd, ta, tb, nd->b, n, out);
    else if (nd->kind == MARBLE_DATUM_INT)
        rc = arith_int(c, nd, ta->i, tb ? tb->i : NULL, nd->b->lit.i, n, out);
    else
        arith_dbl(nd, ta->d, tb ? tb->d : NULL, nd->b->lit.d, n, out);
done:
    if (tb) tmp_put(c);
    tmp_put(c);
    return rc;
}

/* AND / OR in place: the deeper operand is evaluated into out, the other into a temporary, so
 * long chains need few temporaries. */
static int eval_logic(ctx *c, const bnode *nd, const uint32_t *sel, int64_t n, marble__vec *out)
{
    const bnode *first = nd->a->depth >= nd->b->depth ? nd->a : nd->b;
    const bnode *second = first == nd->a ? nd->b : nd->a;
    MARBLE_RETURN_NOT_OK(eval_node(c, first, sel, n, out));
    marble__vec *t;
    MARBLE_RETURN_NOT_OK(eval_tmp(c, second, sel, n, &t));
    uint8_t *x = out->b;
    const uint8_t *y = t->b;
    int and = nd->op == B_AND;
    if (!out->valid && !t->valid) {
        if (and)
            for (int64_t k = 0; k < n; k++)
                x[k] &= y[k];
        else
            for (int64_t k = 0; k < n; k++)
                x[k] |= y[k];
    } else {
        const uint8_t *vy = t->valid ? t->valid : ones(c, n);
        uint8_t *vx = out->valid;
        if (!vy) {
            tmp_put(c);
            return marble_error_set(c->err, MARBLE_ERR_NO_MEMORY, "out of memory");
        }
        if (!vx) memset(vx = marble__vec_valid(out), 1, (size_t)n);
        if (and)
            for (int64_t k = 0; k < n; k++) {
                uint8_t X = x[k], Y = y[k], VX = vx[k], VY = vy[k];
                vx[k] = (uint8_t)((VX & !X) | (VY & !Y) | (VX & VY));
                x[k] = X & Y;
            }
        else
            for (int64_t k = 0; k < n; k++) {
                uint8_t X = x[k], Y = y[k], VX = vx[k], VY = vy[k];
                vx[k] = (uint8_t)((VX & X) | (VY & Y) | (VX & VY));
                x[k] = X | Y;
            }
    }
    tmp_put(c);
    return MARBLE_OK;
}

static int hset_has(const hset *h, uint64_t key)
{
    uint64_t i = hash_slot(key, h->shift);
    while (h->used[i]) {
        if (h->keys[i] == key) return 1;
        i = (i + 1) & h->mask;
    }
    return 0;
}

static int in_match_dbl(const in_set *s, double x)
{
    if (s->hd.keys) return !isnan(x) && hset_has(&s->hd, dbl_key(x));
    int m = 0;
    for (int64_t j = 0; j < s->n_dbl; j++)
        m |= s->dbls[j] == x;
    return m;
}

static int in_match_int(const in_set *s, int64_t x)
{
    int m = 0;
    if (s->hi.keys)
        m = hset_has(&s->hi, (uint64_t)x);
    else
        for (int64_t j = 0; j < s->n_int; j++)
            m |= s->ints[j] == x;
    return m | (s->n_dbl && in_match_dbl(s, (double)x));
}

static int in_match_str(const in_set *s, marble__str x)
{
    int64_t lo = 0, hi = s->n_str;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int cmp = str_cmp(s->strs[mid], x);
        if (cmp == 0) return 1;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int eval_in(ctx *c, const bnode *nd, const uint32_t *sel, int64_t n, marble__vec *out)
{
    marble__vec *t;
    MARBLE_RETURN_NOT_OK(eval_tmp(c, nd->a, sel, n, &t));
    int rc = marble__vec_reset(out, MARBLE_DATUM_BOOL, n, c->err);
    if (rc != MARBLE_OK) goto done;
    const in_set *s = &nd->in;
    uint8_t *r = out->b;
    switch (t->kind) {
    case MARBLE_DATUM_INT:
        if (!s->hi.keys && !s->n_dbl) {
            const int64_t *x = t->i;
            memset(r, 0, (size_t)n);
            for (int64_t j = 0; j < s->n_int; j++) {
                int64_t lit = s->ints[j];
                for (int64_t k = 0; k < n; k++)
                    r[k] |= x[k] == lit;
            }
        } else {
            for (int64_t k = 0; k < n; k++)
                r[k] = (uint8_t)in_match_int(s, t->i[k]);
        }
        break;
    case MARBLE_DATUM_DOUBLE:
        for (int64_t k = 0; k < n; k++)
            r[k] = (uint8_t)in_match_dbl(s, t->d[k]);
        break;
    case MARBLE_DATUM_BOOL:
        for (int64_t k = 0; k < n; k++)
            r[k] = (uint8_t)(t->b[k] ? s->has_true : s->has_false);
        break;
    default:
        for (int64_t k = 0; k < n; k++)
            r[k] = (uint8_t)in_match_str(s, t->s[k]);
        break;
    }
    if (s->has_null) {
        uint8_t *v = marble__vec_valid(out);
        if (t->valid)
            for (int64_t k = 0; k < n; k++)
                v[k] = t->valid[k] & r[k];
        else
            memcpy(v, r, (size_t)n);
    } else {
        copy_valid(out, t->valid, n);
    }
    if (nd->negated)
        for (int64_t k = 0; k < n; k++)
            r[k] ^= 1;
done:
    tmp_put(c);
    return rc;
}

static int eval_unary(ctx *c, const bnode *nd, const uint32_t *sel, int64_t n, marble__vec *out)
{
    if (nd->op == B_NOT) {
        MARBLE_RETURN_NOT_OK(eval_node(c, nd->a, sel, n, out));
        for (int64_t k = 0; k < n; k++)
            out->b[k] ^= 1;
        return MARBLE_OK;
    }
    if ((nd->op == B_ISNULL || nd->op == B_NOTNULL) && nd->a->op == B_COL) {
        colv cv;
        MARBLE_RETURN_NOT_OK(col_open(c, nd->a, &cv));
        MARBLE_RETURN_NOT_OK(marble__vec_reset(out, MARBLE_DATUM_BOOL, n, c->err));
        uint8_t want = nd->op == B_NOTNULL;
        if (cv.all_null || !cv.bits) {
            memset(out->b, cv.all_null ? !want : want, (size_t)n);
            return MARBLE_OK;
        }
        for (int64_t k = 0; k < n; k++)
            out->b[k] =
                (uint8_t)(marble__arrow_bit_get(cv.bits, cv.off + (sel ? sel[k] : k)) ^ !want);
        return MARBLE_OK;
    }
    marble__vec *t;
    MARBLE_RETURN_NOT_OK(eval_tmp(c, nd->a, sel, n, &t));
    int rc = marble__vec_reset(out, nd->kind, n, c->err);
    if (rc != MARBLE_OK) goto done;
    if (nd->op == B_ISNULL || nd->op == B_NOTNULL) {
        uint8_t want = nd->op == B_NOTNULL;
        if (!t->valid)
            memset(out->b, want, (size_t)n);
        else
            for (int64_t k = 0; k < n; k++)
                out->b[k] = t->valid[k] ^ !want;
        goto done;
    }
    copy_valid(out, t->valid, n);
    if (nd->op == B_CAST) {
        for (int64_t k = 0; k < n; k++)
            out->d[k] = (double)t->i[k];
    } else if (nd->kind == MARBLE_DATUM_DOUBLE) {
        for (int64_t k = 0; k < n; k++)
            out->d[k] = -t->d[k];
    } else {
        const int64_t *x = t->i;
        int64_t *r = out->i;
        if (negate(x, r, out->valid, n)) rc = overflow(c, nd);
    }
done:
    tmp_put(c);
    return rc;
}

static int eval_node(ctx *c, const bnode *nd, const uint32_t *sel, int64_t n, marble__vec *out)
{
    switch (nd->op) {
    case B_COL:
        return eval_col(c, nd, sel, n, out);
    case B_LIT:
        return eval_lit(c, nd, n, out);
    case B_AND:
    case B_OR:
        return eval_logic(c, nd, sel, n, out);
    case B_CMP:
    case B_ARITH:
        return eval_binary(c, nd, sel, n, out);
    case B_IN:
        return eval_in(c, nd, sel, n, out);
    default:
        return eval_unary(c, nd, sel, n, out);
    }
}

/* ---- selection ------------------------------------------------------------------------------- */

/* Rows of the input (sel_in[k], or k) where COND (over k, and r = the row) holds. */
#define SEL_ROWS(COND)                                                                             \
    do {                                                                                           \
        int64_t m_ = 0;                                                                            \
        if (sel_in) {                                                                              \
            for (int64_t k = 0; k < n; k++) {                                                      \
                int64_t r = sel_in[k];                                                             \
                sel_out[m_] = (uint32_t)r;                                                         \
                m_ += (COND);                                                                      \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t k = 0; k < n; k++) {                                                      \
                int64_t r = k;                                                                     \
                sel_out[m_] = (uint32_t)r;                                                         \
                m_ += (COND);                                                                      \
            }                                                                                      \
        }                                                                                          \
        *n_out = m_;                                                                               \
    } while (0)

#define DIRECT_NB(OP) SEL_ROWS(x[r] OP s)
#define DIRECT_B(OP) SEL_ROWS((x[r] OP s) & marble__arrow_bit_get(bits, o + r))
#define DIRECT(T, CT, SV)                                                                          \
    do {                                                                                           \
        const T *x = (const T *)cv.values + cv.off;                                                \
        CT s = (SV);                                                                               \
        if (bits) {                                                                                \
            CMP_CASES(nd->xop, DIRECT_B);                                                          \
        } else {                                                                                   \
            CMP_CASES(nd->xop, DIRECT_NB);                                                         \
        }                                                                                          \
        return MARBLE_OK;                                                                          \
    } while (0)

/* column OP literal straight from the column's buffer; MARBLE_ERR_UNSUPPORTED when the column
 * type has no direct path. */
static int select_col_cmp(ctx *c, const bnode *nd, const bnode *col, int as_double,
                          const uint32_t *sel_in, int64_t n, uint32_t *sel_out, int64_t *n_out)
{
    marble_arrow_type_id id = col->type.id;
    int ok = id == MARBLE_ARROW_INT32 || id == MARBLE_ARROW_DATE32 || id == MARBLE_ARROW_INT64 ||
             id == MARBLE_ARROW_TIMESTAMP || id == MARBLE_ARROW_FLOAT32 ||
             id == MARBLE_ARROW_FLOAT64 ||
             (!as_double &&
              (id == MARBLE_ARROW_INT8 || id == MARBLE_ARROW_INT16 || id == MARBLE_ARROW_UINT8 ||
               id == MARBLE_ARROW_UINT16 || id == MARBLE_ARROW_UINT32));
    if (!ok) return MARBLE_ERR_UNSUPPORTED;
    colv cv;
    MARBLE_RETURN_NOT_OK(col_open(c, col, &cv));
    if (cv.all_null) {
        *n_out = 0;
        return MARBLE_OK;
    }
    const uint8_t *bits = cv.bits;
    int64_t o = cv.off;
    const marble_datum *lit = &nd->b->lit;
    if (nd->b->kind == MARBLE_DATUM_DOUBLE) {
        switch (id) {
        case MARBLE_ARROW_INT32:
        case MARBLE_ARROW_DATE32:
            DIRECT(int32_t, double, lit->d);
        case MARBLE_ARROW_INT64:
        case MARBLE_ARROW_TIMESTAMP:
            DIRECT(int64_t, double, lit->d);
        case MARBLE_ARROW_FLOAT32:
            DIRECT(float, double, lit->d);
        default:
            DIRECT(double, double, lit->d);
        }
    }
    switch (id) {
    case MARBLE_ARROW_INT8:
        DIRECT(int8_t, int64_t, lit->i);
    case MARBLE_ARROW_INT16:
        DIRECT(int16_t, int64_t, lit->i);
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_DATE32:
        DIRECT(int32_t, int64_t, lit->i);
    case MARBLE_ARROW_UINT8:
        DIRECT(uint8_t, int64_t, lit->i);
    case MARBLE_ARROW_UINT16:
        DIRECT(uint16_t, int64_t, lit->i);
    case MARBLE_ARROW_UINT32:
        DIRECT(uint32_t, int64_t, lit->i);
    default:
        DIRECT(int64_t, int64_t, lit->i);
    }
}

#define STR_EQ(OT)                                                                                 \
    do {                                                                                           \
        const OT *o = (const OT *)cv.values + cv.off;                                              \
        if (bits)                                                                                  \
            SEL_ROWS((((int64_t)(o[r + 1] - o[r]) == ln &&                                         \
                       (ln == 0 || memcmp(cv.data + o[r], lit, (size_t)ln) == 0)) ^                \
                      ne) &                                                                        \
                     marble__arrow_bit_get(bits, cv.off + r));                                     \
        else                                                                                       \
            SEL_ROWS(((int64_t)(o[r + 1] - o[r]) == ln &&                                          \
                      (ln == 0 || memcmp(cv.data + o[r], lit, (size_t)ln) == 0)) ^                 \
                     ne);                                                                          \
    } while (0)

/* string column = / != literal straight from the offsets and data buffers */
static int select_str_eq(ctx *c, const bnode *nd, const uint32_t *sel_in, int64_t n,
                         uint32_t *sel_out, int64_t *n_out)
{
    colv cv;
    MARBLE_RETURN_NOT_OK(col_open(c, nd->a, &cv));
    if (cv.all_null) {
        *n_out = 0;
        return MARBLE_OK;
    }
    const uint8_t *bits = cv.bits;
    const char *lit = nd->b->lit.s;
    int64_t ln = (int64_t)nd->b->lit.n;
    int ne = nd->xop == MARBLE_OP_NE;
    if (nd->a->type.id == MARBLE_ARROW_LARGE_UTF8 || nd->a->type.id == MARBLE_ARROW_LARGE_BINARY)
        STR_EQ(int64_t);
    else
        STR_EQ(int32_t);
    return MARBLE_OK;
}

#define DENSE_NV(OP) SEL_ROWS(x[k] OP s)
#define DENSE_V(OP) SEL_ROWS((x[k] OP s) & v[k])

static int select_node(ctx *c, const bnode *nd, const uint32_t *sel_in, int64_t n,
                       uint32_t *sel_out, int64_t *n_out)
{
    if (nd->op == B_AND) {
        int64_t m;
        MARBLE_RETURN_NOT_OK(select_node(c, nd->a, sel_in, n, sel_out, &m));
        return select_node(c, nd->b, sel_out, m, sel_out, n_out);
    }
    if (nd->op == B_LIT) {
        if (nd->lit.kind == MARBLE_DATUM_BOOL && nd->lit.i)
            SEL_ROWS(1);
        else
            *n_out = 0;
        return MARBLE_OK;
    }
    if ((nd->op == B_ISNULL || nd->op == B_NOTNULL) && nd->a->op == B_COL) {
        colv cv;
        MARBLE_RETURN_NOT_OK(col_open(c, nd->a, &cv));
        int want = nd->op == B_NOTNULL;
        if (cv.all_null || !cv.bits) {
            if ((cv.all_null ? !want : want))
                SEL_ROWS(1);
            else
                *n_out = 0;
            return MARBLE_OK;
        }
        const uint8_t *bits = cv.bits;
        int64_t o = cv.off;
        if (want)
            SEL_ROWS(marble__arrow_bit_get(bits, o + r));
        else
            SEL_ROWS(!marble__arrow_bit_get(bits, o + r));
        return MARBLE_OK;
    }
    if (nd->op == B_CMP && nd->a->op == B_COL && nd->b->op == B_LIT &&
        nd->b->lit.kind == MARBLE_DATUM_STRING &&
        (nd->xop == MARBLE_OP_EQ || nd->xop == MARBLE_OP_NE) && nd->a->n_buffers == 3)
        return select_str_eq(c, nd, sel_in, n, sel_out, n_out);
    if (nd->op == B_CMP && nd->b->op == B_LIT && nd->b->lit.kind != MARBLE_DATUM_NULL &&
        numeric(nd->b->kind)) {
        const bnode *xn = nd->a;
        int as_double = 0;
        if (xn->op == B_CAST && xn->a->op == B_COL) {
            xn = xn->a;
            as_double = 1;
        }
        if (xn->op == B_COL) {
            int rc = select_col_cmp(c, nd, xn, as_double, sel_in, n, sel_out, n_out);
            if (rc != MARBLE_ERR_UNSUPPORTED) return rc;
        }
        marble__vec *t;
        MARBLE_RETURN_NOT_OK(eval_tmp(c, nd->a, sel_in, n, &t));
        const uint8_t *v = t->valid;
        if (t->kind == MARBLE_DATUM_INT) {
            const int64_t *x = t->i;
            int64_t s = nd->b->lit.i;
            if (v) {
                CMP_CASES(nd->xop, DENSE_V);
            } else {
                CMP_CASES(nd->xop, DENSE_NV);
            }
        } else {
            const double *x = t->d;
            double s = nd->b->lit.d;
            if (v) {
                CMP_CASES(nd->xop, DENSE_V);
            } else {
                CMP_CASES(nd->xop, DENSE_NV);
            }
        }
        tmp_put(c);
        return MARBLE_OK;
    }
    marble__vec *t;
    MARBLE_RETURN_NOT_OK(eval_tmp(c, nd, sel_in, n, &t));
    const uint8_t *b = t->b, *v = t->valid;
    if (v)
        SEL_ROWS(b[k] & v[k]);
    else
        SEL_ROWS(b[k]);
    tmp_put(c);
    return MARBLE_OK;
}

/* ---- entry points ---------------------------------------------------------------------------- */

static int ctx_open(ctx *c, const struct ArrowArray *batch, const uint32_t *sel, int64_t n,
                    marble_error *err)
{
    c->batch = batch;
    c->err = err;
    if (!batch || n < 0 || n > (int64_t)UINT32_MAX + 1 || (!sel && n > batch->length))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "bad evaluation range (%lld rows of a batch of %lld)", (long long)n,
                                batch ? (long long)batch->length : 0LL);
    if (!(c->sc = scratch_get()))
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory for expression scratch");
    return MARBLE_OK;
}

static void ctx_close(ctx *c, int top)
{
    c->sc->top = top;
    if (top == 0) scratch_trim(c->sc);
}

int marble__expr_eval(const marble__bound *b, const struct ArrowArray *batch, const uint32_t *sel,
                      int64_t n, marble__vec *out, marble_error *err)
{
    ctx c;
    MARBLE_RETURN_NOT_OK(ctx_open(&c, batch, sel, n, err));
    int top = c.sc->top;
    int rc = eval_node(&c, b->root, sel, n, out);
    ctx_close(&c, top);
    return rc;
}

int marble__expr_select(const marble__bound *b, const struct ArrowArray *batch,
                        const uint32_t *sel_in, int64_t n_in, uint32_t *sel_out, int64_t *n_out,
                        marble_error *err)
{
    *n_out = 0;
    if (is_null_lit(b->root)) return MARBLE_OK;
    if (b->root->kind != MARBLE_DATUM_BOOL)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "a filter needs a boolean predicate, not %s",
                                kind_name(b->root->kind));
    ctx c;
    MARBLE_RETURN_NOT_OK(ctx_open(&c, batch, sel_in, n_in, err));
    int top = c.sc->top;
    int rc = select_node(&c, b->root, sel_in, n_in, sel_out, n_out);
    if (rc != MARBLE_OK) *n_out = 0;
    ctx_close(&c, top);
    return rc;
}

int marble_expr_check(const marble_expr *e, const struct ArrowSchema *schema, const char **format,
                      marble_error *err)
{
    marble__bound *b;
    MARBLE_RETURN_NOT_OK(marble__expr_bind(e, schema, &b, err));
    if (format)
        *format = b->root->op == B_COL ? schema->children[b->root->col]->format
                                       : kind_format(b->root->kind);
    marble__bound_free(b);
    return MARBLE_OK;
}

int marble_expr_eval(const marble_expr *e, const struct ArrowSchema *schema,
                     const struct ArrowArray *batch, struct ArrowArray *out, marble_error *err)
{
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "no output array");
    memset(out, 0, sizeof *out);
    if (!batch || !schema)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "no batch or schema");
    MARBLE_RETURN_NOT_OK(marble_arrow_array_validate(schema, batch, MARBLE_VALIDATE_DEFAULT, err));
    marble__bound *b;
    MARBLE_RETURN_NOT_OK(marble__expr_bind(e, schema, &b, err));
    int rc;
    if (b->root->op == B_COL) {
        rc = marble__batch_take(schema, batch, b->root->col, NULL, batch->length, out, err);
    } else {
        marble__vec v;
        marble__vec_init(&v);
        rc = marble__expr_eval(b, batch, NULL, batch->length, &v, err);
        if (rc == MARBLE_OK) rc = marble__vec_to_arrow(&v, out, err);
        marble__vec_free(&v);
    }
    marble__bound_free(b);
    return rc;
}
