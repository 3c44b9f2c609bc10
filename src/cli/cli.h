/* Subcommands of the marble command; each returns the process exit code (0 ok, 1 failure,
 * 2 usage, 130 cancelled by Ctrl-C). argv[0] is the subcommand's name. */
#ifndef MARBLE_CLI_H
#define MARBLE_CLI_H

int marble_cli_demo_sched(int argc, char **argv);
int marble_cli_demo_db(int argc, char **argv);

/* cli_tables.c */
int marble_cli_create(int argc, char **argv);
int marble_cli_tables(int argc, char **argv);
int marble_cli_describe(int argc, char **argv);
/* cli_data.c */
int marble_cli_put(int argc, char **argv);
int marble_cli_get(int argc, char **argv);
int marble_cli_delete(int argc, char **argv);
int marble_cli_scan(int argc, char **argv);
int marble_cli_query(int argc, char **argv);
/* cli_io.c */
int marble_cli_import(int argc, char **argv);
int marble_cli_export(int argc, char **argv);
/* cli_admin.c */
int marble_cli_compact(int argc, char **argv);
int marble_cli_stats(int argc, char **argv);
int marble_cli_check(int argc, char **argv);
int marble_cli_dump(int argc, char **argv);

#endif
