/* The marble command: entry point and subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "marble/marble.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: marble <command> [options]\n"
               "\n"
               "commands:\n"
               "  demo [--threads N] [--size N]   run the scheduler demo (a parallel workload with "
               "a report)\n"
               "  version                         print the library version\n"
               "\n"
               "example:\n"
               "  marble demo --threads 2\n");
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
    if (!strcmp(cmd, "demo")) return marble_cli_demo(argc - 1, argv + 1);
    fprintf(stderr, "marble: unknown command '%s' (try 'marble --help')\n", cmd);
    return 2;
}
