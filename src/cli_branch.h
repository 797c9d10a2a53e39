/* cli_branch — the `cowfs branch`, `cowfs snapshot` and `cowfs reap`
 * commands: argument parsing, one control request each, and the human
 * output (a tree of branches).  ARGV[0] is the command group's name.
 * Exit status: 0, 1 (refused or failed, with a message), 2 (bad usage).
 */
#ifndef COW_CLI_BRANCH_H
#define COW_CLI_BRANCH_H
int cmd_branch(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_reap(int argc, char **argv);
#endif
