/*
 * Internals of the query layer shared by its files (private to src/query/): the structured
 * query object, identifier and keyword rules shared by the parser and marble_query_to_sql, and
 * the output names of select items.
 *
 * Invariants: items[] holds at least one item once the query is complete (checked when it is
 * parsed or planned, not while it is built); an item's expression is owned by the query;
 * order keys name an output column or table column (name != NULL) or a 1-based position.
 */
#ifndef MARBLE_QUERY_INTERNAL_H
#define MARBLE_QUERY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "marble/query.h"

typedef enum marble__item_kind {
    MARBLE__ITEM_STAR = 1,
    MARBLE__ITEM_EXPR,
    MARBLE__ITEM_AGG
} marble__item_kind;

typedef struct marble__item {
    marble__item_kind kind;
    marble_expr *e;   /* EXPR: the expression; AGG: the argument (NULL for COUNT(*)) */
    marble_agg_fn fn; /* AGG */
    char *alias;      /* NULL: none given */
} marble__item;

typedef struct marble__order {
    char *name;   /* NULL: by position */
    int position; /* 1-based, when name is NULL */
    int descending;
} marble__order;

struct marble_query {
    char *table;
    marble__item *items;
    size_t n_items, cap_items;
    marble_expr *where;
    marble_expr **groups;
    size_t n_groups, cap_groups;
    marble__order *orders;
    size_t n_orders, cap_orders;
    int64_t limit; /* < 0: none */
    int64_t offset;
};

/* 1 if `s` (n bytes) is a word the parser reserves (case-insensitive). */
int marble__query_is_keyword(const char *s, size_t n);
/* The expression's text (marble_expr_to_string) in a malloc'd string; NULL if out of memory. */
char *marble__expr_text(const marble_expr *e);
/* The output name of a select item (alias, column name, expression text, "sum(v)",
 * "count(*)"); malloc'd, NULL if out of memory. Not for STAR items. */
char *marble__item_name(const marble__item *it);

/* A growing string (malloc'd p, NUL-terminated); oom is set once an allocation failed and
 * makes every later append a no-op. */
typedef struct marble__sbuf {
    char *p;
    size_t n, cap;
    int oom;
} marble__sbuf;
void marble__sb_put(marble__sbuf *b, const char *s, size_t n);
void marble__sb_str(marble__sbuf *b, const char *s);
void marble__sb_fmt(marble__sbuf *b, const char *fmt, ...) MARBLE_PRINTF(2, 3);
/* An identifier as the parser reads it back (quoted when needed). */
void marble__sb_ident(marble__sbuf *b, const char *s);
/* A literal in the subset's syntax. */
void marble__sb_literal(marble__sbuf *b, const marble_datum *v);

/* Building blocks of the parser: each takes ownership of the expression (freed on failure). */
int marble__query_push_expr(marble_query *q, marble_expr *e, const char *alias, marble_error *err);
int marble__query_push_agg(marble_query *q, marble_agg_fn fn, marble_expr *arg, const char *alias,
                           marble_error *err);
int marble__query_set_where(marble_query *q, marble_expr *pred, marble_error *err);
int marble__query_push_group(marble_query *q, marble_expr *e, marble_error *err);

#endif
