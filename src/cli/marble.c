/* The marble command: entry point and subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "marble/marble.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: marble <command> [options]\n"
            "\n"
            "commands:\n"
            "  demo [--rows N] [--dir PATH]    the state store end to end: load events, compact,\n"
            "                                  point gets, scans, statistics\n"
            "  demo-sched [--threads N]        the scheduler demo (a parallel workload with a "
            "report)\n"
            "  version                         print the library version\n"
            "\n"
            "example:\n"
            "  marble demo --rows 500000\n");
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
    if (!strcmp(cmd, "demo")) return marble_cli_demo_db(argc - 1, argv + 1);
    if (!strcmp(cmd, "demo-sched")) return marble_cli_demo_sched(argc - 1, argv + 1);
    fprintf(stderr, "marble: unknown command '%s' (try 'marble --help')\n", cmd);
    return 2;
}
