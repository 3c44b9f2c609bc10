/* marble_expr_parse: one expression of the SELECT subset on its own (scan --where); the parser
 * is the query parser's (parse.c). */
#include "query/query_internal.h"

int marble_expr_parse(const char *text, marble_expr **out, marble_error *err)
{
    return marble__expr_parse(text, out, err);
}
