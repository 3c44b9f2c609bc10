/* The marble command: entry point and subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "marble/marble.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
} command;

static const command COMMANDS[] = {
    {"create", marble_cli_create},
    {"tables", marble_cli_tables},
    {"describe", marble_cli_describe},
    {"put", marble_cli_put},
    {"get", marble_cli_get},
    {"delete", marble_cli_delete},
    {"scan", marble_cli_scan},
    {"query", marble_cli_query},
    {"import", marble_cli_import},
    {"export", marble_cli_export},
    {"compact", marble_cli_compact},
    {"stats", marble_cli_stats},
    {"check", marble_cli_check},
    {"dump", marble_cli_dump},
    {"demo", marble_cli_demo_db},
    {"demo-sched", marble_cli_demo_sched},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: marble <command> [options]   ('marble <command> --help' for each)\n"
               "\n"
               "tables:\n"
               "  create DB TABLE --schema S --key K   create a table (and the database)\n"
               "  tables DB                            list the tables\n"
               "  describe DB TABLE                    columns, types and key of a table\n"
               "rows:\n"
               "  put DB TABLE COL=VALUE ...           upsert one row\n"
               "  get DB TABLE KEY                     print one row by its key\n"
               "  delete DB TABLE KEY                  delete one row by its key\n"
               "  scan DB TABLE [--from K] [--to K] [--columns a,b] [--limit N]\n"
               "          [--where EXPR]               print rows in key order\n"
               "  query DB 'SELECT ...'                run a query (WHERE, GROUP BY, ORDER BY, LIMIT)\n"
               "  import DB TABLE FILE                 load an Arrow IPC file or stream, or CSV\n"
               "  export DB TABLE FILE                 write a table as Arrow, CSV or JSON\n"
               "maintenance:\n"
               "  compact DB [TABLE]                   compact to one sorted level\n"
               "  stats DB                             the store's statistics\n"
               "  check DB                             verify every checksum; exit 1 on a problem\n"
               "  dump FILE                            show an SSTable or a WAL segment\n"
               "demos:\n"
               "  demo [--rows N] [--dir PATH]         the state store end to end\n"
               "  demo-sched [--threads N]             the scheduler demo\n"
               "  version                              print the library version\n"
               "\n"
               "DB is a path or a VFS URI (file:///..., mem://..., s3://bucket/prefix with\n"
               "MARBLE_WAL_URI set to a local directory). Output: an aligned table on a terminal,\n"
               "else CSV; --format table|csv|json|arrow. Exit codes: 0 ok, 1 failure, 2 usage,\n"
               "130 cancelled (Ctrl-C).\n"
               "\n"
               "example:\n"
               "  marble create ./shop.db orders --schema 'id:int64,name:utf8,v:float64' --key id\n"
               "  marble put ./shop.db orders id=1 name=chair v=129.5\n"
               "  marble scan ./shop.db orders\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("marble %s\n", marble_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(cmd, COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "marble: unknown command '%s' (try 'marble --help')\n", cmd);
    return 2;
}
