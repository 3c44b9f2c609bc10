/* Subcommands of the marble command; each returns the process exit code (0 ok, 1 failure,
 * 2 usage). */
#ifndef MARBLE_CLI_H
#define MARBLE_CLI_H

int marble_cli_demo_sched(int argc, char **argv);
int marble_cli_demo_db(int argc, char **argv);

#endif
