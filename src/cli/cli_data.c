/* `marble put`, `get`, `delete` and `scan`: rows of a table. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_util.h"

/* Splits the shared options of read commands. */
typedef struct read_args {
    const char *pos[3];
    int npos;
    int fmt;
    const char *columns, *from, *to, *where, *limit;
} read_args;

/* A view of the first n rows of a flat batch (children sliced too; nothing owned). */
typedef struct batch_view {
    struct ArrowArray top;
    struct ArrowArray kids[1024];
    struct ArrowArray *ptrs[1024];
} batch_view;

static void view_release(struct ArrowArray *a)
{
    a->release = NULL;
}

static const struct ArrowArray *head(const struct ArrowArray *b, int64_t n, batch_view *v)
{
    if (n >= b->length || b->n_children > 1024) return b;
    v->top = *b;
    v->top.length = n;
    v->top.release = view_release;
    v->top.null_count = b->null_count == 0 ? 0 : -1;
    for (int64_t c = 0; c < b->n_children; c++) {
        v->kids[c] = *b->children[c];
        v->kids[c].length = n;
        v->kids[c].null_count = b->children[c]->null_count == 0 ? 0 : -1;
        v->kids[c].release = view_release;
        v->ptrs[c] = &v->kids[c];
    }
    v->top.children = v->ptrs;
    return &v->top;
}

/* Writes a stream to stdout in `fmt`, at most `limit` rows (-1: all). Releases the stream. */
static int emit_stream(const char *cmd, struct ArrowArrayStream *st, int fmt, int64_t limit)
{
    marble_error err = {0};
    struct ArrowSchema schema;
    if (st->get_schema(st, &schema) != 0) {
        cli_errorf(cmd, "reading the schema: %s", st->get_last_error(st));
        st->release(st);
        return CLI_FAIL;
    }
    cli_writer *w = NULL;
    cli_out *o = NULL;
    int rc = CLI_OK;
    if (cli_writer_stdout(&w) || cli_out_begin(w, fmt, &schema, &o, &err)) {
        rc = cli_fail(cmd, "writing output", &err);
        goto done;
    }
    static batch_view view;
    while (limit < 0 || cli_out_rows(o) < limit) {
        if (cli_interrupted) {
            rc = CLI_CANCELLED;
            break;
        }
        struct ArrowArray a;
        if (st->get_next(st, &a) != 0) {
            cli_errorf(cmd, "scan failed: %s", st->get_last_error(st));
            rc = CLI_FAIL;
            break;
        }
        if (!a.release) break;
        const struct ArrowArray *b = limit < 0 ? &a : head(&a, limit - cli_out_rows(o), &view);
        int wrc = cli_out_batch(o, b, &err);
        marble_arrow_array_release(&a);
        if (wrc != MARBLE_OK) {
            rc = cli_fail(cmd, "writing output", &err);
            break;
        }
    }
    if (rc == CLI_OK) {
        if (cli_out_end(o, &err) != MARBLE_OK) rc = cli_fail(cmd, "writing output", &err);
        o = NULL;
    }
done:
    cli_out_free(o);
    if (w && cli_writer_close(w, &err) != MARBLE_OK && rc == CLI_OK)
        rc = cli_fail(cmd, "writing output", &err);
    marble_arrow_schema_release(&schema);
    st->release(st);
    return rc;
}

static const char READ_FORMATS[] =
    "  --format F   table (default on a terminal), csv (default otherwise), json, or arrow\n"
    "               (an Arrow IPC stream, for piping into other Arrow tools)\n";

int marble_cli_put(int argc, char **argv)
{
    const char *cmd = "put", *pos[2] = {0};
    int npos = 0;
    const char *assign[1024];
    int nassign = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: marble put DB TABLE COL=VALUE ...\n"
                   "Upserts one row. Values are parsed by the column's type (bool: true/false;\n"
                   "timestamps and dates: the raw integer); columns left out are null (key\n"
                   "columns are required).\n"
                   "example: marble put ./shop.db orders id=7 name='blue chair' v=129.5\n");
            return CLI_OK;
        }
        if (npos < 2) {
            if (argv[i][0] == '-' && argv[i][1])
                return cli_usagef(cmd, "unknown option '%s'", argv[i]);
            pos[npos++] = argv[i];
        } else if (!strchr(argv[i], '=')) {
            return cli_usagef(cmd, "'%s' is not COL=VALUE", argv[i]);
        } else if (nassign < 1024) {
            assign[nassign++] = argv[i];
        }
    }
    if (npos < 2) return cli_usagef(cmd, "needs DB and TABLE");
    if (!nassign) return cli_usagef(cmd, "needs at least one COL=VALUE");
    marble_db *db;
    if (cli_open_db(cmd, pos[0], 0, 1, &db)) return CLI_FAIL;
    cli_table t;
    int rc = cli_table_load(cmd, db, pos[1], &t);
    if (rc != CLI_OK) {
        cli_close_db(cmd, db);
        return rc;
    }
    marble_error err = {0};
    marble_batch_builder *b = NULL;
    int64_t ncols = t.schema.n_children;
    const char *val[1024] = {0};
    for (int k = 0; k < nassign && rc == CLI_OK; k++) {
        const char *eq = strchr(assign[k], '=');
        size_t nlen = (size_t)(eq - assign[k]);
        int64_t c = 0;
        for (; c < ncols; c++)
            if (strlen(t.schema.children[c]->name) == nlen &&
                !strncmp(t.schema.children[c]->name, assign[k], nlen))
                break;
        if (c == ncols) {
            rc = cli_usagef(cmd, "table %s has no column '%.*s' (see 'marble describe')", pos[1],
                            (int)nlen, assign[k]);
        } else if (c < 1024) {
            val[c] = eq + 1;
        }
    }
    for (size_t k = 0; k < t.nkey && rc == CLI_OK; k++)
        if (!val[t.key[k]])
            rc =
                cli_usagef(cmd, "key column '%s' needs a value", t.schema.children[t.key[k]]->name);
    if (rc == CLI_OK && marble_batch_builder_create(&t.schema, &b, &err) != MARBLE_OK)
        rc = cli_fail(cmd, "building the row", &err);
    for (int64_t c = 0; c < ncols && rc == CLI_OK; c++) {
        int r = val[c] ? cli_append_text(b, t.schema.children[c], (int)c, val[c], &err)
                       : marble_builder_append_null(b, (int)c, &err);
        if (r != MARBLE_OK) rc = cli_usagef(cmd, "%s", err.message);
    }
    if (rc == CLI_OK) {
        struct ArrowArray row;
        if (marble_batch_builder_finish(b, &row, &err) != MARBLE_OK ||
            marble_db_put(db, pos[1], &t.schema, &row, NULL, &err) != MARBLE_OK)
            rc = cli_fail(cmd, "put failed", &err);
        marble_arrow_array_release(&row);
    }
    marble_batch_builder_destroy(b);
    cli_table_free(&t);
    if (cli_close_db(cmd, db) != CLI_OK) rc = CLI_FAIL;
    return rc;
}

/* Parses options of get/delete/scan. */
static int parse_read_args(const char *cmd, int argc, char **argv, int maxpos, read_args *r)
{
    memset(r, 0, sizeof *r);
    r->fmt = CLI_FMT_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *f = NULL;
        int m;
        if ((m = cli_opt(cmd, argc, argv, &i, "--format", &f))) {
            if (m < 0) return CLI_USAGE;
            r->fmt = cli_format_parse(f);
            if (r->fmt < 0) return cli_usagef(cmd, "unknown --format '%s'", f);
        } else if (maxpos == 2 && (m = cli_opt(cmd, argc, argv, &i, "--columns", &r->columns))) {
            if (m < 0) return CLI_USAGE;
        } else if (maxpos == 2 && (m = cli_opt(cmd, argc, argv, &i, "--from", &r->from))) {
            if (m < 0) return CLI_USAGE;
        } else if (maxpos == 2 && (m = cli_opt(cmd, argc, argv, &i, "--to", &r->to))) {
            if (m < 0) return CLI_USAGE;
        } else if (maxpos == 2 && (m = cli_opt(cmd, argc, argv, &i, "--limit", &r->limit))) {
            if (m < 0) return CLI_USAGE;
        } else if (maxpos == 2 && (m = cli_opt(cmd, argc, argv, &i, "--where", &r->where))) {
            if (m < 0) return CLI_USAGE;
        } else if (argv[i][0] == '-' && argv[i][1] && !(r->npos == 2 && maxpos == 3)) {
            return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        } else if (r->npos < maxpos) {
            r->pos[r->npos++] = argv[i];
        } else {
            return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    return CLI_OK;
}

/* get and delete: DB TABLE KEY. */
static int key_command(const char *cmd, int argc, char **argv, int del)
{
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            if (del)
                printf("usage: marble delete DB TABLE KEY[,KEY2...]\n"
                       "Deletes the row with this primary key (values in key column order,\n"
                       "comma-separated; the last one may contain commas). Deleting an absent\n"
                       "key is not an error.\n"
                       "example: marble delete ./shop.db orders 7\n");
            else
                printf("usage: marble get DB TABLE KEY[,KEY2...] [--format F]\n"
                       "Prints the row with this primary key (values in key column order,\n"
                       "comma-separated; the last one may contain commas); exit 1 if absent.\n"
                       "%s"
                       "example: marble get ./shop.db orders 7 --format json\n",
                       READ_FORMATS);
            return CLI_OK;
        }
    }
    read_args r;
    int rc = parse_read_args(cmd, argc, argv, 3, &r);
    if (rc) return rc;
    if (r.npos < 3) return cli_usagef(cmd, "needs DB, TABLE and KEY");
    int fmt = CLI_FMT_AUTO;
    if (!del && (fmt = cli_format_for_stdout(cmd, r.fmt)) < 0) return CLI_USAGE;
    marble_db *db;
    if (cli_open_db(cmd, r.pos[0], 0, 1, &db)) return CLI_FAIL;
    cli_table t;
    rc = cli_table_load(cmd, db, r.pos[1], &t);
    if (rc != CLI_OK) {
        cli_close_db(cmd, db);
        return rc;
    }
    marble_error err = {0};
    marble_value vals[32];
    size_t n;
    char *text = strdup(r.pos[2]);
    if (cli_parse_key(&t, text, vals, &n, &err) != MARBLE_OK) {
        rc = cli_usagef(cmd, "bad key '%s': %s", r.pos[2], err.message);
    } else if (n != t.nkey) {
        rc = cli_usagef(cmd, "the key of %s has %zu columns, %zu value%s given", r.pos[1], t.nkey,
                        n, n == 1 ? "" : "s");
    } else if (del) {
        if (marble_db_delete_key(db, r.pos[1], (marble_key){vals, n}, NULL, &err) != MARBLE_OK)
            rc = cli_fail(cmd, "delete failed", &err);
    } else {
        struct ArrowSchema s;
        struct ArrowArray row;
        int g = marble_db_get(db, r.pos[1], (marble_key){vals, n}, NULL, &s, &row, &err);
        if (g == MARBLE_ERR_NOT_FOUND) {
            cli_errorf(cmd, "no row with key %s in %s", r.pos[2], r.pos[1]);
            rc = CLI_FAIL;
        } else if (g != MARBLE_OK) {
            rc = cli_fail(cmd, "get failed", &err);
        } else {
            cli_writer *w = NULL;
            cli_out *o = NULL;
            int wrc = cli_writer_stdout(&w);
            if (!wrc) wrc = cli_out_begin(w, fmt, &s, &o, &err);
            if (!wrc) wrc = cli_out_batch(o, &row, &err);
            if (!wrc) {
                wrc = cli_out_end(o, &err); /* frees o, also on failure */
                o = NULL;
            }
            cli_out_free(o);
            if (wrc) rc = cli_fail(cmd, "writing output", &err);
            if (w && cli_writer_close(w, &err) != MARBLE_OK && rc == CLI_OK)
                rc = cli_fail(cmd, "writing output", &err);
            marble_arrow_array_release(&row);
            marble_arrow_schema_release(&s);
        }
    }
    free(text);
    cli_table_free(&t);
    if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    return rc;
}

int marble_cli_get(int argc, char **argv)
{
    return key_command("get", argc, argv, 0);
}

int marble_cli_delete(int argc, char **argv)
{
    return key_command("delete", argc, argv, 1);
}

/* A scan with --where: the table's scan source over the key range (pruned by the predicate's
 * simple conjuncts is the query planner's job; here the range does the pruning), a filter and
 * the projection, run as a pipeline on the database's scheduler. Rows stay in key order. */
static int where_scan(marble_db *db, const char *table, const marble_key_range *range,
                      const char *where, const char *const *cols, size_t ncol,
                      struct ArrowArrayStream *out, marble_error *err)
{
    marble_expr *pred = NULL;
    if (marble_expr_parse(where, &pred, err) != MARBLE_OK) return err->code;
    marble_scan_spec spec = {0};
    spec.range = range;
    marble_source src;
    int rc = marble_db_scan_source(db, table, &spec, &src, err);
    marble_pipeline *p = NULL;
    if (rc == MARBLE_OK) rc = marble_pipeline_create(&src, &p, err);
    if (rc == MARBLE_OK) rc = marble_pipeline_filter(p, pred, err);
    marble_expr *proj[1024];
    size_t nproj = 0;
    for (size_t i = 0; rc == MARBLE_OK && i < ncol; i++) {
        proj[nproj] = marble_expr_column(cols[i]);
        if (!proj[nproj]) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        else nproj++;
    }
    if (rc == MARBLE_OK && nproj)
        rc = marble_pipeline_project(p, (const marble_expr *const *)proj, NULL, nproj, err);
    for (size_t i = 0; i < nproj; i++) marble_expr_free(proj[i]);
    marble_expr_free(pred);
    if (rc == MARBLE_OK) {
        marble_exec_options eo;
        marble_exec_options_init(&eo);
        eo.sched = marble_db_sched(db);
        rc = marble_pipeline_execute(p, &eo, out, err);
        p = NULL;
    }
    marble_pipeline_destroy(p);
    return rc;
}

int marble_cli_query(int argc, char **argv)
{
    const char *cmd = "query", *pos[2] = {0};
    int npos = 0, fmt = CLI_FMT_AUTO, explain = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = NULL;
        int m;
        if (cli_is_help(argv[i])) {
            printf("usage: marble query DB 'SELECT ...' [--format F] [--explain]\n"
                   "Runs a query: SELECT items FROM table [WHERE expr] [GROUP BY exprs]\n"
                   "[ORDER BY keys [ASC|DESC]] [LIMIT n [OFFSET m]]. Items are columns, expressions\n"
                   "(+ - * / %%, comparisons, AND/OR/NOT, IS [NOT] NULL, IN) and the aggregates\n"
                   "COUNT(*), COUNT, SUM, MIN, MAX, AVG. --explain prints the plan instead.\n"
                   "%s"
                   "example: marble query ./shop.db 'SELECT k, sum(v) AS total FROM orders\n"
                   "           WHERE v > 10 GROUP BY k ORDER BY total DESC LIMIT 5'\n",
                   READ_FORMATS);
            return CLI_OK;
        }
        if ((m = cli_opt(cmd, argc, argv, &i, "--format", &f))) {
            if (m < 0) return CLI_USAGE;
            fmt = cli_format_parse(f);
            if (fmt < 0) return cli_usagef(cmd, "unknown --format '%s'", f);
        } else if (!strcmp(argv[i], "--explain")) {
            explain = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return cli_usagef(cmd, "unexpected argument '%s' (quote the query)", argv[i]);
        }
    }
    if (npos < 2) return cli_usagef(cmd, "needs DB and a query");
    if (!explain) fmt = cli_format_for_stdout(cmd, fmt);
    if (fmt < 0) return CLI_USAGE;
    marble_error err = {0};
    marble_query *q = NULL;
    if (marble_query_parse(pos[1], &q, &err) != MARBLE_OK) {
        cli_errorf(cmd, "%s", err.message);
        return CLI_USAGE;
    }
    cli_install_sigint();
    marble_db *db;
    if (cli_open_db(cmd, pos[0], 0, 1, &db)) {
        marble_query_destroy(q);
        return CLI_FAIL;
    }
    int rc = CLI_OK;
    if (explain) {
        char *text = NULL;
        if (marble_db_explain(db, q, &text, &err) != MARBLE_OK) {
            rc = cli_fail(cmd, "explain failed", &err);
        } else {
            printf("%s\n", text);
        }
        marble_free(text);
    } else {
        struct ArrowArrayStream st;
        if (marble_db_query(db, q, NULL, &st, NULL, &err) != MARBLE_OK) {
            rc = cli_fail(cmd, "query failed", &err);
            if (err.code == MARBLE_ERR_INVALID_ARGUMENT || err.code == MARBLE_ERR_NOT_FOUND ||
                err.code == MARBLE_ERR_UNSUPPORTED)
                rc = CLI_USAGE;
        } else {
            rc = emit_stream(cmd, &st, fmt, -1);
        }
    }
    marble_query_destroy(q);
    if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    if (rc == CLI_CANCELLED) return cli_cancelled(cmd);
    return rc;
}

int marble_cli_scan(int argc, char **argv)
{
    const char *cmd = "scan";
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: marble scan DB TABLE [--columns a,b] [--where EXPR] [--from KEY] "
                   "[--to KEY] [--limit N] [--format F]\n"
                   "Prints the rows in key order. --from is inclusive, --to is inclusive; each\n"
                   "is a key or a key prefix (values of the first key columns, comma-separated).\n"
                   "--where keeps the rows where EXPR is true (the WHERE syntax of 'marble query').\n"
                   "%s"
                   "examples: marble scan ./shop.db orders --from 10 --to 20 --limit 5\n"
                   "          marble scan ./shop.db orders --where 'v > 100 AND name IS NOT NULL'\n"
                   "          marble scan ./shop.db orders --format arrow > orders.arrows\n",
                   READ_FORMATS);
            return CLI_OK;
        }
    }
    read_args r;
    int rc = parse_read_args(cmd, argc, argv, 2, &r);
    if (rc) return rc;
    if (r.npos < 2) return cli_usagef(cmd, "needs DB and TABLE");
    int64_t limit = -1;
    if (r.limit && cli_parse_count(cmd, "--limit", r.limit, &limit)) return CLI_USAGE;
    int fmt = cli_format_for_stdout(cmd, r.fmt);
    if (fmt < 0) return CLI_USAGE;
    cli_install_sigint();
    marble_db *db;
    if (cli_open_db(cmd, r.pos[0], 0, 1, &db)) return CLI_FAIL;
    cli_table t;
    rc = cli_table_load(cmd, db, r.pos[1], &t);
    if (rc != CLI_OK) {
        cli_close_db(cmd, db);
        return rc;
    }
    marble_error err = {0};
    marble_value lo[32], hi[32];
    marble_key_range range;
    memset(&range, 0, sizeof range);
    range.upper_inclusive = 1;
    char *from = r.from ? strdup(r.from) : NULL, *to = r.to ? strdup(r.to) : NULL;
    char *cols = r.columns ? strdup(r.columns) : NULL;
    const char *colv[1024];
    size_t ncol = 0;
    if (from && cli_parse_key(&t, from, lo, &range.lower.n, &err) != MARBLE_OK)
        rc = cli_usagef(cmd, "bad --from '%s': %s", r.from, err.message);
    if (rc == CLI_OK && to && cli_parse_key(&t, to, hi, &range.upper.n, &err) != MARBLE_OK)
        rc = cli_usagef(cmd, "bad --to '%s': %s", r.to, err.message);
    range.lower.values = lo;
    range.upper.values = hi;
    if (cols)
        for (char *tok = strtok(cols, ","); tok && ncol < 1024; tok = strtok(NULL, ","))
            colv[ncol++] = tok;
    if (rc == CLI_OK) {
        marble_read_options ro = {0};
        if (ncol) {
            ro.columns = colv;
            ro.n_columns = ncol;
        }
        struct ArrowArrayStream st;
        if (r.where) {
            if (where_scan(db, r.pos[1], &range, r.where, ncol ? colv : NULL, ncol, &st, &err) !=
                MARBLE_OK) {
                rc = cli_fail(cmd, "scan failed", &err);
                if (err.code == MARBLE_ERR_INVALID_ARGUMENT || err.code == MARBLE_ERR_NOT_FOUND ||
                    err.code == MARBLE_ERR_UNSUPPORTED)
                    rc = CLI_USAGE;
            } else {
                rc = emit_stream(cmd, &st, fmt, limit);
            }
        } else if (marble_db_scan(db, r.pos[1], &range, &ro, &st, &err) != MARBLE_OK) {
            rc = cli_fail(cmd, "scan failed", &err);
            if (err.code == MARBLE_ERR_INVALID_ARGUMENT || err.code == MARBLE_ERR_NOT_FOUND)
                rc = CLI_USAGE;
        } else {
            rc = emit_stream(cmd, &st, fmt, limit);
        }
    }
    free(from);
    free(to);
    free(cols);
    cli_table_free(&t);
    if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    if (rc == CLI_CANCELLED) return cli_cancelled(cmd);
    return rc;
}
