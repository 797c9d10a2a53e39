/* cli — what every `cowfs` command that talks to the daemon shares: finding
 * the store (--store, --mount, $COWFS_STORE, or the one cowfs mount in
 * /proc/mounts), one request and its reply over the control socket, and
 * small formatting helpers.  Messages go to stderr through util.h.
 */
#ifndef COW_CLI_H
#define COW_CLI_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct cli_target {
	const char *store, *mnt;
	bool json;      /* print the daemon's reply as it is */
};

/* The store to talk to, into OUT; -1 after a message. */
int find_store(const char *store, const char *mnt, char *out, size_t n);
/* Send one request to STORE's daemon; its reply, or NULL after a message. */
json_t *request(const char *store, json_t *req);
/* Find T's store, send REQ (taken), print the reply with --json or the
 * error if it is one; the reply, or NULL after a message. */
json_t *cli_call(const struct cli_target *t, json_t *req);
/* 0 if REPLY (taken, may be NULL) says ok, else 1: a command's exit status. */
int cli_status(json_t *reply);
/* If argv[*i] is --store S, --mount M or --json: take it (and its value)
 * into T and return 1; else 0. */
int cli_target_option(struct cli_target *t, int argc, char **argv, int *i);

/* 45s, 12m, 5h, 3d: the largest unit that leaves at least two of it. */
const char *cli_duration(long sec, char *buf, size_t n);
/* 512 B, 12.3 KiB, 4.5 MiB, 1.2 GiB */
const char *cli_bytes(uint64_t bytes, char *buf, size_t n);
const char *user_name(uint32_t uid, char *buf, size_t n);
/* "@UNIX", "YYYY-MM-DD[THH:MM[:SS]][Z]" (local time unless Z) -> unix time. */
int parse_when(const char *text, int64_t *ret);
#endif
