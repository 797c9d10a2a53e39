/* cli_store — `cowfs df`, `cowfs gc` and `cowfs fsck`: whole-store jobs.
 * Through the daemon's control socket when the store is mounted (progress
 * lines, then the final reply), else on the store opened here, served by
 * the same control code over a socket pair, so both give the same output.
 * ARGV[0] is the command.  Exit status: 0 clean, 1 failure or problems
 * found, 2 bad usage.
 */
#ifndef COW_CLI_STORE_H
#define COW_CLI_STORE_H
int cmd_store_job(int argc, char **argv);
/* The final reply of "df" from STORE's daemon (progress skipped), or NULL
 * after a message. */
#include <jansson.h>
json_t *cli_store_df(const char *store);
#endif
