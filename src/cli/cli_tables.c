/* `marble create`, `marble tables`, `marble describe`: the tables of a database. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_util.h"

int marble_cli_create(int argc, char **argv)
{
    const char *cmd = "create", *pos[2] = {0}, *schema_text = NULL, *key_text = NULL;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        int m;
        if (cli_is_help(argv[i])) {
            printf("usage: marble create DB TABLE --schema 'COL:TYPE,...' --key COL[,COL...]\n"
                   "Creates a table (and the database at DB if it does not exist yet).\n"
                   "Types: bool, int8..int64, uint8..uint64, float32, float64, utf8, "
                   "large_utf8,\n"
                   "binary, date32, timestamp[us, tz=UTC], ... A column is nullable unless "
                   "suffixed\n"
                   "with '!' (id:int64!); key columns may not hold nulls.\n"
                   "example: marble create ./shop.db orders --schema "
                   "'id:int64,name:utf8,v:float64' --key id\n");
            return CLI_OK;
        }
        if ((m = cli_opt(cmd, argc, argv, &i, "--schema", &schema_text))) {
            if (m < 0) return CLI_USAGE;
        } else if ((m = cli_opt(cmd, argc, argv, &i, "--key", &key_text))) {
            if (m < 0) return CLI_USAGE;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (npos < 2) return cli_usagef(cmd, "needs DB and TABLE");
    if (!schema_text) return cli_usagef(cmd, "needs --schema 'col:type,...'");
    if (!key_text) return cli_usagef(cmd, "needs --key COL[,COL...]");

    marble_error err = {0};
    struct ArrowSchema schema;
    if (marble_arrow_schema_parse(schema_text, &schema, &err) != MARBLE_OK)
        return cli_usagef(cmd, "bad --schema '%s': %s", schema_text, err.message);
    char *keys = strdup(key_text);
    const char *key_cols[32];
    size_t nkey = 0;
    for (char *tok = strtok(keys, ","); tok; tok = strtok(NULL, ",")) {
        if (nkey == 32) {
            free(keys);
            marble_arrow_schema_release(&schema);
            return cli_usagef(cmd, "--key names more than 32 columns");
        }
        key_cols[nkey++] = tok;
    }
    if (!nkey) {
        free(keys);
        marble_arrow_schema_release(&schema);
        return cli_usagef(cmd, "--key needs at least one column");
    }
    marble_db *db;
    int rc = cli_open_db(cmd, pos[0], 1, 1, &db);
    if (rc == CLI_OK) {
        if (marble_db_create_table(db, pos[1], &schema, key_cols, nkey, &err) != MARBLE_OK) {
            rc = cli_fail(cmd, "cannot create the table", &err);
            if (err.code == MARBLE_ERR_INVALID_ARGUMENT) rc = CLI_USAGE;
        } else {
            printf("created table %s in %s\n", pos[1], pos[0]);
        }
        if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    }
    free(keys);
    marble_arrow_schema_release(&schema);
    return rc;
}

static int print_name(void *ud, const char *name)
{
    (void)ud;
    printf("%s\n", name);
    return 0;
}

int marble_cli_tables(int argc, char **argv)
{
    const char *cmd = "tables", *dbu = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: marble tables DB\n"
                   "Lists the tables of the database, one per line.\n"
                   "example: marble tables ./shop.db\n");
            return CLI_OK;
        }
        if (argv[i][0] == '-' && argv[i][1]) return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        if (dbu) return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        dbu = argv[i];
    }
    if (!dbu) return cli_usagef(cmd, "needs DB");
    marble_db *db;
    if (cli_open_db(cmd, dbu, 0, 1, &db)) return CLI_FAIL;
    marble_error err = {0};
    int rc = CLI_OK;
    if (marble_db_list_tables(db, print_name, NULL, &err) != MARBLE_OK)
        rc = cli_fail(cmd, "listing tables", &err);
    if (cli_close_db(cmd, db) != CLI_OK) rc = CLI_FAIL;
    return rc;
}

int marble_cli_describe(int argc, char **argv)
{
    const char *cmd = "describe", *pos[2] = {0};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: marble describe DB TABLE\n"
                   "Prints the table's columns (name, type, nullability) and its primary key.\n"
                   "example: marble describe ./shop.db orders\n");
            return CLI_OK;
        }
        if (argv[i][0] == '-' && argv[i][1]) return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        if (npos == 2) return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        pos[npos++] = argv[i];
    }
    if (npos < 2) return cli_usagef(cmd, "needs DB and TABLE");
    marble_db *db;
    if (cli_open_db(cmd, pos[0], 0, 1, &db)) return CLI_FAIL;
    cli_table t;
    int rc = cli_table_load(cmd, db, pos[1], &t);
    if (rc == CLI_OK) {
        printf("table %s\n", pos[1]);
        size_t wn = 6;
        for (int64_t c = 0; c < t.schema.n_children; c++)
            if (strlen(t.schema.children[c]->name) > wn) wn = strlen(t.schema.children[c]->name);
        printf("  %-*s  %-24s  %-8s  %s\n", (int)wn, "column", "type", "nullable", "key");
        for (int64_t c = 0; c < t.schema.n_children; c++) {
            const struct ArrowSchema *f = t.schema.children[c];
            marble_arrow_type ty;
            char tn[96] = "?";
            const char *name = tn;
            if (marble_arrow_type_parse(f->format, &ty, NULL) == MARBLE_OK)
                name = marble_arrow_type_name(&ty, tn, sizeof tn);
            int kpos = 0;
            for (size_t k = 0; k < t.nkey; k++)
                if (t.key[k] == c) kpos = (int)k + 1;
            char kb[16] = "";
            if (kpos) snprintf(kb, sizeof kb, "%d", kpos);
            printf("  %-*s  %-24s  %-8s  %s\n", (int)wn, f->name, name,
                   (f->flags & ARROW_FLAG_NULLABLE) ? "yes" : "no", kb);
        }
        printf("primary key: (");
        for (size_t k = 0; k < t.nkey; k++)
            printf("%s%s", k ? ", " : "", t.schema.children[t.key[k]]->name);
        printf(")\n");
        cli_table_free(&t);
    }
    if (cli_close_db(cmd, db) != CLI_OK) rc = CLI_FAIL;
    return rc;
}
