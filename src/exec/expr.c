/* Expressions: construction, inspection, binding and vectorized evaluation. (skeleton) */
#include "exec/exec_internal.h"

#include <stdlib.h>

marble_expr *marble_expr_column(const char *name) { (void)name; return NULL; }
marble_expr *marble_expr_int(int64_t v) { (void)v; return NULL; }
marble_expr *marble_expr_double(double v) { (void)v; return NULL; }
marble_expr *marble_expr_bool(int v) { (void)v; return NULL; }
marble_expr *marble_expr_string(const char *s, size_t n) { (void)s; (void)n; return NULL; }
marble_expr *marble_expr_null(void) { return NULL; }
marble_expr *marble_expr_unary(marble_expr_op op, marble_expr *a) { (void)op; (void)a; return NULL; }
marble_expr *marble_expr_binary(marble_expr_op op, marble_expr *a, marble_expr *b)
{ (void)op; (void)a; (void)b; return NULL; }
marble_expr *marble_expr_in(marble_expr *a, marble_expr **list, size_t n, int negated)
{ (void)a; (void)list; (void)n; (void)negated; return NULL; }
marble_expr *marble_expr_clone(const marble_expr *e) { (void)e; return NULL; }
void marble_expr_free(marble_expr *e) { (void)e; }
marble_expr_kind marble_expr_get_kind(const marble_expr *e) { (void)e; return MARBLE_EXPR_COLUMN; }
marble_expr_op marble_expr_get_op(const marble_expr *e) { (void)e; return MARBLE_OP_EQ; }
const char *marble_expr_get_column(const marble_expr *e) { (void)e; return NULL; }
const marble_datum *marble_expr_get_literal(const marble_expr *e) { (void)e; return NULL; }
size_t marble_expr_num_children(const marble_expr *e) { (void)e; return 0; }
const marble_expr *marble_expr_child(const marble_expr *e, size_t i) { (void)e; (void)i; return NULL; }
int marble_expr_in_negated(const marble_expr *e) { (void)e; return 0; }
size_t marble_expr_to_string(const marble_expr *e, char *buf, size_t cap)
{ (void)e; if (cap) buf[0] = 0; return 0; }
int marble_expr_check(const marble_expr *e, const struct ArrowSchema *schema, const char **format,
                      marble_error *err)
{ (void)e; (void)schema; (void)format; return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "expressions: not built yet"); }
int marble_expr_eval(const marble_expr *e, const struct ArrowSchema *schema,
                     const struct ArrowArray *batch, struct ArrowArray *out, marble_error *err)
{ (void)e; (void)schema; (void)batch; (void)out; return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "expressions: not built yet"); }

void marble__vec_init(marble__vec *v) { (void)v; }
void marble__vec_free(marble__vec *v) { (void)v; }
int marble__expr_bind(const marble_expr *e, const struct ArrowSchema *schema, marble__bound **out,
                      marble_error *err)
{ (void)e; (void)schema; (void)out; return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "expressions: not built yet"); }
void marble__bound_free(marble__bound *b) { (void)b; }
marble_datum_kind marble__bound_kind(const marble__bound *b) { (void)b; return MARBLE_DATUM_NULL; }
const char *marble__bound_format(const marble__bound *b) { (void)b; return "n"; }
int marble__bound_column(const marble__bound *b) { (void)b; return -1; }
int marble__expr_eval(const marble__bound *b, const struct ArrowArray *batch, const uint32_t *sel,
                      int64_t n, marble__vec *out, marble_error *err)
{ (void)b; (void)batch; (void)sel; (void)n; (void)out; return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "expressions: not built yet"); }
int marble__expr_select(const marble__bound *b, const struct ArrowArray *batch,
                        const uint32_t *sel_in, int64_t n_in, uint32_t *sel_out, int64_t *n_out,
                        marble_error *err)
{ (void)b; (void)batch; (void)sel_in; (void)n_in; (void)sel_out; (void)n_out; return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "expressions: not built yet"); }
int marble__vec_to_arrow(const marble__vec *v, struct ArrowArray *out, marble_error *err)
{ (void)v; (void)out; return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "expressions: not built yet"); }
int marble__array_take(const struct ArrowSchema *field, const struct ArrowArray *col,
                       const uint32_t *sel, int64_t n, struct ArrowArray *out, marble_error *err)
{ (void)field; (void)col; (void)sel; (void)n; (void)out; return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "expressions: not built yet"); }
